# REINFORCE++ (Hu 2025): advantage z-scored over the whole batch instead of each prompt's group;
# 8 rollouts x 32 prompts, so it differs from grpo_8rollouts.py in that one choice.
batch_size = 32
rollouts = 8
advantage = "batch"

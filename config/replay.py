# The paper's "replay" baseline: 1 rollout per prompt, advantage normalized by the prompt's last
# 8 rewards, remembered across steps and epochs; 32 prompts.
batch_size = 32
rollouts = 1
advantage = "replay"
replay_window = 8

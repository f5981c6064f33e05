# The paper's rollouts experiment: 32 prompts x 1 rollout per step, the minimalist baseline (the same run
# as minimal.py). Paper script: run_grpo_0032_1_qwen0.5b_gsm.sh, whose GRPO at n = 1 is the raw reward
# (a group of one has mean 0 and std 1): advantage = "none".
batch_size = 32
rollouts = 1
advantage = "none"

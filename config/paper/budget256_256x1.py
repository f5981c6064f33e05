# The paper's fixed-budget experiment: 256 responses per step as 256 prompts x 1 rollout, the minimalist
# baseline at 256 prompts. Paper script: run_grpo_0256_1_qwen0.5b_gsm.sh, whose GRPO at n = 1 is the raw
# reward (a group of one has mean 0 and std 1): advantage = "none".
batch_size = 256
rollouts = 1
advantage = "none"

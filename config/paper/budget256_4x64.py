# The paper's fixed-budget experiment: 256 responses per step as 4 prompts x 64 rollouts, GRPO advantage.
# Paper script: run_grpo_0004_64_qwen0.5b_gsm.sh.
batch_size = 4
rollouts = 64
advantage = "grpo"

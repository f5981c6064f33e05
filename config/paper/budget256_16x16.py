# The paper's fixed-budget experiment: 256 responses per step as 16 prompts x 16 rollouts, GRPO advantage.
# Paper script: run_grpo_0016_16_qwen0.5b_gsm.sh.
batch_size = 16
rollouts = 16
advantage = "grpo"

# The paper's fixed-budget experiment: 256 responses per step as 8 prompts x 32 rollouts, GRPO advantage.
# Paper script: run_grpo_0008_32_qwen0.5b_gsm.sh.
batch_size = 8
rollouts = 32
advantage = "grpo"

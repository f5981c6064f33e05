# The paper's fixed-budget experiment: 256 responses per step as 2 prompts x 128 rollouts, GRPO advantage.
# Paper script: run_grpo_0002_128_qwen0.5b_gsm.sh.
batch_size = 2
rollouts = 128
advantage = "grpo"

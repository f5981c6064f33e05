# The paper's fixed-budget experiment: 256 responses per step as 1 prompt x 256 rollouts, GRPO advantage.
# Paper script: run_grpo_0001_256_qwen0.5b_gsm.sh.
batch_size = 1
rollouts = 256
advantage = "grpo"

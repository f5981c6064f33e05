# The paper's fixed-budget experiment: 256 responses per step as 64 prompts x 4 rollouts, GRPO advantage.
# Paper script: run_grpo_0064_4_qwen0.5b_math.sh (named _math, but its TRAIN_DATA_DIR is GSM8K's).
batch_size = 64
rollouts = 4
advantage = "grpo"

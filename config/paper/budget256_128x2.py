# The paper's fixed-budget experiment: 256 responses per step as 128 prompts x 2 rollouts, GRPO advantage.
# Paper script: run_grpo_0128_2_qwen0.5b_math.sh (named _math, but its TRAIN_DATA_DIR is GSM8K's).
batch_size = 128
rollouts = 2
advantage = "grpo"

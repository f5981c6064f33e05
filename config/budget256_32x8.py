# The paper's fixed-budget experiment: 256 responses per step as 32 prompts x 8 rollouts, GRPO advantage.
# Paper script: run_grpo_0032_8_qwen0.5b_gsm.sh.
# The same run as rollouts_8.py (the paper's one script serves both grids).
batch_size = 32
rollouts = 8
advantage = "grpo"

# The paper's rollouts experiment: 32 prompts x 8 rollouts per step, GRPO advantage.
# Paper script: run_grpo_0032_8_qwen0.5b_gsm.sh.
# Also the 32 x 8 point of the fixed-budget and batch-size grids (the same script); grpo_8rollouts.py is the same run.
batch_size = 32
rollouts = 8
advantage = "grpo"

# The paper's batch-size experiment: 64 prompts x 8 rollouts per step, GRPO advantage
# (32 x 8 is ../grpo_8rollouts.py). Paper script: run_grpo_0064_8_qwen0.5b_gsm.sh.
batch_size = 64
rollouts = 8
advantage = "grpo"

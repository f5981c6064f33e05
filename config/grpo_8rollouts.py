# GRPO (Shao et al. 2024, DeepSeekMath): 8 rollouts per prompt, group z-scored advantage, 32 prompts.
# The same run as rollouts_8.py (the paper's run_grpo_0032_8_qwen0.5b_gsm.sh).
batch_size = 32
rollouts = 8
advantage = "grpo"

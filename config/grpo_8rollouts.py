# GRPO (Shao et al. 2024, DeepSeekMath): 8 rollouts per prompt, group z-scored advantage, 32 prompts.
batch_size = 32
rollouts = 8
advantage = "grpo"

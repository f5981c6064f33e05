# GRPO (Shao et al. 2024, DeepSeekMath): 8 rollouts per prompt, group z-scored advantage, 32 prompts.
# The paper's 32 x 8 run: the 8-rollout point of its rollouts grid, and the 32 x 8 point of its fixed-budget
# (256 responses) and batch-size grids (paper/). Paper script: run_grpo_0032_8_qwen0.5b_gsm.sh, e.g.
#   python train.py config/paper/qwen2.5-0.5b_gsm8k.py config/grpo_8rollouts.py
batch_size = 32
rollouts = 8
advantage = "grpo"

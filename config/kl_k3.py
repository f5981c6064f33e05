# KL regularization as in GRPO (Shao et al. 2024): k3 estimator of KL to the frozen initial policy, added to
# the loss with weight 0.04 (the paper's scripts use 0.001, in paper/paper.py and sweep_cpu.py); GRPO
# advantage, 8 rollouts x 32 prompts.
batch_size = 32
rollouts = 8
advantage = "grpo"
kl_coef = 0.04
kl_estimator = "k3"

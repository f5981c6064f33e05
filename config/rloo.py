# RLOO (Ahmadian et al. 2024, "Back to basics"): leave-one-out baseline; 8 rollouts x 32 prompts.
batch_size = 32
rollouts = 8
advantage = "rloo"

# The paper's fixed-budget experiment: 256 responses per step split as 64 prompts x 4 rollouts,
# everything else the minimalist baseline (raw reward, no advantage trick).
batch_size = 64
rollouts = 4
advantage = "none"

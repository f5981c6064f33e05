# The paper's fixed-budget experiment: 256 responses per step split as 4 prompts x 64 rollouts,
# everything else the minimalist baseline (raw reward, no advantage trick).
batch_size = 4
rollouts = 64
advantage = "none"

# The paper's fixed-budget experiment: 256 responses per step split as 16 prompts x 16 rollouts,
# everything else the minimalist baseline (raw reward, no advantage trick).
batch_size = 16
rollouts = 16
advantage = "none"

# The paper's fixed-budget experiment: 256 responses per step split as 128 prompts x 2 rollouts,
# everything else the minimalist baseline (raw reward, no advantage trick).
batch_size = 128
rollouts = 2
advantage = "none"

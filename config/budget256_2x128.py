# The paper's fixed-budget experiment: 256 responses per step split as 2 prompts x 128 rollouts,
# everything else the minimalist baseline (raw reward, no advantage trick).
batch_size = 2
rollouts = 128
advantage = "none"

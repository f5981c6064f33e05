# The paper's fixed-budget experiment: 256 responses per step split as 1 prompts x 256 rollouts,
# everything else the minimalist baseline (raw reward, no advantage trick).
batch_size = 1
rollouts = 256
advantage = "none"

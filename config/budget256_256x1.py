# The paper's fixed-budget experiment: 256 responses per step split as 256 prompts x 1 rollouts,
# everything else the minimalist baseline (raw reward, no advantage trick).
batch_size = 256
rollouts = 1
advantage = "none"

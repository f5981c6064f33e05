# The paper's fixed-budget experiment: 256 responses per step split as 32 prompts x 8 rollouts,
# everything else the minimalist baseline (raw reward, no advantage trick).
batch_size = 32
rollouts = 8
advantage = "none"

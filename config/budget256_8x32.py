# The paper's fixed-budget experiment: 256 responses per step split as 8 prompts x 32 rollouts,
# everything else the minimalist baseline (raw reward, no advantage trick).
batch_size = 8
rollouts = 32
advantage = "none"

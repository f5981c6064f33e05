# The paper's rollouts experiment: 64 rollout(s) per prompt at a fixed batch of 32 prompts,
# everything else the minimalist baseline (raw reward, no advantage trick).
batch_size = 32
rollouts = 64
advantage = "none"

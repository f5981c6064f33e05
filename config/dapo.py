# DAPO (Yu et al. 2025): clip-higher (0.2 / 0.28), token-mean loss, dynamic sampling (drop prompts
# whose 8 rewards are all equal, resample to refill), overlong responses masked; GRPO advantage.
batch_size = 32
rollouts = 8
advantage = "grpo"
clip_low = 0.2
clip_high = 0.28
loss_agg = "token_mean"
filter_zero_variance = True
resample_tries = 3
mask_truncated = True

# CISPO (MiniMax-M1, arXiv 2506.13585, section 3.1): the loss is -sg(clip(ratio, 1 - clip_low, 1 + clip_high))
# * adv * logp per token: the importance weight is clipped and detached, so every token keeps its gradient
# (PPO's clip zeroes the gradient of a clipped token). No lower bound, as in the report (clip_low = 1: the
# weight stays >= 0); the report tuned only the upper bound and does not publish it: 0.28 is DAPO's
# clip-higher and Trinity-RFT's CISPO default. Token-mean loss (the report's 1 / sum_i |o_i|). Each rollout
# batch is split into 4 minibatches (as gspo.py): at one update per step the weight is 1 and CISPO is REINFORCE.
# nanoRFT's extension, not a paper script: read it against sweep.py loss's ppo_4minibatches (same updates).
batch_size = 32
rollouts = 8
advantage = "grpo"
policy_loss = "cispo"
clip_low = 1.0
clip_high = 0.28
minibatches = 4
loss_agg = "token_mean"

# GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv 2507.18071): a response's importance
# ratio is its length-normalized sequence ratio exp(mean_t log(pi / pi_old)), clipped per sequence to
# [1 - 3e-4, 1 + 4e-4] (the paper's v2, section 5.1, as TRL's paper index reproduces it), and each rollout
# batch is split into 4 minibatches, so the later updates are off-policy: at one update per step the ratio
# is 1 and GSPO is just the policy gradient averaged per response. Its objective averages over responses
# (1/G sum_i): seq_mean_token_mean. The GSPO paper trains without KL; this keeps the base config's.
# nanoRFT's extension, not a paper script: read it against sweep.py loss's ppo_4minibatches (same updates).
batch_size = 32
rollouts = 8
advantage = "grpo"
ratio_level = "sequence"
clip_low = 3e-4
clip_high = 4e-4
minibatches = 4
loss_agg = "seq_mean_token_mean"

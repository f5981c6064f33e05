# Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-like training"): no std division in the
# advantage, and a constant length normalizer (max_new_tokens) in the loss; 8 rollouts x 32 prompts.
batch_size = 32
rollouts = 8
advantage = "dr_grpo"
loss_agg = "seq_sum_norm"

"""
Advantage estimators: what each response's tokens are pushed by. rewards (B, n) -> advantages (B, n).

Conventions, the same for every estimator:
- standard deviations are unbiased (ddof=1), as torch.std in TRL and verl;
- a group of one reward has no baseline: mean 0 and std 1, so the advantage is the reward itself;
- an all-equal group gets advantage exactly 0, also for non-integer rewards (float rounding of its mean
  would leave ~1e-17, which a std of 0 and eps would blow up to ~1e-11 times the reward scale).
"""
import torch

ESTIMATORS = ("none", "grpo", "dr_grpo", "rloo", "batch", "extra", "replay")


def group_stats(r):
    """Mean and unbiased std over the last dim of r (..., k); mean 0, std 1 where k == 1."""
    if r.size(-1) == 1:
        return torch.zeros_like(r[..., :1]), torch.ones_like(r[..., :1])
    return r.mean(-1, keepdim=True), r.std(-1, keepdim=True)


def all_equal(r):
    """(..., 1) bool: the group (last dim) holds more than one reward and all of them are the same."""
    return (r == r[..., :1]).all(-1, keepdim=True) & (r.size(-1) > 1)


def compute_advantages(rewards, estimator, n_train=None, ids=None, replay=None, window=8, eps=1e-6):
    """rewards: (B, n) float, one row per prompt. Returns (B, n_train) advantages of the trained samples.
    n_train: for "extra", how many leading columns are trained on (the rest only feed the baseline).
    ids, replay, window: for "replay", each row's prompt id and the {id: [rewards]} state it updates."""
    r = rewards.float()
    if estimator == "none":  # the minimalist bandit baseline: the raw outcome reward (REINFORCE)
        return r.clone()
    if estimator == "grpo":  # GRPO (Shao et al. 2024, DeepSeekMath): group z-score
        # EXERCISE grpo: return GRPO's advantages (B, n): each reward's z-score within its prompt's group, under
        # the module docstring's conventions (tests: tests/test_advantage.py -k "test_grpo or zero[grpo] or
        # baseline[grpo]")
        mean, std = group_stats(r)
        return torch.where(all_equal(r), 0.0, (r - mean) / (std + eps))
        # END EXERCISE
    if estimator == "dr_grpo":  # Dr. GRPO (Liu et al. 2025): centre on the group mean, no std division
        return torch.where(all_equal(r), 0.0, r - group_stats(r)[0])
    if estimator == "rloo":  # RLOO (Ahmadian et al. 2024): baseline = mean of the group's *other* rewards
        n = r.size(1)
        if n < 2:
            raise ValueError("rloo needs at least 2 rollouts per prompt")
        # EXERCISE rloo: return RLOO's advantages (B, n): each reward minus the mean of its group's other rewards,
        # exactly 0 for an all-equal group (all_equal: for float rewards the formula alone leaves ~1e-8, which
        # the tests reject) (tests: tests/test_advantage.py -k rloo)
        return torch.where(all_equal(r), 0.0, r - (r.sum(1, keepdim=True) - r) / (n - 1))
        # END EXERCISE
    if estimator == "batch":  # REINFORCE++ (Hu 2025): z-score against the whole batch, not the group
        mean, std = group_stats(r.reshape(1, -1))
        return torch.where(all_equal(r.reshape(1, -1)), 0.0, (r - mean) / (std + eps))
    if estimator == "extra":  # the paper's extra sampling: GRPO over all n samples, of which n_train are trained
        return compute_advantages(r, "grpo", eps=eps)[:, :n_train]
    if estimator == "replay":  # the paper's replay: baseline from each prompt's last `window` rewards, across steps
        out = torch.empty_like(r)
        for i, pid in enumerate(ids):
            past = (replay.get(pid, []) + r[i].tolist())[-window:]
            replay[pid] = past
            window_rewards = torch.tensor(past, dtype=r.dtype)
            mean, std = group_stats(window_rewards)
            out[i] = torch.where(all_equal(window_rewards), 0.0, (r[i] - mean) / (std + eps))
        return out
    raise ValueError(f"unknown advantage estimator {estimator!r}; expected one of {ESTIMATORS}")

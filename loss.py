"""
The update's design choices as pure functions of per-token tensors: the policy-gradient loss
(REINFORCE, PPO's clip, GSPO, CISPO), how a batch's token losses become one number (aggregate),
the KL penalty to the frozen initial policy, and the sampler/trainer gap: how far the sampler's log-probs are
from the trainer's recompute of the same tokens (mismatch) and the weights that correct for it (is_weights).
Shapes: N responses, T positions; `mask` (N, T) is 1.0
on the response tokens that are trained and 0.0 elsewhere. Every hyperparameter is an argument.

Left out on purpose: a value function (critic/GAE: the outcome reward is the whole signal, as in GRPO
and the paper), and reward models (rewards are verifiable: reward.py).
"""
import math

import torch

POLICY_LOSSES = ("ppo", "cispo")
RATIO_LEVELS = ("token", "sequence")
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_sum_norm")
KL_ESTIMATORS = ("k1", "k2", "k3")
IS_CORRECTIONS = ("none", "tis", "mis", "m2po")
MISMATCH_BAND = 1.1  # a token ratio outside [1/1.1, 1.1] counts in mismatch_frac (TRL issue 6789's measure)


def policy_gradient(logprobs, old_logprobs, advantages, mask, kind="ppo", ratio_level="token", clip_low=0.2,
                    clip_high=0.2, dual_clip=0.0):
    """Per-token loss (N, T) whose gradient is the policy gradient, and stats (sums over `mask`).
    logprobs (N, T): the policy being trained, with a graph; old_logprobs (N, T): the policy that sampled the
    responses (train.py passes pi_old, the trainer's recompute before the update, as verl), or None when it is
    this very policy (one epoch, one minibatch: the paper's setting);
    advantages (N, T): one value per response, repeated over its tokens."""
    # an inf or NaN where mask is 0 (padding, an untrained response) must reach neither the loss nor, through
    # exp and the ratio's chain rule (0 * inf), the gradient
    logprobs = torch.where(mask > 0, logprobs, 0.0)
    if old_logprobs is None:
        # REINFORCE (Williams 1992): the gradient of -A * log pi(y) is the policy gradient. The minimalist
        # baseline is exactly this with A = the raw reward. PPO, GSPO and CISPO all reduce to it on-policy.
        # EXERCISE reinforce: return the per-token REINFORCE loss (N, T) and dict(clipfrac=0.0)
        # (tests: tests/test_loss.py -k test_reinforce)
        return -advantages * logprobs, dict(clipfrac=0.0)
        # END EXERCISE

    # Off-policy (ppo_epochs > 1 or minibatches > 1): all but the first minibatch were sampled by an older
    # policy, so each token is reweighted by the importance ratio pi / pi_old, and clipped so the update stays
    # near the sampler.
    log_ratio = logprobs - torch.where(mask > 0, old_logprobs, 0.0)  # (N, T)
    if ratio_level == "sequence":  # GSPO (Zheng et al. 2025): one ratio per response, the geometric mean of its
        # tokens'; its value is the sequence's, its gradient each token's own (the GSPO-token form, as verl)
        seq = (log_ratio * mask).sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)  # (N, 1)
        log_ratio = seq.detach() + logprobs - logprobs.detach()
    ratio = torch.exp(log_ratio)  # (N, T)
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high)
    if kind == "cispo":  # CISPO (MiniMax-M1, Chen et al. 2025): clip the importance weight, not the objective,
        # and stop its gradient, so no token loses its gradient (PPO zeroes the clipped ones)
        clipfrac = ((clipped != ratio).float() * mask).sum()  # 0-dim, on the device: no host sync here
        return -clipped.detach() * advantages * logprobs, dict(clipfrac=clipfrac)
    # EXERCISE ppo_clip: return PPO's clipped loss (N, T) from ratio and clipped, bounded by dual-clip when
    # dual_clip > 0, and dict(clipfrac=number of masked tokens the clip decided) (tests: tests/test_loss.py -k test_ppo)
    surrogate = -advantages * ratio  # PPO (Schulman et al. 2017): the pessimistic max of the two surrogates
    surrogate_clipped = -advantages * clipped
    loss = torch.maximum(surrogate, surrogate_clipped)
    if dual_clip > 0:  # dual-clip PPO (Ye et al. 2020): bound the loss of negative advantages at -c * A
        loss = torch.where(advantages < 0, torch.minimum(loss, -dual_clip * advantages), loss)
    clipfrac = ((surrogate_clipped > surrogate).float() * mask).sum()  # 0-dim, on the device
    return loss, dict(clipfrac=clipfrac)
    # END EXERCISE


def aggregate(x, mask, loss_agg, n_tokens, n_seqs, max_new_tokens):
    """Per-token values x (N, T) over the masked tokens -> one scalar, normalized as loss_agg says.
    n_tokens, n_seqs are the totals of the whole minibatch (all micro-batches, all ranks), so micro-batch
    pieces add up to the minibatch's value. Masked-out positions are dropped with where, not multiplied away,
    so an inf or NaN there cannot reach the loss."""
    x = torch.where(mask > 0, x, 0.0)
    if loss_agg == "token_mean":  # every token weighs the same (DAPO; verl's token-mean, the paper's)
        return x.sum() / n_tokens
    # EXERCISE aggregate: the sequence-level aggregations seq_mean_token_mean (original GRPO) and seq_sum_norm
    # (Dr. GRPO) (tests: tests/test_loss.py -k "aggregations and seq_")
    if loss_agg == "seq_mean_token_mean":  # every response weighs the same (original GRPO)
        return (x.sum(1) / mask.sum(1).clamp(min=1)).sum() / n_seqs
    if loss_agg == "seq_sum_norm":  # a constant normalizer, so no length bias (Dr. GRPO)
        return x.sum() / (n_seqs * max_new_tokens)
    # END EXERCISE
    raise ValueError(f"unknown loss_agg {loss_agg!r}; expected one of {AGGREGATIONS}")


def kl_penalty(logprobs, ref_logprobs, estimator="k3", clamp=0.0):
    """Per-token estimate (N, T) of KL(policy || reference) from the sampled tokens (Schulman 2020,
    "Approximating KL divergence"). clamp > 0 bounds each token's value to [-clamp, clamp], as verl's
    low_var_kl does (10), so one token the reference finds absurd cannot dominate the loss."""
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":  # unbiased, can be negative
        kl = log_ratio
    elif estimator == "k2":  # biased, low variance
        kl = 0.5 * log_ratio ** 2
    elif estimator == "k3":  # unbiased and >= 0 (GRPO; verl's low_var_kl): r - 1 - log r with r = ref / policy
        # EXERCISE k3: kl (N, T), Schulman's k3 estimate of KL(policy || reference) at each token, from log_ratio
        # (tests: tests/test_loss.py -k "kl_estimators or k3")
        kl = torch.exp(-log_ratio) - 1 + log_ratio
        # END EXERCISE
    else:
        raise ValueError(f"unknown kl_estimator {estimator!r}; expected one of {KL_ESTIMATORS}")
    return kl.clamp(-clamp, clamp) if clamp > 0 else kl


# -----------------------------------------------------------------------------
# the sampler/trainer gap: the sampler (a KV-cached decode, maybe in another precision) and the trainer (one
# packed forward) do not compute the same probabilities, so "on-policy" responses are slightly off-policy; with
# staleness (machinery/stale.py) the sampler is also an older policy, and the gap is that of K steps


def mismatch(trainer_logprobs, sampler_logprobs, mask):
    """How far the sampler's log-probs are from the trainer's recompute of the same tokens, before any optimizer
    step. trainer_logprobs, sampler_logprobs, mask: (N, T). Returns sums over the masked tokens, so that
    micro-batches and ranks add up: kl (Schulman's k3 estimate of KL(sampler || trainer) per token, from tokens the
    sampler drew: r - 1 - log r with r = pi_trainer / pi_sampler), out (tokens whose r is outside
    [1/MISMATCH_BAND, MISMATCH_BAND]), and max (the largest |sum of a response's token log-ratios|: its
    sequence-level log-ratio). All three are exactly 0 when the two compute the same numbers."""
    log_ratio = torch.where(mask > 0, trainer_logprobs - sampler_logprobs, 0.0)  # (N, T) log r
    kl = torch.expm1(log_ratio) - log_ratio  # (N, T), >= 0, 0 where masked; expm1: exp(x) - 1 cancels near 0
    out = (log_ratio.abs() > math.log(MISMATCH_BAND)) & (mask > 0)
    return dict(kl=kl.sum().item(), out=out.sum().item(), max=log_ratio.sum(1).abs().max().item() if len(mask) else 0.0)


def is_weights(trainer_logprobs, sampler_logprobs, mask, kind="none", cap=2.0):
    """Detached weights (N, T) that multiply each token's policy-gradient loss to correct for the sampler not
    being the trainer. trainer_logprobs: the trainer's log-probs of the sampled tokens before the update's first
    optimizer step (pi_old); sampler_logprobs: the sampler's (pi_sampler, the behaviour policy: with staleness
    an older policy); mask (N, T); cap: C.
      none  w = 1: the responses are treated as the trainer's own (the paper's verl runs)
      tis   w_t = min(pi_old / pi_sampler, C) per token: truncated importance sampling (Yao et al. 2025, "Your
            efficient RL framework secretly brings you off-policy RL training"; oat's tis_c, verl's rollout_is
            at token level, TRL's vllm_importance_sampling_correction with its cap)
      mis   w = 1 for a response whose geometric-mean ratio exp(mean_t log(pi_old / pi_sampler)) lies in
            [1/C, C], else 0 for all its tokens: masked importance sampling, no gradient from responses the
            trainer would not have sampled (verl's sequence-level rejection, IcePop's band, DeepSeek-V3.2's and
            TRL's off-policy masking)
      m2po  w_t = pi_old / pi_sampler for a token whose squared log-ratio is <= cap (for m2po, the cutoff
            m2po_cutoff finds), else 0: M2PO's second-moment mask (Zheng et al. 2025, arXiv 2510.01161), made
            for stale samplers: only the few tokens that push the step's mean (log ratio)^2 over its threshold
            lose their gradient
    Composition with PPO (verl, TRL): the weight multiplies the clipped loss, whose ratio is against pi_old,
        L_t = w_t * max(-A_t r_t, -A_t clip(r_t, 1 - eps_low, 1 + eps_high)),  r_t = pi_theta / pi_old,
    so the clip bounds the policy's own move and w the sampler's error. On-policy (one epoch, one minibatch)
    pi_old = pi_theta and this is -w_t * A_t * log pi_theta: REINFORCE reweighted."""
    if kind == "none":
        return torch.ones_like(mask, dtype=torch.float32)
    log_ratio = torch.where(mask > 0, trainer_logprobs - sampler_logprobs, 0.0).detach()  # (N, T)
    # EXERCISE tis: weights (N, T) for kind "tis", each token's truncated importance weight min(pi_old /
    # pi_sampler, cap) from log_ratio (tests: tests/test_loss.py -k "tis")
    if kind == "tis":
        return torch.exp(log_ratio).clamp(max=cap)
    # END EXERCISE
    if kind == "mis":
        seq = log_ratio.sum(1, keepdim=True) / mask.sum(1, keepdim=True).clamp(min=1)  # (N, 1) log geometric mean
        return (seq.abs() <= math.log(cap)).float().expand_as(log_ratio)
    if kind == "m2po":
        return torch.where(log_ratio.square() <= cap, torch.exp(log_ratio), 0.0)
    raise ValueError(f"unknown is_correction {kind!r}; expected one of {IS_CORRECTIONS}")


def m2po_cutoff(squares, threshold):
    """M2PO's mask as a cutoff (Zheng et al. 2025, arXiv 2510.01161; AReaL's m2_threshold): the tokens with
    the largest squared log-ratio (log pi_old / pi_sampler)^2 are masked until the mean of the rest, the
    step's second moment M2, is below `threshold`. Unlike PPO's clip, which cuts every token past a fixed
    ratio, it keeps all of a step whose M2 is small. squares (n,): the values of all the step's trained tokens.
    Returns the largest value kept (a token is kept if its value is <= it: equal values are kept or masked
    together), inf when nothing is masked, -1.0 when everything is."""
    values = squares.double().sort().values  # (n,) ascending: the mean of the i smallest grows with i
    means = values.cumsum(0) / torch.arange(1, len(values) + 1, dtype=torch.float64)
    last = torch.ones_like(values, dtype=torch.bool)
    last[:-1] = values[1:] > values[:-1]  # the last of equal values: a cut can fall only after it
    cuts = ((means < threshold) & last).nonzero().flatten()  # where the kept tokens may end
    if len(cuts) == 0:
        return math.inf if len(values) == 0 else -1.0
    return math.inf if cuts[-1] == len(values) - 1 else values[cuts[-1]].item()

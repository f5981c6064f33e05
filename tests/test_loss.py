"""The update's design choices (loss.py) on crafted inputs with hand-computed values."""
import math

import pytest
import torch

from loss import aggregate, is_weights, kl_penalty, mismatch, policy_gradient

# hand-computed values are met to pytest.approx's relative 1e-6 (about 17 U32) or torch.testing.assert_close's
# float32 defaults (rtol 1.3e-6): each is a few float32 operations on exact inputs, a few U32 apart

# a crafted batch: 2 responses, 4 positions; response 0 has 3 trained tokens, response 1 has 1
X = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
M = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("agg, want", [
    ("token_mean", (1 + 2 + 3 + 4) / 4),  # every token counts once
    ("seq_mean_token_mean", ((1 + 2 + 3) / 3 + 4 / 1) / 2),  # each response's mean, then their mean
    ("seq_sum_norm", ((1 + 2 + 3) + 4) / (2 * 8)),  # sums over a constant max_new_tokens=8 per response
])
def test_loss_aggregations(agg, want):
    assert aggregate(X, M, agg, n_tokens=4, n_seqs=2, max_new_tokens=8).item() == pytest.approx(want)
    # micro-batch pieces add up to the whole, since normalizers are the minibatch's totals
    parts = aggregate(X[:1], M[:1], agg, 4, 2, 8) + aggregate(X[1:], M[1:], agg, 4, 2, 8)
    assert parts.item() == pytest.approx(want)


def test_aggregations_seq_mean_token_mean_of_a_response_with_no_trained_token_is_zero_not_nan():
    """A response with no trained token (distributed.py's padding row) adds 0, not its 0/0 token mean, and
    still counts among the n_seqs responses."""
    mask = M.clone()
    mask[1] = 0.0
    assert aggregate(X, mask, "seq_mean_token_mean", n_tokens=3, n_seqs=2, max_new_tokens=8).item() == \
        pytest.approx((1 + 2 + 3) / 3 / 2)


def test_masked_positions_cannot_poison_the_loss():
    x = X.clone()
    x[0, 3], x[1, 2] = float("inf"), float("nan")  # e.g. log-probs of padding
    for agg in ("token_mean", "seq_mean_token_mean", "seq_sum_norm"):
        assert math.isfinite(aggregate(x, M, agg, 4, 2, 8).item()), agg


def test_reinforce_on_policy_is_minus_advantage_times_logprob():
    logprobs = torch.log(torch.tensor([[0.5, 0.25, 0.8, 1.0], [0.1, 1.0, 1.0, 1.0]])).requires_grad_()
    adv = torch.tensor([[2.0], [-1.0]]).expand(2, 4)
    per_token, st = policy_gradient(logprobs, None, adv, M)
    torch.testing.assert_close(per_token, -adv * logprobs)
    aggregate(per_token, M, "token_mean", 4, 2, 8).backward()
    torch.testing.assert_close(logprobs.grad, -adv * M / 4)  # the policy gradient, token-mean
    assert st["clipfrac"] == 0


def test_ppo_at_ratio_one_has_the_reinforce_gradient():
    logprobs = torch.log(torch.rand(2, 4, generator=torch.Generator().manual_seed(0))).requires_grad_()
    adv = torch.tensor([[1.0], [-2.0]]).expand(2, 4)
    ppo, st = policy_gradient(logprobs, logprobs.detach(), adv, M)
    (grad_ppo,) = torch.autograd.grad(aggregate(ppo, M, "token_mean", 4, 2, 8), logprobs)
    reinforce, _ = policy_gradient(logprobs, None, adv, M)
    (grad_reinforce,) = torch.autograd.grad(aggregate(reinforce, M, "token_mean", 4, 2, 8), logprobs)
    torch.testing.assert_close(grad_ppo, grad_reinforce)
    assert st["clipfrac"] == 0


def test_ppo_clipped_tokens_get_zero_gradient():
    old = torch.zeros(1, 5)
    # ratios 1.5 (A>0: above 1.28, clipped), 0.5 (A<0: below 0.8, clipped), 1.1 (inside), 1.5 with A<0
    # (not clipped: pessimistic side), 5.0 with A<0 (dual-clip bounds the loss at -3A: constant)
    logprobs = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.5, 5.0]])).requires_grad_()
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, -1.0]])
    m = torch.ones(1, 5)
    per_token, st = policy_gradient(logprobs, old, adv, m, clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    loss = aggregate(per_token, m, "token_mean", 5, 1, 8)
    loss.backward()
    g = logprobs.grad[0]
    assert g[0] == 0 and g[1] == 0 and g[4] == 0
    assert g[2] != 0 and g[3] != 0
    assert st["clipfrac"] == 2  # tokens 0 and 1
    assert loss.item() == pytest.approx((-1.28 + 0.8 - 1.1 + 1.5 + 3.0) / 5)


def test_gspo_ratio_is_the_geometric_mean_over_the_response_and_clips_it_whole():
    # response 0: token log-ratios log 2 and log 0.5 -> geometric mean 1 (inside the clip) though each token's
    # own ratio is far outside; response 1: one token at ratio 1.5 -> clipped at 1 + 0.2 for A > 0
    old = torch.zeros(2, 2)
    logprobs = torch.log(torch.tensor([[2.0, 0.5], [1.5, 1.0]])).requires_grad_()
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    adv = torch.tensor([[1.0], [1.0]]).expand(2, 2)
    per_token, st = policy_gradient(logprobs, old, adv, mask, ratio_level="sequence")
    torch.testing.assert_close(per_token[0], torch.tensor([-1.0, -1.0]))  # -A * s, s = 1 for both tokens
    assert per_token[1, 0].item() == pytest.approx(-1.2)
    assert st["clipfrac"] == 1  # response 1's token; response 0's are not clipped, unlike token-level PPO
    aggregate(per_token, mask, "seq_mean_token_mean", 3, 2, 8).backward()
    # GSPO's gradient: -A * s * mean_t grad log pi for response 0 (each token 1/2 of it), 0 for the clipped one
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-0.25, -0.25], [0.0, 0.0]]))
    _, token_level = policy_gradient(logprobs, old, adv, mask)
    assert token_level["clipfrac"] == 2  # token-level PPO clips the ratio-2 token (ratio 0.5 with A > 0 is not)


def test_cispo_clips_the_weight_but_keeps_every_gradient():
    old = torch.zeros(1, 3)
    # ratios 2.0 (weight clipped to 1.28), 1.0, 0.1 (no lower bound with clip_low=1: weight 0.1)
    logprobs = torch.log(torch.tensor([[2.0, 1.0, 0.1]])).requires_grad_()
    adv = torch.tensor([[1.0, -1.0, 1.0]])
    m = torch.ones(1, 3)
    per_token, st = policy_gradient(logprobs, old, adv, m, kind="cispo", clip_low=1.0, clip_high=0.28)
    torch.testing.assert_close(per_token.detach(), torch.tensor([[-1.28 * math.log(2.0), 0.0, -0.1 * math.log(0.1)]]))
    per_token.sum().backward()
    # the weight is detached: d/dlogp (-w * A * logp) = -w * A, nonzero even for the clipped token (PPO: 0)
    torch.testing.assert_close(logprobs.grad, torch.tensor([[-1.28, 1.0, -0.1]]))
    assert st["clipfrac"] == 1


def test_kl_estimators_on_known_distributions():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.5, 0.3])
    exact = (p * (p / q).log()).sum().item()
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    lp, lq = p.log()[x], q.log()[x]
    for est in ("k1", "k3"):  # both unbiased for KL(p || q) when x ~ p
        values = kl_penalty(lp, lq, est)
        # a seeded sample's mean: within 6 standard errors (k1's is 1.6e-3, k3's 2e-4)
        assert values.mean().item() == pytest.approx(exact, abs=6 * values.std().item() / math.sqrt(len(x))), est
    assert (kl_penalty(lp, lq, "k3") >= 0).all()
    torch.testing.assert_close(kl_penalty(lp, lq, "k2"), 0.5 * (lp - lq) ** 2)
    assert kl_penalty(lp, lp, "k3").abs().max() == 0


def test_k3_by_hand_and_the_clamp():
    # policy log-prob 0, reference log-prob -1: log r = 1, k3 = e^-1 - 1 + 1 = e^-1
    assert kl_penalty(torch.tensor([0.0]), torch.tensor([-1.0]), "k3").item() == pytest.approx(math.exp(-1))
    # the reference finds the token 15 nats less likely... the other way round: k3 = e^15 - 1 - 15 ~ 3.3e6
    big = kl_penalty(torch.tensor([-15.0]), torch.tensor([0.0]), "k3")
    assert big.item() == pytest.approx(math.exp(15) - 16)
    assert kl_penalty(torch.tensor([-15.0]), torch.tensor([0.0]), "k3", clamp=10.0).item() == 10.0  # verl's bound
    assert kl_penalty(torch.tensor([3.0]), torch.tensor([0.0]), "k1", clamp=2.0).item() == 2.0
    assert kl_penalty(torch.tensor([-3.0]), torch.tensor([0.0]), "k1", clamp=2.0).item() == -2.0


@pytest.mark.parametrize("kind, level", [("ppo", "token"), ("ppo", "sequence"), ("cispo", "token")])
@pytest.mark.parametrize("bad", [float("-inf"), float("nan")])
def test_masked_positions_reach_neither_the_loss_nor_the_gradient(kind, level, bad):
    logprobs = torch.log(torch.tensor([[0.5, 0.25, 0.8, 1.0], [0.1, 1.0, 1.0, 1.0]]))
    old = logprobs.clone()
    logprobs[0, 3], old[1, 2] = bad, bad  # masked positions (M is 0 there)
    x = logprobs.requires_grad_()
    pg, _ = policy_gradient(x, old, torch.tensor([[2.0], [-1.0]]).expand(2, 4), M, kind=kind, ratio_level=level)
    loss = aggregate(pg, M, "token_mean", 4, 2, 8)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


# -----------------------------------------------------------------------------
# the sampler/trainer gap: its measure and its corrections (TIS, MIS)

def test_mismatch_by_hand():
    """k3 KL(sampler || trainer) per token, the tokens whose ratio is outside [1/1.1, 1.1], the largest sequence
    log-ratio; the padding position (ratio 100) counts nowhere."""
    sampler = torch.zeros(2, 3)
    trainer = torch.log(torch.tensor([[1.2, 1.0, 0.5], [1.05, 100.0, 1.0]]))
    mask = torch.tensor([[True, True, True], [True, False, False]])
    m = mismatch(trainer, sampler, mask)
    k3 = lambda r: r - 1 - math.log(r)  # Schulman's k3 with r = pi_trainer / pi_sampler
    assert m["kl"] == pytest.approx(k3(1.2) + k3(1.0) + k3(0.5) + k3(1.05), rel=1e-6)
    assert m["out"] == 2  # 1.2 and 0.5; 1.05 is inside the band
    assert m["max"] == pytest.approx(abs(math.log(1.2 * 0.5)), rel=1e-6)  # |log 0.6| > |log 1.05|


def test_mismatch_is_exactly_zero_when_sampler_and_trainer_agree():
    lp = torch.log(torch.rand(3, 5, generator=torch.Generator().manual_seed(0)))
    assert mismatch(lp, lp.clone(), torch.ones(3, 5, dtype=torch.bool)) == dict(kl=0.0, out=0, max=0.0)


def test_tis_weight_is_the_ratio_truncated_at_the_cap_and_detached():
    sampler = torch.zeros(1, 4)
    trainer = torch.log(torch.tensor([[2.0, 0.5, 4.0, 9.0]])).requires_grad_()
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = is_weights(trainer, sampler, mask, kind="tis", cap=3.0)
    torch.testing.assert_close(w[0, :3], torch.tensor([2.0, 0.5, 3.0]))  # min(pi_trainer / pi_sampler, C)
    assert not w.requires_grad  # a weight, not a term the gradient flows through
    torch.testing.assert_close(is_weights(trainer, sampler, mask, kind="none"), torch.ones(1, 4))


def test_tis_truncates_from_above_only_so_a_ratio_below_one_over_the_cap_stays():
    """Only a large ratio makes the weight's variance blow up; a small one just shrinks its token's step, so TIS
    leaves it as it is: 0.1 stays 0.1 with cap 2 (a two-sided clamp(1 / cap, cap) would raise it to 0.5)."""
    trainer = torch.log(torch.tensor([[0.1, 0.25, 1.0, 8.0]]))
    w = is_weights(trainer, torch.zeros(1, 4), torch.ones(1, 4), kind="tis", cap=2.0)
    torch.testing.assert_close(w, torch.tensor([[0.1, 0.25, 1.0, 2.0]]))


def test_mis_drops_whole_responses_whose_geometric_mean_ratio_is_outside_the_band():
    # response 0: ratios 2 and 0.5 -> geometric mean 1: kept, though each token is outside [1/1.5, 1.5];
    # response 1: ratios 2 and 2 -> 2 > 1.5: dropped; response 2: one token at 1/1.6 < 1/1.5: dropped;
    # response 3: 1.4 and 1.0 (and a padding position at 50) -> sqrt(1.4) = 1.18: kept
    sampler = torch.zeros(4, 3)
    trainer = torch.log(torch.tensor([[2.0, 0.5, 1.0], [2.0, 2.0, 1.0], [1 / 1.6, 1.0, 1.0], [1.4, 1.0, 50.0]]))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]])
    w = is_weights(trainer, sampler, mask, kind="mis", cap=1.5)
    torch.testing.assert_close(w, torch.tensor([[1.0], [0.0], [0.0], [1.0]]).expand(4, 3))


def test_tis_on_policy_is_reinforce_reweighted_and_multiplies_the_clipped_ppo_loss():
    """On-policy pi_old is the policy itself: w * (-A log pi) has gradient -w A / n_tokens. Off-policy the weight
    multiplies PPO's clipped loss, whose ratio is against pi_old (verl, TRL): a token PPO clips stays clipped."""
    sampler = torch.log(torch.tensor([[0.5, 0.4, 0.3]]))
    logprobs = torch.log(torch.tensor([[0.6, 0.2, 0.3]])).requires_grad_()
    mask, adv = torch.ones(1, 3), torch.tensor([[1.0, 1.0, -1.0]])
    w = is_weights(logprobs.detach(), sampler, mask, kind="tis", cap=2.0)  # [1.2, 0.5, 1.0]
    pg, _ = policy_gradient(logprobs, None, adv, mask)
    aggregate(w * pg, mask, "token_mean", 3, 1, 8).backward()
    torch.testing.assert_close(logprobs.grad, -torch.tensor([[1.2, 0.5, 1.0]]) * adv / 3)
    pi_old = torch.log(torch.tensor([[0.4, 0.2, 0.3]]))  # token 0's ratio to pi_old is 1.5: clipped at 1.2 (A > 0)
    pg, st = policy_gradient(logprobs, pi_old, adv, mask)
    w = is_weights(pi_old, sampler, mask, kind="tis", cap=2.0)  # [0.8, 0.5, 1.0]
    torch.testing.assert_close(w * pg, torch.tensor([[-0.8 * 1.2, -0.5 * 1.0, 1.0 * 1.0]]))
    assert st["clipfrac"] == 1

"""Advantage estimators on hand-computed examples, and their invariants."""
import math

import pytest
import torch

import advantage
from conftest import U32

# hand-computed values are met to torch.testing.assert_close's float32 defaults (rtol 1.3e-6, about 22 U32):
# each is a few float32 operations on exact rewards, a few U32 apart
R = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]])


def test_none_returns_rewards_unchanged():
    assert torch.equal(advantage.compute_advantages(R, "none"), R)


def test_grpo_hand_computed():
    a = advantage.compute_advantages(R, "grpo", eps=0.0 + 1e-12)
    s = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]: sqrt(4 * 0.25 / 3)
    torch.testing.assert_close(a[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / s)
    s1 = math.sqrt(0.75 / 3)  # [1, 1, 1, 0]: mean 0.75, squared deviations 3 * 0.0625 + 0.5625
    torch.testing.assert_close(a[1], torch.tensor([0.25, 0.25, 0.25, -0.75]) / s1)


def test_grpo_zero_mean_unit_std_and_all_equal_group_is_zero():
    a = advantage.compute_advantages(R, "grpo")
    # rounding noise, bounded absolutely: n = 4 terms, each rounded twice (2 U32 of its size) and summed in
    # float32 ((n - 1) U32 of their total, Higham 2002, section 4.2), then divided by n
    n, size = 4, a.abs().max().item()
    torch.testing.assert_close(a[:2].mean(1), torch.zeros(2), atol=(n + 1) * U32 * size, rtol=0)
    # the std is 1 less eps's share, std / (std + eps) with the default eps = 1e-6, to the same rounding
    s = R[:2].std(1)
    torch.testing.assert_close(a[:2].std(1), s / (s + 1e-6), atol=4 * n * U32, rtol=0)
    assert torch.equal(a[2], torch.zeros(4))
    assert torch.isfinite(advantage.compute_advantages(torch.ones(2, 3), "grpo")).all()


def test_dr_grpo_and_rloo_sum_to_zero_in_a_group():
    for est in ("dr_grpo", "rloo"):
        a = advantage.compute_advantages(R, est)
        # rounding noise, bounded absolutely: 4 terms, each rounded twice, summed in float32 (as above)
        n, size = 4, a.abs().max().item()
        torch.testing.assert_close(a.sum(1), torch.zeros(3), atol=n * (n + 1) * U32 * size, rtol=0)
    torch.testing.assert_close(advantage.compute_advantages(R, "dr_grpo")[1], torch.tensor([0.25, 0.25, 0.25, -0.75]))


def test_rloo_hand_computed():
    # [1, 1, 1, 0]: each 1 sees others' mean 2/3; the 0 sees 1
    torch.testing.assert_close(advantage.compute_advantages(R, "rloo")[1], torch.tensor([1 / 3, 1 / 3, 1 / 3, -1.0]))
    with pytest.raises(ValueError):
        advantage.compute_advantages(torch.ones(3, 1), "rloo")


def test_batch_normalizes_over_the_whole_batch():
    a = advantage.compute_advantages(R, "batch", eps=1e-12)
    flat = R.flatten()
    torch.testing.assert_close(a.flatten(), (flat - flat.mean()) / flat.std())
    assert a[2].abs().sum() > 0  # unlike grpo, an all-zero group still gets a (negative) signal


def test_extra_uses_extra_samples_only_for_the_baseline():
    r = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]])  # first column trained, 3 extra
    a = advantage.compute_advantages(r, "extra", n_train=1, eps=1e-12)
    assert a.shape == (2, 1)
    torch.testing.assert_close(a[:, 0], torch.tensor([0.75 / 0.5, -0.75 / 0.5]))  # std of [1,0,0,0] is 0.5


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo"])
def test_group_of_one_has_no_baseline(estimator):
    r = torch.tensor([[1.0], [0.0]])  # one response per prompt: mean 0 and std 1 (the module's conventions)
    torch.testing.assert_close(advantage.compute_advantages(r, estimator), r)  # so the advantage is the reward


def test_replay_window_across_steps():
    state = {}
    r1 = advantage.compute_advantages(torch.tensor([[1.0], [0.0]]), "replay", ids=[7, 9], replay=state, window=3)
    torch.testing.assert_close(r1, torch.tensor([[1.0], [0.0]]))  # one reward in the window: mean 0, std 1
    r2 = advantage.compute_advantages(torch.tensor([[0.0]]), "replay", ids=[7], replay=state, window=3, eps=1e-12)
    # window of prompt 7 = [1, 0]: mean 0.5, std sqrt(0.5)
    torch.testing.assert_close(r2, torch.tensor([[-0.5 / math.sqrt(0.5)]]))
    for x in (1.0, 1.0, 1.0):
        advantage.compute_advantages(torch.tensor([[x]]), "replay", ids=[7], replay=state, window=3)
    assert state[7] == [1.0, 1.0, 1.0] and state[9] == [0.0]  # slides: only the last 3 kept


def test_unknown_estimator():
    with pytest.raises(ValueError):
        advantage.compute_advantages(R, "ppo")


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo", "batch", "extra"])
def test_an_all_equal_group_of_float_rewards_gets_exactly_zero(estimator):
    r = torch.full((2, 7), 0.9) + torch.tensor([[0.0], [1.2]])  # e.g. rewards shifted by a KL penalty
    a = advantage.compute_advantages(r if estimator != "batch" else r[:1], estimator, n_train=1)
    assert torch.equal(a, torch.zeros_like(a))


def test_replay_window_of_equal_float_rewards_is_exactly_zero():
    state = {3: [0.9] * 6}
    a = advantage.compute_advantages(torch.tensor([[0.9]]), "replay", ids=[3], replay=state, window=8)
    assert torch.equal(a, torch.zeros(1, 1))

"""Tests of the exercises that no other test file holds: the bandit's coverage and regret (exercise
coverage_regret's own test) and the baseline step every student copy must keep running. The worksheet's tooling
(markers, strip, check, the planted wrong answers) is tested in tests/tools/test_worksheet*.py."""
import math

import torch

import train
from configurator import configure


def configure_train(monkeypatch, **overrides):
    """train.py's knobs: the defaults with these overrides, restored after the test."""
    for k, v in configure(train.DEFAULTS, [f"--{k}={v}" for k, v in overrides.items()]).items():
        monkeypatch.setitem(train.__dict__, k, v)


def test_the_baseline_trains_a_step(arith, monkeypatch):
    """The default design (raw reward, REINFORCE, token mean) samples, scores and updates: what a student copy
    must keep doing while an exercise outside the baseline is unsolved."""
    model, tok = arith
    problems = train.data.load_split("arith", "train")
    configure_train(monkeypatch, batch_size=8)
    rows, metrics, _ = train.sample_step(model, None, tok, problems, 0, dict(replay={}, solved=[], regret=0))
    before = [p.detach().clone() for p in model.parameters()]
    stats = train.update(model, None, torch.optim.SGD(model.parameters(), lr=0.1), train.ddp.select_rows([rows], 8))
    assert 0 < metrics["reward"] < 1 and math.isfinite(stats["loss"]) and stats["skipped"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_bandit_coverage_and_regret_count_solved_prompts_and_wrong_responses(arith, monkeypatch):
    """sample_step adds the draw's prompts solved at least once to state["solved"] (sorted ids: coverage is its
    length over the number of problems) and its wrong responses to state["regret"], extra rollouts included."""
    model, tok = arith
    problems = train.data.load_split("arith", "train")
    configure_train(monkeypatch, batch_size=8, rollouts=2, extra_rollouts=1, advantage="extra", log_rollouts=24)
    # the advantages are not what is tested: the raw reward of the trained rollouts, so that a copy in which
    # exercise grpo (which "extra" runs) is still to write judges this exercise by its own code
    monkeypatch.setattr(train, "compute_advantages", lambda rewards, estimator, n_train, *_: rewards[:, :n_train])
    state = dict(replay={}, solved=[5, 1999], regret=7)  # what earlier draws left
    _, _, examples = train.sample_step(model, None, tok, problems, 0, state)
    right = [e["index"] for e in examples if e["reward_nanorft"] == 1]
    wrong = [e["index"] for e in examples if e["reward_nanorft"] == 0]
    assert len(examples) == 24 and right and wrong  # every response of the draw, some right and some wrong
    assert state["solved"] == sorted({5, 1999} | set(right))
    assert state["regret"] == 7 + len(wrong)

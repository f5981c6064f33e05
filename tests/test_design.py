"""Each design choice of train.py on crafted inputs with exact expected values, and every config file."""
import glob
import math
import os

import pytest
import torch

import advantage
import train
from configurator import configure
from test_train import DEFAULTS, ROOT, run


def set_config(**kw):
    train.__dict__.update(configure(DEFAULTS, [f"--{k}={v}" for k, v in kw.items()]))


# a crafted batch: 2 sequences, 4 positions; sequence 0 has 3 response tokens, sequence 1 has 1
X = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0]])
M = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize("agg, want", [
    ("token_mean", (1 + 2 + 3 + 4) / 4),  # every token counts once
    ("seq_mean_token_mean", ((1 + 2 + 3) / 3 + 4 / 1) / 2),  # each sequence's mean, then their mean
    ("seq_sum_norm", ((1 + 2 + 3) + 4) / (2 * 8)),  # sums over a constant max_new_tokens=8 per sequence
])
def test_loss_aggregations(agg, want):
    set_config(loss_agg=agg, max_new_tokens=8)
    assert train.aggregate(X, M, n_tokens=4, n_seqs=2).item() == pytest.approx(want)
    # micro-batch pieces add up to the whole, since normalizers are the minibatch's totals
    parts = train.aggregate(X[:1], M[:1], 4, 2) + train.aggregate(X[1:], M[1:], 4, 2)
    assert parts.item() == pytest.approx(want)


def test_first_epoch_ratio_is_one_and_nothing_is_clipped():
    set_config()
    logp = torch.log(torch.rand(2, 4)).requires_grad_()
    adv = torch.tensor([[1.0], [-2.0]]).expand(2, 4)
    loss, st = train.policy_loss(logp, logp.detach(), adv, M, 4, 2)
    assert st["ratio"] / 4 == pytest.approx(1.0) and st["clipfrac"] == 0
    loss.backward()
    torch.testing.assert_close(logp.grad, -adv * M / 4)  # the plain policy gradient, token-mean


def test_clipped_tokens_get_zero_gradient():
    set_config(clip_low=0.2, clip_high=0.28, dual_clip=3.0)
    old = torch.zeros(1, 5)
    # ratios 1.5 (A>0: above 1.28, clipped), 0.5 (A<0: below 0.8, clipped), 1.1 (inside), 1.5 with A<0
    # (not clipped: pessimistic side), 5.0 with A<0 (dual-clip bounds the loss at -3A: constant)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 1.5, 5.0]])).requires_grad_()
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, -1.0]])
    m = torch.ones(1, 5)
    loss, st = train.policy_loss(logp, old, adv, m, 5, 1)
    loss.backward()
    g = logp.grad[0]
    assert g[0] == 0 and g[1] == 0 and g[4] == 0
    assert g[2] != 0 and g[3] != 0
    assert st["clipfrac"] == 2  # tokens 0 and 1
    assert loss.item() == pytest.approx((-1.28 + 0.8 - 1.1 + 1.5 + 3.0) / 5)


def test_kl_estimators_on_known_distributions():
    p = torch.tensor([0.5, 0.3, 0.2])
    q = torch.tensor([0.2, 0.5, 0.3])
    exact = (p * (p / q).log()).sum().item()
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    lp, lq = p.log()[x], q.log()[x]
    for est in ("k1", "k3"):  # both unbiased for KL(p || q) when x ~ p
        set_config(kl_estimator=est)
        assert train.kl_penalty(lp, lq).mean().item() == pytest.approx(exact, abs=0.01)
    set_config(kl_estimator="k3")
    assert (train.kl_penalty(lp, lq) >= 0).all()
    set_config(kl_estimator="k2")
    torch.testing.assert_close(train.kl_penalty(lp, lq), 0.5 * (lp - lq) ** 2)
    assert train.kl_penalty(lp, lp).abs().max() == 0


def test_lr_schedule():
    set_config(lr_schedule="cosine", learning_rate=1e-3, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    assert train.lr_at(0) == pytest.approx(1e-4) and train.lr_at(9) == pytest.approx(1e-3)
    assert train.lr_at(10) == pytest.approx(1e-3) and train.lr_at(60) == pytest.approx(0.55e-3)
    assert train.lr_at(110) == pytest.approx(1e-4)
    set_config(lr_schedule="constant", learning_rate=3e-4)
    assert train.lr_at(0) == train.lr_at(1000) == 3e-4


@pytest.fixture
def policy(arith):
    model, tok = arith
    problems = train.data.load_split("arith", "train")
    return model, tok, problems


def scripted_rewards(monkeypatch, n):
    """Reward of response j of prompt g: 1 for every response of even g, alternating for odd g."""
    calls = []

    def score(task, text, answer, strict=True):
        c = len(calls)
        calls.append(c)
        g, j = divmod(c, n)
        return 1.0 if g % 2 == 0 else float(j == 0)
    monkeypatch.setattr(train.reward, "score", score)


def test_zero_variance_filter(policy, monkeypatch):
    model, tok, problems = policy
    set_config(batch_size=4, rollouts=2, filter_zero_variance=True)
    scripted_rewards(monkeypatch, 2)
    rows, m = train.sample_step(model, None, tok, problems, 0, {})
    assert m["zero_var_frac"] == 0.5
    assert rows["tokens"].size(0) == 4  # only prompts 1 and 3 (mixed rewards), 2 responses each
    torch.testing.assert_close(rows["adv"], advantage.compute(torch.tensor([[1.0, 0.0], [1.0, 0.0]]), "none").flatten())


def test_extra_rollouts_feed_only_the_baseline(policy, monkeypatch):
    model, tok, problems = policy
    set_config(batch_size=3, rollouts=1, extra_rollouts=3, advantage="extra")
    seen = []
    real_generate = train.generate
    monkeypatch.setattr(train, "generate", lambda *a: seen.append(real_generate(*a)) or seen[-1])
    scripted_rewards(monkeypatch, 4)
    rows, _ = train.sample_step(model, None, tok, problems, 0, {})
    ro = seen[0]
    assert ro.tokens.size(0) == 12 and rows["tokens"].size(0) == 3
    assert torch.equal(rows["tokens"], ro.tokens[0::4])  # the first response of each prompt only
    r = torch.tensor([[1.0] * 4, [1.0, 0, 0, 0], [1.0] * 4])
    torch.testing.assert_close(rows["adv"], advantage.compute(r, "extra", n_train=1).flatten())


def test_mask_truncated_gives_no_gradient(policy):
    model, tok, problems = policy
    set_config(batch_size=4, max_new_tokens=2, mask_truncated=True)  # 2 tokens can't finish "ddd<eos>"
    rows, _ = train.sample_step(model, None, tok, problems, 0, {})
    assert not rows["finished"].any()
    rows["adv"] = torch.ones(4)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    assert train.update(model, None, opt, train.select_rows([rows]))["grad_norm"] == 0


def test_update_ratio_is_one_on_the_first_epoch(policy):
    model, tok, problems = policy
    set_config(batch_size=8, rollouts=2, advantage="grpo", ppo_epochs=1)
    rows, _ = train.sample_step(model, None, tok, problems, 0, {})
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    st = train.update(model, None, opt, train.select_rows([rows]))
    assert st["ratio"] == pytest.approx(1.0, abs=1e-5) and st["clipfrac"] == 0


def test_replay_state_and_resume_are_exact(tmp_path):
    flags = ["--advantage=replay", "--rollouts=2", "--replay_window=3"]
    straight = run(tmp_path / "a", *flags, "--max_steps=4", "--eval_interval=2")
    run(tmp_path / "b", *flags, "--max_steps=2", "--eval_interval=2")
    half = torch.load(tmp_path / "b" / "ckpt" / "train_state.pt", weights_only=True)
    assert half["step"] == 2 and half["replay"] and all(len(v) <= 3 for v in half["replay"].values())
    resumed = run(tmp_path / "b", *flags, "--max_steps=4", "--eval_interval=2", "--init_from=resume")
    timing = ("time", "sample_s", "update_s", "tokens_per_s")
    clean = lambda log: [{k: v for k, v in line.items() if k not in timing} for line in log]
    assert clean(resumed) == clean(straight)
    a = torch.load(tmp_path / "a" / "ckpt" / "train_state.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "ckpt" / "train_state.pt", weights_only=True)
    assert a["replay"] == b["replay"]
    from safetensors.torch import load_file
    wa, wb = (load_file(tmp_path / d / "ckpt" / "model.safetensors") for d in ("a", "b"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


DESIGN_CONFIGS = [p for p in sorted(glob.glob(os.path.join(ROOT, "config", "*.py")))
                  if configure(DEFAULTS, [p])["init_from"] == DEFAULTS["init_from"]]  # model/data configs need their hub model: see test_data.py


@pytest.mark.slow
@pytest.mark.parametrize("cfg", DESIGN_CONFIGS, ids=lambda p: os.path.basename(p))
def test_every_config_runs_one_step(cfg, tmp_path):
    log = run(tmp_path, cfg, "--max_steps=1", "--eval_interval=1", "--eval_problems=8", "--max_new_tokens=6")
    c = configure(DEFAULTS, ["--batch_size=4", cfg])  # as run() applies them
    assert log[-1]["step"] == 1 and math.isfinite(log[-1].get("loss", 0.0))
    assert log[-1]["responses"] >= c["batch_size"] * (c["rollouts"] + c["extra_rollouts"])


def test_sampling_in_chunks_gives_the_same_rollouts(policy):
    model, tok, problems = policy
    got = []
    for chunk in (0, 3):
        set_config(batch_size=8, rollouts=2, advantage="grpo", sample_batch_size=chunk)
        rows, m = train.sample_step(model, None, tok, problems, 5, {})
        got.append((rows, m))
    (a, ma), (b, mb) = got
    assert ma == mb
    for k in ("tokens", "mask", "valid"):  # equal once each row's padding is stripped
        assert [r[v].tolist() for r, v in zip(a[k], a["valid"])] == [r[v].tolist() for r, v in zip(b[k], b["valid"])]
    torch.testing.assert_close(a["adv"], b["adv"])

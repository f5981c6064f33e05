"""Precision as a design choice (precision.py) and the sampler/trainer gap in the update (train.py): the gap is
measured at rounding level when both compute in fp32, clearly above it with a bf16 sampler; TIS/MIS reach the
gradient; fp16's loss scaler skips an overflowing step and goes on; the new knobs' bad values are one line."""
import json
import os

import pytest
import torch

from machinery import checks
from machinery import precision
import train
from configurator import configure

DEFAULTS = {k: getattr(train, k) for k in train.config_keys}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# fp32 rounding bound for one token's log-prob computed two ways (the sampler's KV-cached decode, the update's
# packed forward): the paths differ only in summation order, fp32's relative error is 2^-24 per operation,
# accumulated over dot products of length <= 384 (tiny-arith's MLP) through 4 layers and logits of magnitude
# < 30: below 384 * 4 * 30 * 2^-24 < 3e-3 in the worst case, ~1e-6 in practice; we allow 1e-4 per token
TOKEN_BOUND = 1e-4


def configure_train(monkeypatch, **overrides):
    """train.py's knobs: the defaults with these overrides, restored after the test."""
    overrides = dict(dict(device="cpu"), **overrides)  # what main's ddp.setup makes of "auto" here
    for k, v in configure(DEFAULTS, [f"--{k}={v}" for k, v in overrides.items()]).items():
        monkeypatch.setitem(train.__dict__, k, v)


def step(model, tok, scaler=None, opt=None, draw=0):
    """One sample_step + update of the tiny policy on 8 arithmetic prompts; returns the update's stats."""
    problems = train.data.load_split("arith", "train")
    rows, _, _ = train.sample_step(model, None, tok, problems, draw, dict(replay={}, solved=[], regret=0))
    opt = opt or torch.optim.SGD(model.parameters(), lr=0.1)
    return train.update(model, None, opt, train.ddp.select_rows([rows], rows["tokens"].size(0)), scaler)


@pytest.mark.parametrize("minibatches", [1, 2], ids=["on_policy", "recomputed"])
def test_the_gap_is_at_rounding_level_when_sampler_and_trainer_are_fp32(arith, monkeypatch, minibatches):
    """On-policy the update's own forward is the trainer's side; with 2 minibatches a no-grad pass before the
    first step is. Either way no token leaves [1/1.1, 1.1] and KL is ~ (per-token error)^2 / 2."""
    model, tok = arith
    configure_train(monkeypatch, batch_size=8, rollouts=2, advantage="grpo", minibatches=minibatches)
    stats = step(model, tok)
    assert stats["mismatch_frac"] == 0
    assert 0 <= stats["mismatch_kl"] <= TOKEN_BOUND ** 2 / 2
    assert stats["mismatch_max"] <= train.max_new_tokens * TOKEN_BOUND  # a sequence sums its tokens' errors


def test_a_bf16_sampler_against_an_fp32_trainer_shows_a_gap(arith, monkeypatch):
    """bf16 keeps 8 bits of mantissa: log-probs move by ~1e-2, far above fp32's rounding, so the gap is measured
    (and its measure is not comparing the trainer with itself)."""
    model, tok = arith
    configure_train(monkeypatch, batch_size=8, rollouts=2, advantage="grpo", sampler_dtype="bfloat16")
    stats = step(model, tok)
    assert stats["mismatch_max"] > 10 * train.max_new_tokens * TOKEN_BOUND
    assert stats["mismatch_kl"] > 100 * TOKEN_BOUND ** 2


@pytest.mark.parametrize("minibatches", [1, 2], ids=["on_policy", "recomputed"])
def test_truncated_logprobs_agree_between_sampler_and_trainer(arith, monkeypatch, minibatches):
    """With top_p = 0.5 and truncated_logprobs both sides score the nucleus's softmax: the sampler's log-probs
    rise by -log S where the nucleus dropped mass, and the trainer's recompute agrees with them to fp32 rounding
    (a trainer that scored the full softmax would be off by log S, far outside the band)."""
    model, tok = arith
    problems = train.data.load_split("arith", "train")
    logprobs = {}
    for on in (False, True):
        configure_train(monkeypatch, batch_size=8, rollouts=2, advantage="grpo", top_p=0.5, truncated_logprobs=on,
                        minibatches=minibatches)
        rows, _, _ = train.sample_step(model, None, tok, problems, 0, dict(replay={}, solved=[], regret=0))
        logprobs[on] = rows["old_logprobs"]
    rises = logprobs[True] - logprobs[False]  # -log S per token: 0 where the nucleus kept everything
    assert (rises >= -TOKEN_BOUND).all() and rises.max() > 0.1
    stats = step(model, tok)
    assert stats["mismatch_frac"] == 0 and stats["mismatch_kl"] <= TOKEN_BOUND ** 2 / 2


def test_mis_with_a_tight_band_drops_every_response_from_the_gradient(arith, monkeypatch):
    """With a bf16 sampler every response's mean ratio is off 1 by more than 1e-6: MIS at C = 1 + 1e-6 masks
    them all, so the policy gradient is zero and SGD leaves the weights; TIS at a generous cap still moves them."""
    model, tok = arith
    before = [p.detach().clone() for p in model.parameters()]
    configure_train(monkeypatch, batch_size=8, rollouts=2, advantage="grpo", sampler_dtype="bfloat16",
                    is_correction="mis", is_cap=1 + 1e-6)
    stats = step(model, tok)
    assert stats["grad_norm"] == 0 and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    configure_train(monkeypatch, batch_size=8, rollouts=2, advantage="grpo", sampler_dtype="bfloat16",
                    is_correction="tis", is_cap=10.0)
    assert step(model, tok)["grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_tis_in_fp32_on_policy_is_the_uncorrected_update(arith, monkeypatch):
    """In fp32 the weights are 1 up to rounding (|log w| <= TOKEN_BOUND), so TIS changes the update by no more."""
    model, tok = arith
    grads = {}
    for kind in ("none", "tis"):
        configure_train(monkeypatch, batch_size=8, rollouts=2, advantage="grpo", is_correction=kind)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)  # a step that changes nothing: same model both times
        grads[kind] = step(model, tok, opt=opt)["grad_norm"]
    assert grads["tis"] == pytest.approx(grads["none"], rel=2 * TOKEN_BOUND)


def test_fp16_scaler_skips_an_overflowing_step_then_goes_on(arith, monkeypatch):
    """At a loss scale of 2^40 the fp16 backward overflows (fp16's largest value is 65504): the step is skipped,
    not counted bad, and the scale backs off (here straight to 2^4); the next step's gradients fit and it steps."""
    model, tok = arith
    configure_train(monkeypatch, batch_size=8, rollouts=2, advantage="grpo", dtype="float16")
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 40, backoff_factor=2.0 ** -36)
    before = [p.detach().clone() for p in model.parameters()]
    stats = step(model, tok, scaler)
    assert stats["overflows"] == 1 and stats["skipped"] == 0 and stats["loss_scale"] == 2.0 ** 4
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    stats = step(model, tok, scaler, draw=1)
    assert stats["overflows"] == 0 and stats["skipped"] == 0 and stats["grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("dtype, scale, bad", [("float16", 4.0, False), ("float16", 1.0, True),
                                               ("float32", None, True)])
def test_a_skipped_step_is_bad_only_once_the_scaler_gives_up(dtype, scale, bad):
    """An infinite gradient: fp16 halves its scale and skips, bad only below MIN_SCALE; without fp16 it is bad."""
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([p], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale) if scale else precision.grad_scaler("cpu", dtype)
    scaler.scale((p * torch.tensor([1.0, float("inf"), 0.0])).sum()).backward()  # p.grad: (scale, inf, 0)
    norm, stepped, gave_up = precision.optimizer_step(opt, scaler, [p], grad_clip=1.0)
    assert not stepped and gave_up == bad and torch.equal(p.detach(), torch.ones(3))
    if scale:
        assert scaler.get_scale() == scale / 2


@pytest.mark.parametrize("dtype, want", [("float32", torch.float32), ("bfloat16", torch.bfloat16),
                                         ("float16", torch.float16)])
def test_autocast_computes_matmuls_in_the_dtype_on_cpu(dtype, want):
    a = torch.randn(4, 4, generator=torch.Generator().manual_seed(0))
    with precision.autocast("cpu", dtype):
        assert (a @ a).dtype == want


def test_bf16_with_tis_runs_and_logs_the_gap(tmp_path):
    """The issue's command in small: train.py --dtype=bfloat16 --is_correction=tis on a CPU logs the gap."""
    fast = [f"--out_dir={tmp_path}", f"--init_from={ROOT}/assets/tiny-arith", "--max_steps=2", "--eval_interval=2",
            "--eval_problems=16", "--batch_size=4", "--rollouts=2", "--advantage=grpo", "--dtype=bfloat16",
            "--is_correction=tis"]
    train.__dict__.update(configure(DEFAULTS, fast))
    try:
        train.main()
    finally:
        train.__dict__.update(DEFAULTS)
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert all(k in log[1] for k in ("mismatch_kl", "mismatch_frac", "mismatch_max")) and log[2]["skipped"] == 0


def test_a_resumed_fp16_run_goes_on_at_the_loss_scale_it_reached(tmp_path, monkeypatch):
    """Step 1 overflows at a scale of 2^40 and backs off to 2^4 (as above); the checkpoint of step 1 keeps it,
    so the resumed step 2 trains at 2^4, not at a fresh scaler's 2^16. A foreign scaler state is refused."""
    fast = [f"--out_dir={tmp_path}", f"--init_from={ROOT}/assets/tiny-arith", "--max_steps=1", "--eval_interval=1",
            "--eval_problems=8", "--batch_size=4", "--rollouts=2", "--advantage=grpo", "--dtype=float16"]
    real = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", lambda *a, **k: real(*a, **k, init_scale=2.0 ** 40,
                                                                       backoff_factor=2.0 ** -36))
    for args in (fast, [*fast, "--init_from=resume", "--max_steps=2"]):
        train.__dict__.update(configure(DEFAULTS, args))
        try:
            train.main()
        finally:
            train.__dict__.update(DEFAULTS)
        monkeypatch.undo()  # the resumed run makes the default scaler: 2^16 unless the checkpoint's scale is loaded
    log = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [(r["overflows"], r["loss_scale"]) for r in log if "loss_scale" in r] == [(1, 2.0 ** 4), (0, 2.0 ** 4)]
    state = torch.load(tmp_path / "ckpt" / "train_state.pt", weights_only=True)
    assert state["scaler"]["scale"] == 2.0 ** 4
    from machinery.checkpoint import scaler_ok
    assert scaler_ok({}) and scaler_ok(dict(scaler={})) and scaler_ok(state)
    assert scaler_ok(dict(scaler=dict(state["scaler"], added_later=True)))
    assert not scaler_ok(dict(scaler=dict(state["scaler"], scale="big"))) and not scaler_ok(dict(scaler=[1.0]))
    assert not scaler_ok(dict(scaler={k: v for k, v in state["scaler"].items() if k != "_growth_tracker"}))


@pytest.mark.parametrize("overrides, warned", [(dict(truncated_logprobs=True), True),
                                               (dict(truncated_logprobs=True, top_p=0.9), False),
                                               (dict(truncated_logprobs=True, top_k=5), False),
                                               (dict(top_p=0.9), False)], ids=str)
def test_truncated_logprobs_without_truncation_is_warned_about(overrides, warned, capsys):
    checks.check_config(dict(DEFAULTS, **overrides), world=1)
    err = capsys.readouterr().err
    assert ("warning: truncated_logprobs=True does nothing" in err) == warned and "error" not in err


@pytest.mark.parametrize("key, value", [("dtype", "fp16"), ("dtype", "half"), ("sampler_dtype", "bf16"),
                                        ("is_correction", "is"), ("is_correction", "TIS"), ("is_cap", 1.0),
                                        ("is_cap", 0.5), ("is_cap", float("nan"))], ids=str)
def test_a_bad_precision_or_correction_knob_is_one_line(key, value, capsys):
    with pytest.raises(SystemExit) as e:
        checks.check_config(dict(DEFAULTS, **{key: value}), world=1)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and key in err[0]


@pytest.mark.parametrize("key, value", [("dtype", "float16"), ("sampler_dtype", ""), ("sampler_dtype", "bfloat16"),
                                        ("is_correction", "mis"), ("is_cap", 1.001)], ids=str)
def test_the_precision_knobs_valid_values_pass(key, value, capsys):
    checks.check_config(dict(DEFAULTS, **{key: value}), world=1)
    assert "error" not in capsys.readouterr().err

"""Staleness (machinery/stale.py): the sampler lags K updates behind; its snapshots are the run's state, so a resumed
run is the uninterrupted one bit for bit; M2PO's second-moment mask (loss.m2po_cutoff, is_weights "m2po")."""
import json
import math
import os

import pytest
import torch
from safetensors.torch import load_file

import train
from loss import is_weights, m2po_cutoff
from configurator import configure
from machinery import memory, stale
from model import read_hf_config
from test_train import DEFAULTS, ROOT, run

UNTIMED = ("time", "sample_s", "update_s", "tokens_per_s", "peak_mem_gib")


def untimed(log):
    return [{k: v for k, v in line.items() if k not in UNTIMED} for line in log]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_the_sampler_sees_the_policy_after_step_t_minus_1_minus_k(k):
    """A one-weight policy set to t after step t: step t's sampler must see max(0, t - 1 - K), the trainer t - 1."""
    policy, state, seen = torch.nn.Linear(1, 1, bias=False), {}, []
    with torch.no_grad():
        policy.weight.fill_(0.0)
    for t in range(1, 9):
        with stale.behaviour(policy, state, k):
            seen.append(policy.weight.item())
        assert policy.weight.item() == t - 1  # the trainer's own weights are back
        with torch.no_grad():
            policy.weight.fill_(float(t))  # "the optimizer step" of step t
        assert len(state.get("stale", [])) == min(k, t)  # K = 0 keeps none, and adds nothing to the state
    assert seen == [max(0, t - 1 - k) for t in range(1, 9)]


def test_the_first_snapshots_are_copies_not_the_policy_itself():
    policy, state = torch.nn.Linear(2, 2), {}
    for _ in range(3):
        with stale.behaviour(policy, state, 2):
            pass
    ptrs = {p.data_ptr() for p in policy.parameters()}
    assert all(t.data_ptr() not in ptrs for snapshot in state["stale"] for t in snapshot.values())
    assert state["stale"][0]["weight"].data_ptr() != state["stale"][1]["weight"].data_ptr()


def test_in_the_run_the_sampler_uses_the_policy_k_updates_old(tmp_path, monkeypatch):
    """train.main with K = 2: the weights sample_step sees at step t are those update() started from at step t - 2
    (the initial policy for t <= 3), and the update trains the newest policy."""
    sampled, updated = [], []
    real_sample, real_update = train.sample_step, train.update
    monkeypatch.setattr(train, "sample_step", lambda policy, *a: (
        sampled.append([p.detach().clone() for p in policy.parameters()]), real_sample(policy, *a))[1])
    monkeypatch.setattr(train, "update", lambda model, *a: (
        updated.append([p.detach().clone() for p in model.parameters()]), real_update(model, *a))[1])
    run(tmp_path, "--staleness=2", "--max_steps=6", "--eval_interval=6", "--eval_problems=4")
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a, b))
    assert same(sampled[0], updated[0]) and same(sampled[1], updated[0]) and same(sampled[2], updated[0])
    for t in range(4, 7):  # step t (1-based) samples the policy after step t - 3, which update t - 2 started from
        assert same(sampled[t - 1], updated[t - 3]), t
        assert not same(sampled[t - 1], updated[t - 1]), t


def test_the_gap_to_the_behaviour_policy_is_logged_and_grows_with_k(tmp_path):
    """mismatch_kl compares pi_old (the trainer's policy at the step's start) with the sampler's log-probs. K = 0 in
    fp32: the two differ only by rounding (measured ~1e-13 per token, far under 1e-9); K >= 1: one or more AdamW
    steps of lr 1e-4 apart (measured 1e-3 to 3e-2), except step 1, which samples the initial policy on-policy."""
    kl = {k: [line["mismatch_kl"] for line in run(tmp_path / str(k), f"--staleness={k}", "--max_steps=6",
                                                    "--eval_interval=6", "--eval_problems=4")[1:]]
          for k in (0, 1, 4)}
    assert max(kl[0]) < 1e-9 and kl[1][0] < 1e-9 and kl[4][0] < 1e-9
    assert min(kl[1][1:]) > 1e-5 and min(kl[4][1:]) > 1e-5
    assert sum(kl[4]) > sum(kl[1]) > sum(kl[0])


FLAGS = ["--staleness=2", "--rollouts=2", "--advantage=grpo", "--eval_interval=3", "--eval_problems=8"]


@pytest.mark.parametrize("extra", [[], ["--minibatches=2", "--is_correction=m2po"]], ids=["reinforce", "ppo_m2po"])
def test_a_resumed_stale_run_is_the_uninterrupted_one_bit_for_bit(tmp_path, extra):
    """Stopped at step 3 with the FIFO full (the policies after steps 1 and 2), resumed to 6: the same log numbers,
    weights and snapshots as a run that never stopped. Without the snapshots in train_state.pt the resumed run
    would sample steps 4 and 5 from the wrong policy."""
    straight = run(tmp_path / "a", *FLAGS, *extra, "--max_steps=6")
    run(tmp_path / "b", *FLAGS, *extra, "--max_steps=3")
    resumed = run(tmp_path / "b", *FLAGS, *extra, "--max_steps=6", "--init_from=resume")
    assert untimed(resumed) == untimed(straight)
    a, b = (load_file(tmp_path / d / "ckpt" / "model.safetensors") for d in "ab")
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = (torch.load(tmp_path / d / "ckpt" / "train_state.pt", weights_only=True)["stale"] for d in "ab")
    assert len(sa) == len(sb) == 2 and all(torch.equal(x[k], y[k]) for x, y in zip(sa, sb) for k in x)


def test_a_stale_run_trains_and_resumes_on_cuda(tmp_path, fake_cuda):
    flags = ["--device=cuda", *FLAGS, "--is_correction=tis"]
    straight = untimed(run(tmp_path / "a", *flags, "--max_steps=4", "--eval_interval=2"))
    run(tmp_path / "b", *flags, "--max_steps=2", "--eval_interval=2")
    resumed = untimed(run(tmp_path / "b", *flags, "--max_steps=4", "--eval_interval=2", "--init_from=resume"))
    assert resumed == straight and not fake_cuda.cuda_loads  # the snapshots were read to the CPU, then moved


def test_the_snapshots_memory_is_counted(tmp_path):
    """K fp32 copies of the weights: memory.py's term equals the bytes the checkpoint's FIFO holds."""
    run(tmp_path, "--staleness=3", "--max_steps=3", "--eval_interval=3", "--eval_problems=4")
    fifo = torch.load(tmp_path / "ckpt" / "train_state.pt", weights_only=True)["stale"]
    held = sum(t.numel() * t.element_size() for snapshot in fifo for t in snapshot.values())
    cfg = read_hf_config(json.load(open(f"{ROOT}/assets/tiny-arith/config.json")))
    terms = dict(memory.held_terms(cfg, dict(DEFAULTS, staleness=3), train=True))
    assert terms["policy snapshots"] == held == 3 * 4 * memory.param_counts(cfg)[0]
    assert "policy snapshots" not in dict(memory.held_terms(cfg, DEFAULTS, train=True))


@pytest.mark.parametrize("key, value", [("staleness", 4), ("m2_threshold", 0.1)])
def test_a_resume_may_not_change_the_lag_or_the_mask(key, value, capsys):
    """The snapshots in the checkpoint are those of the run's K: another K (or mask) is another experiment."""
    from machinery import checkpoint
    saved = dict(DEFAULTS, staleness=2)
    with pytest.raises(SystemExit) as e:
        checkpoint.check_resume(saved, dict(saved, **{key: value}))
    assert e.value.code == 2 and f"{key}={saved[key]!r} -> {value!r}" in capsys.readouterr().err


@pytest.mark.parametrize("argv, msg", [(["--staleness=-1"], "staleness must be at least 0"),
                                       (["--m2_threshold=0.0"], "m2_threshold must be > 0")])
def test_bad_values_exit_2(tmp_path, argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        run(tmp_path, *argv)
    assert e.value.code == 2 and msg in capsys.readouterr().err


@pytest.mark.parametrize("squares, cutoff", [
    ([0.0, 0.01, 0.02, 1.0], 0.02),  # means of the smallest 1..4: 0, .005, .01, .2575: the 1.0 goes
    ([1.0, 0.0, 0.02, 0.01], 0.02),  # in any order
    ([0.01, 0.03], math.inf),  # mean .02 < .04: nothing masked
    ([0.03, 0.05, 0.05], 0.03),  # .03, .04 (not below), .0433: the two equal .05 go together
    ([0.5], -1.0),  # even one token is over: all masked
    ([], math.inf),
])
def test_m2po_masks_the_fewest_largest_tokens_until_the_mean_is_under_the_threshold(squares, cutoff):
    got = m2po_cutoff(torch.tensor(squares), 0.04)
    assert got == pytest.approx(cutoff, rel=1e-6)  # float32 inputs, read back as float64: 1e-7 relative
    kept = [s for s in squares if s <= got]
    assert not kept or sum(kept) / len(kept) < 0.04


def test_m2po_weights_are_the_importance_ratio_on_kept_tokens_and_zero_on_masked():
    pi_old = torch.log(torch.tensor([[0.5, 0.5, 0.9]]))
    sampler = torch.log(torch.tensor([[0.5, 0.4, 0.1]]))  # log-ratios 0, log 1.25, log 9
    mask = torch.ones(1, 3)
    squares = (pi_old - sampler).square().flatten()  # 0, 0.0498, 4.83
    cap = m2po_cutoff(squares, 0.04)  # means 0, 0.0249, 1.63: keeps the first two
    w = is_weights(pi_old, sampler, mask, kind="m2po", cap=cap)
    torch.testing.assert_close(w, torch.tensor([[1.0, 1.25, 0.0]]), atol=1e-6, rtol=0)  # exp(log 1.25) in fp32


@pytest.mark.parametrize("kind, cap, cut", [
    ("tis", 2.0, 1 / 4),  # ratios 1, 1.25, 9, 0.25 (the padded token is not trained): only 9 is truncated at 2
    ("tis", 1.2, 2 / 4),  # 1.25 too
    ("mis", 2.0, 1.0),  # mean log-ratios: row 0 (log 1.25 + log 9) / 3 = 0.81, row 1 |log 0.25| = 1.39 > log 2
    ("mis", 3.0, 1 / 4),  # log 3 = 1.10: row 1 only, its one trained token
    ("mis", 5.0, 0.0),  # both within log 5 = 1.61
    ("m2po", 0.04, 2 / 4),  # squares 0, 0.0498, 1.92, 4.83: kept until the smallest two (mean 0.025)
    ("none", 2.0, None),
])
def test_the_fraction_of_tokens_a_correction_cut_is_logged(kind, cap, cut):
    """precision.gap_stats' is_cut: over the trained tokens only, from the same weights as the update's."""
    from machinery import precision
    pi_old = torch.log(torch.tensor([[0.5, 0.5, 0.9], [0.1, 0.5, 0.5]]))
    sampler = torch.log(torch.tensor([[0.5, 0.4, 0.1], [0.4, 0.9, 0.9]]))  # (2, 3); row 1 is one token long
    mask = torch.tensor([[True, True, True], [True, False, False]])
    if kind == "m2po":
        cap = m2po_cutoff((pi_old - sampler)[mask].square(), cap)
    stats = precision.gap_stats(pi_old, sampler, mask, kind, cap)
    assert stats.get("is_cut") == (None if cut is None else pytest.approx(cut, abs=1e-12))  # counts over 4


def test_a_run_logs_what_its_correction_cut(tmp_path):
    """TIS with a cap barely above 1 at K = 2: once the sampler lags (step 2 on: steps 1-3 sample the initial
    policy, the trainer has moved after step 1) some token's pi_old / pi_sampler exceeds it; step 1 is on-policy,
    its fp32 ratios 1 up to rounding (~1e-7), far under the cap's 1e-3."""
    log = run(tmp_path, "--staleness=2", "--is_correction=tis", "--is_cap=1.001", "--max_steps=5",
              "--eval_interval=5", "--eval_problems=4")
    assert log[1]["is_cut"] == 0.0 and all(line["is_cut"] > 0 for line in log[2:])
    assert "is_cut" not in run(tmp_path / "none", "--max_steps=1", "--eval_problems=4")[1]


def test_coupled_ppo_clips_against_the_stale_sampler_from_the_first_optimizer_step(tmp_path):
    """clip_to=sampler: the ratio is pi / pi_sampler, so with one minibatch at K = 2 the clip acts as soon as the
    sampler lags (step 2 on), where the default ratio (to pi_old, the policy itself on one minibatch) never clips.
    At K = 0 the fp32 sampler is the policy up to rounding (ratios ~1e-6 from 1, far inside the 0.001 clip). 16
    prompts a step: a step whose raw rewards are all 0 has no advantage for the clip to act on."""
    tight = ["--clip_low=0.001", "--clip_high=0.001", "--max_steps=4", "--eval_interval=4", "--eval_problems=4",
             "--batch_size=16"]
    coupled = run(tmp_path / "a", "--staleness=2", "--clip_to=sampler", *tight)
    decoupled = run(tmp_path / "b", "--staleness=2", *tight)
    fresh = run(tmp_path / "c", "--clip_to=sampler", *tight)
    assert coupled[1]["clipfrac"] == 0 and all(line["clipfrac"] > 0 for line in coupled[2:])
    assert all(line["clipfrac"] == 0 for line in decoupled[1:] + fresh[1:])


def test_coupled_ppo_takes_no_second_correction(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run(tmp_path, "--clip_to=sampler", "--is_correction=tis")
    assert e.value.code == 2 and "count the gap twice" in capsys.readouterr().err


def settings(cfg):
    """train.py's knobs for a pipeline entry on the CPU base."""
    import pipelines
    return configure(DEFAULTS, [os.path.join(ROOT, a) if a.endswith(".py") else a for a in [pipelines.CPU_BASE, *cfg]])


def test_each_stale_entry_is_its_arms_k0_plus_staleness_only():
    import pipelines
    entries, refs = pipelines.PIPELINES["staleness"], pipelines.REFERENCES["staleness"]
    assert len(entries) == 2 * 5 * 5 and list(entries)[0] == "minimal"
    for name, cfg in entries.items():
        a, b = settings(cfg), settings(entries[refs[name]])
        assert {k for k in a if a[k] != b[k]} == ({"staleness"} if refs[name] != name else set()), name
        assert a["staleness"] in (0, *pipelines.STALE_K)
    ppo = [settings(cfg) for name, cfg in entries.items() if "ppo" in name]
    assert ppo and all(c["minibatches"] == 4 for c in ppo)  # the clip acts against pi_old only after step 1


def write_run(path, times, tests, kls, cuts=None):
    """A hand-made log.jsonl: steps 1..n with (sample_s, update_s) times, mismatch_kl and (given cuts) is_cut;
    evaluations at step 0 and n (test pass@1 `tests`)."""
    path.mkdir(parents=True)
    lines = [dict(step=0, time=0.0, responses=0, **{"train_pass@1": 0.0, "test_pass@1": tests[0]})]
    for step, ((sample_s, update_s), kl) in enumerate(zip(times, kls), 1):
        lines.append(dict(step=step, time=float(step), responses=step, sample_s=sample_s, update_s=update_s,
                          mismatch_kl=kl, **({} if cuts is None else dict(is_cut=cuts[step - 1]))))
    lines[-1].update({"train_pass@1": 0.0, "test_pass@1": tests[1]})
    (path / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_the_staleness_table_pairs_each_k_with_k0_and_adds_up_both_clocks(tmp_path):
    """Two seeds of K = 0 and K = 2, steps of (1 s sampling, 3 s update) then (2 s, 1 s): sampling 3 s, update
    4 s, in turn 7 s, overlapped max(1, 3) + max(2, 1) = 5 s; the clock per step at K = 2 is the mean of 3/4 and
    2/3 = 0.71 synchronous steps, at K = 0 1. Final test: K = 0 0.50 and 0.60, K = 2 0.45 and 0.50: Δ -5 and
    -10 points, mean -7.5, t(0.975, 1) = 12.706 x std 3.54 / sqrt 2 = 31.8 either side."""
    import plot_staleness
    for seed, (t0, t2) in enumerate([(0.5, 0.45), (0.6, 0.5)]):
        write_run(tmp_path / "minimal" / f"seed{seed}", [(1.0, 3.0), (2.0, 1.0)], (0.3, t0), [0.0, 0.0])
        write_run(tmp_path / "minimal_stale2" / f"seed{seed}", [(1.0, 3.0), (2.0, 1.0)], (0.3, t2), [0.0, 4e-3])
        write_run(tmp_path / "minimal_tis_stale2" / f"seed{seed}", [(1.0, 1.0)], (0.3, t2), [0.0], [0.01 * seed])
    plot_staleness.main([str(tmp_path), f"--out={tmp_path / 'staleness'}"])
    rows = [line for line in (tmp_path / "staleness.md").read_text().splitlines() if line.startswith("| minimal")]
    seconds = "3 ± 0 | 4 ± 0 | 7 ± 0 | 5 ± 0"
    assert rows[0] == f"| minimal | 0 | 2 | 55.0 ± 7.1 | — | 0.0e+00 ± 0.0e+00 | — | {seconds} | 1.00 ± 0.00 |"
    assert rows[1] == f"| minimal | 2 | 2 | 47.5 ± 3.5 | -7.5 [-39.3, +24.3] | 2.0e-03 ± 0.0e+00 | — | {seconds} | 0.71 ± 0.00 |"
    assert rows[2].split(" | ")[6] == "0.50 ± 0.71"  # is_cut 0 and 1% (no K = 0 run: no Δ)


def test_the_staleness_plot_needs_stale_runs(tmp_path, capsys):
    import plot_staleness
    write_run(tmp_path / "minimal" / "seed0", [(1.0, 1.0)], (0.3, 0.4), [0.0])
    with pytest.raises(SystemExit) as e:
        plot_staleness.main([str(tmp_path)])
    assert e.value.code == 2 and "holds no run with staleness" in capsys.readouterr().err

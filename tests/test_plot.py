"""plot.py on hand-made logs: paired differences and their t-interval equal a hand computation, one seed
gives n/a, the pipeline's order and references are kept, any logged key can be plotted."""
import json
import math
import os
import sys

import numpy as np
import pytest

import plot


@pytest.fixture(autouse=True)
def table_only(request, monkeypatch):
    """Tables without figures (seconds each), except in the tests that draw one."""
    if "figure" not in request.node.name:
        monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError


def write_run(path, evals, steps=()):
    """A run dir with log.jsonl: eval lines {step: (train, test)} and per-step lines {step: dict}; responses
    = 10 per step, regret = responses - 3 per step."""
    os.makedirs(path, exist_ok=True)
    lines = {s: dict(step=s, time=float(s), responses=10 * s, regret=7 * s) for s in sorted({*evals, *steps})}
    for s, (train, test) in evals.items():
        lines[s].update({"train_pass@1": train, "test_pass@1": test})
    for s in steps:
        lines[s]["entropy"] = 1.0 / (s + 1)
    with open(os.path.join(path, "log.jsonl"), "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines.values())


def sweep_dir(tmp_path, groups, pipeline=None):
    """{group: {seed: {step: (train, test)}}} as sweep.py lays runs out, plus its pipeline.json."""
    out = tmp_path / "sweep"
    for g, seeds in groups.items():
        for s, evals in seeds.items():
            write_run(out / g / f"seed{s}", evals, steps=range(1, max(evals) + 1))
    if pipeline:
        (out / "pipeline.json").write_text(json.dumps(pipeline))
    return out


def rows_of(path):
    rows = [line.strip("|\n").split(" | ") for line in open(path) if line.startswith("| ")][1:]
    return {cells[0].strip(): [c.strip() for c in cells] for cells in rows}


BASE = {0: {0: (0.3, 0.2), 2: (0.40, 0.40)}, 1: {0: (0.3, 0.3), 2: (0.45, 0.45)}, 2: {0: (0.3, 0.1), 2: (0.60, 0.30)}}
GOOD = {0: {0: (0.3, 0.2), 2: (0.50, 0.50)}, 1: {0: (0.3, 0.3), 2: (0.50, 0.60)}, 2: {0: (0.3, 0.1), 2: (0.80, 0.40)}}


def test_paired_difference_and_its_interval_equal_a_hand_computation(tmp_path):
    out = sweep_dir(tmp_path, {"base": BASE, "good": GOOD})
    runs = plot.load_runs([str(out)])
    p = plot.paired(runs["good"], runs["base"], "test_pass@1")
    # by hand: d = (0.1, 0.15, 0.1), mean 0.116667, sample std 0.0288675, t(0.975, 2) = 4.3027,
    # half-width 4.3027 * 0.0288675 / sqrt(3) = 0.0717117
    assert p["step"] == 2 and p["seeds"] == 3
    assert p["diffs"] == pytest.approx([0.1, 0.15, 0.1])
    assert p["mean"] == pytest.approx(0.1166667, abs=1e-6)
    assert (p["lo"], p["hi"]) == (pytest.approx(0.0449550, abs=1e-6), pytest.approx(0.1883783, abs=1e-6))
    # train: d = (0.10, 0.05, 0.20), mean 0.116667, std 0.0763763, half-width 4.3027 * 0.0763763 / sqrt(3)
    # = 0.189733: [-0.073066, 0.306400]
    plot.main([str(out), "--baseline=base"])
    row = rows_of(out / "results.md")["good"]
    assert row[6:9] == ["base", "+11.7 [-7.3, +30.6]", "+11.7 [+4.5, +18.8]"]  # vs, Δ train, Δ test in points
    assert rows_of(out / "results.md")["base"][6:9] == ["—", "—", "—"]


def test_the_unpaired_columns_are_mean_and_sample_std(tmp_path):
    out = sweep_dir(tmp_path, {"base": BASE, "good": GOOD})
    plot.main([str(out)])
    row = rows_of(out / "results.md")["good"]
    test = [0.5, 0.6, 0.4]
    assert row[1] == "3" and row[4] == "50.0 ± 10.0"
    assert row[4] == f"{100 * np.mean(test):.1f} ± {100 * np.std(test, ddof=1):.1f}"


def test_one_seed_says_n_a_instead_of_a_zero_std(tmp_path):
    out = sweep_dir(tmp_path, {"base": {0: BASE[0]}, "good": {0: GOOD[0]}})
    plot.main([str(out)])
    row = rows_of(out / "results.md")["good"]
    assert row[4] == "50.0 ± n/a" and row[8] == "+10.0 [n/a]"
    assert "± 0.0" not in open(out / "results.md").read()


def test_only_seeds_both_ran_are_paired_and_at_the_last_step_both_evaluated(tmp_path):
    short = {s: {0: GOOD[s % 3][0], 1: (0.9, 0.9)} for s in (1, 2, 3)}  # ran to step 1; seed 3 has no baseline run
    base = {s: {0: BASE[s][0], 1: (0.5, 0.5 + s / 10), 2: BASE[s][2]} for s in (0, 1, 2)}
    out = sweep_dir(tmp_path, {"base": base, "short": short})
    runs = plot.load_runs([str(out)])
    p = plot.paired(runs["short"], runs["base"], "test_pass@1")
    assert p["step"] == 1 and p["seeds"] == 2 and p["diffs"] == pytest.approx([0.9 - 0.6, 0.9 - 0.7])
    # by hand: mean 0.25, std 0.0707107, t(0.975, 1) = 12.7062, half-width 12.7062 * 0.0707107 / sqrt(2) = 0.63531
    plot.main([str(out)])
    assert rows_of(out / "results.md")["short"][8] == "+25.0 [-38.5, +88.5]"  # at its own last step
    plot.main([str(out), "--baseline=short"])
    assert rows_of(out / "results.md")["base"][8] == "-25.0 [-88.5, +38.5] @1"  # before base's last step, 2
    assert plot.paired(runs["short"], runs["short"][:0], "test_pass@1") is None  # no shared seed


def test_t_quantiles_leave_2_5_percent_in_each_tail():
    """Each tabulated t(0.975, df) integrates Student's density to 0.95 over [-t, t] (Simpson's rule)."""
    for df, q in plot.T975.items():
        if math.isinf(df):
            density = lambda x: np.exp(-x * x / 2) / math.sqrt(2 * math.pi)
        else:
            c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
            density = lambda x, c=c, df=df: c * (1 + x * x / df) ** (-(df + 1) / 2)
        x = np.linspace(-q, q, 20001)
        w = np.ones_like(x)
        w[1:-1:2], w[2:-1:2] = 4, 2
        assert (x[1] - x[0]) / 3 * (w * density(x)).sum() == pytest.approx(0.95, abs=5e-5), df
    assert plot.t975(35) == plot.T975[30] and plot.t975(10 ** 6) == plot.T975[120]


def test_pipeline_order_is_kept_baseline_first(tmp_path):
    groups = {"rollouts_16": BASE, "rollouts_8": GOOD, "rollouts_1": BASE}
    pipe = dict(entries=["rollouts_1", "rollouts_8", "rollouts_16"], baseline="rollouts_1", references={})
    out = sweep_dir(tmp_path, groups, pipe)
    plot.main([str(out)])
    assert list(rows_of(out / "results.md")) == ["rollouts_1", "rollouts_8", "rollouts_16"]
    assert "baseline `rollouts_1`" in open(out / "results.md").read()
    # by hand with several paths: their order, the first the baseline
    plot.main([str(out / "rollouts_16"), str(out / "rollouts_1"), f"--out={tmp_path / 'r'}"])
    rows = rows_of(tmp_path / "r.md")
    assert list(rows) == ["rollouts_16", "rollouts_1"] and rows["rollouts_1"][6] == "rollouts_16"


def test_references_pair_an_entry_with_its_twin(tmp_path):
    pipe = dict(entries=["budget256_64x4", "replay_64x4", "minimal_512x1", "replay_512x1"],
                baseline="budget256_64x4", references={"replay_512x1": "minimal_512x1"})
    out = sweep_dir(tmp_path, {"budget256_64x4": BASE, "replay_64x4": GOOD, "minimal_512x1": GOOD,
                               "replay_512x1": BASE}, pipe)
    plot.main([str(out)])
    rows = rows_of(out / "results.md")
    assert rows["replay_64x4"][6] == "budget256_64x4" and rows["minimal_512x1"][6] == "budget256_64x4"
    assert rows["replay_512x1"][6] == "minimal_512x1" and rows["replay_512x1"][8] == "-11.7 [-18.8, -4.5]"
    assert rows["minimal_512x1"][6:9] == ["budget256_64x4", rows["replay_64x4"][7], rows["replay_64x4"][8]]


def test_figure_of_any_logged_key_and_a_missing_key_is_one_line(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out = sweep_dir(tmp_path, {"base": BASE, "good": GOOD})
    plot.main([str(out), "--metrics=test_pass@1,entropy,regret"])
    assert os.path.getsize(out / "results.png") > 1000
    runs = plot.load_runs([str(out)])
    steps, responses, values = plot.curves(runs["good"], "entropy")  # a per-step key: every step's line
    assert list(steps) == [1, 2] and list(responses) == [10, 20] and values.shape == (3, 2)
    assert plot.plot_metrics(runs) == ["train_pass@1", "test_pass@1", "regret"]  # the defaults that are logged
    with pytest.raises(SystemExit) as e:
        plot.main([str(out), "--metrics=test_pass@1,nope"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "nope not in any run's log" in err and err.count("\n") == 1


def test_paired_curve_is_the_mean_difference_at_each_step(tmp_path):
    out = sweep_dir(tmp_path, {"base": BASE, "good": GOOD})
    runs = plot.load_runs([str(out)])
    steps, diff, half = plot.paired_curve(runs["good"], runs["base"], "test_pass@1")
    assert list(steps) == [0, 2] and diff == pytest.approx([0, 0.1166667], abs=1e-6)
    assert half == pytest.approx([0, 0.0717117], abs=1e-6)  # step 0: the same base policy, the same samples

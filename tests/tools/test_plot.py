"""plot.py on hand-made logs: paired differences and their t-interval equal a hand computation, one seed
gives n/a, the pipeline's order and references are kept, any logged key can be plotted."""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import logs
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
    runs = logs.load_runs([str(out)])
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
    runs = logs.load_runs([str(out)])
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
    runs = logs.load_runs([str(out)])
    steps, responses, values = plot.curves(runs["good"], "entropy")  # a per-step key: every step's line
    assert list(steps) == [1, 2] and list(responses) == [10, 20] and values.shape == (3, 2)
    assert plot.plot_metrics(runs) == ["train_pass@1", "test_pass@1", "regret"]  # the defaults that are logged
    with pytest.raises(SystemExit) as e:
        plot.main([str(out), "--metrics=test_pass@1,nope"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "nope not in any run's log" in err and err.count("\n") == 1


def test_paired_curve_is_the_mean_difference_at_each_step(tmp_path):
    out = sweep_dir(tmp_path, {"base": BASE, "good": GOOD})
    runs = logs.load_runs([str(out)])
    steps, diff, half = plot.paired_curve(runs["good"], runs["base"], "test_pass@1")
    assert list(steps) == [0, 2] and diff == pytest.approx([0, 0.1166667], abs=1e-6)
    assert half == pytest.approx([0, 0.0717117], abs=1e-6)  # step 0: the same base policy, the same samples


# -----------------------------------------------------------------------------
# bad input: one line and exit 2, or (damaged log lines) a warning, as train.py's resume reads a log; nothing lost

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def plot_cli(*argv):
    """plot.py as a user runs it, without matplotlib's figure: (exit code, stdout, stderr)."""
    program = ("import sys; sys.modules['matplotlib'] = None; sys.path.insert(0, 'tools'); import plot; "
               "plot.main()")
    p = subprocess.run([sys.executable, "-c", program, *map(str, argv)], cwd=ROOT, capture_output=True,
                       text=True)
    return p.returncode, p.stdout, p.stderr


def one_error_line(rc, err, *words):
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert all(w in err for w in words), err


def test_a_log_line_cut_by_a_kill_is_dropped_as_resume_drops_it(tmp_path):
    out = sweep_dir(tmp_path, {"base": BASE, "good": GOOD})
    rc, _, err = plot_cli(out)
    clean = rows_of(out / "results.md")
    with open(out / "good" / "seed1" / "log.jsonl", "a") as f:
        f.write('{"step": 3, "time": 3.0, "responses": 3')  # a kill mid-write: no newline, not JSON
    rc, _, err = plot_cli(out)
    assert rc == 0 and err == "", err  # a step that never finished: nothing to warn about
    assert rows_of(out / "results.md") == clean


def test_damaged_and_non_utf8_log_lines_are_skipped_with_one_warning(tmp_path):
    out = sweep_dir(tmp_path, {"base": BASE, "good": GOOD})
    plot_cli(out)
    clean = rows_of(out / "results.md")
    log = out / "good" / "seed1" / "log.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)  # steps 0, 1, 2
    bad = [b'{"step": 1, "time": 1.0, "responses": 1\xff0}\n',  # not UTF-8 in a number: not JSON
           b'[1, 2]\n', b'{"step": "1"}\n',  # JSON, but not a log line
           b'{"step": 1, "time": 1.0, "responses": 10, "note": "caf\xe9"}\n']  # not UTF-8 in a string: kept
    log.write_bytes(b"".join(lines[:2] + bad[:3] + lines[2:]))
    rc, _, err = plot_cli(out)
    assert rc == 0 and err == f"warning: {log}: skipped 3 damaged line(s)\n", err
    assert rows_of(out / "results.md") == clean
    assert [line["step"] for line in logs.read_log(str(log))] == [0, 1, 2]
    log.write_bytes(b"".join(lines[:2] + bad[3:] + lines[2:]))
    assert [line["step"] for line in logs.read_log(str(log))] == [0, 1, 1, 2]  # its numbers are intact


@pytest.mark.parametrize("text", ['[1, 2]', '{"entries": ["base", "good"', '"base"', '{"entries": "base"}',
                                  '{"references": {"good": ["base"]}}', b'{"baseline": "b\xe4se"}'])
def test_a_pipeline_json_that_is_not_sweep_pys_is_one_line(tmp_path, text):
    out = sweep_dir(tmp_path, {"base": BASE, "good": GOOD})
    (out / "pipeline.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    rc, _, err = plot_cli(out)
    one_error_line(rc, err, "pipeline.json is not a pipeline.json of sweep.py", "rewrite it")
    assert not (out / "results.md").exists()


def test_out_where_it_cannot_be_written_is_one_line(tmp_path):
    out = sweep_dir(tmp_path, {"base": BASE, "good": GOOD})
    rc, _, err = plot_cli(out, f"--out={tmp_path / 'no' / 'such' / 'r'}")
    one_error_line(rc, err, "does not exist", "create it or pass another --out")
    (tmp_path / "r.md").mkdir()  # found only when written: said in one line, and nothing is left behind
    one_error_line(*plot_cli(out, f"--out={tmp_path / 'r'}")[::2], "could not write", "r.md (Is a directory)")
    assert sorted(os.listdir(tmp_path)) == ["r.md", "sweep"]


def test_a_failed_write_keeps_the_previous_results_and_is_one_line(tmp_path, monkeypatch, capsys):
    """A full or read-only disk (the test runs as any user, even root: the write itself is made to fail)."""
    out = sweep_dir(tmp_path, {"base": BASE, "good": GOOD})
    plot.main([str(out)])
    before = (out / "results.md").read_text()
    real_open = open

    def full_disk(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode:
            f.close()  # created, as on a full disk, then the write fails
            raise OSError(28, "No space left on device")
        return f
    monkeypatch.setattr(plot, "open", full_disk, raising=False)
    with pytest.raises(SystemExit) as e:
        plot.main([str(out), "--baseline=good"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "No space left on device" in err
    assert (out / "results.md").read_text() == before
    assert sorted(os.listdir(out)) == ["base", "good", "results.md"]  # no temporary file left


def test_a_run_json_of_another_program_leaves_the_seed_unknown(tmp_path):
    write_run(tmp_path / "run", {0: (0.3, 0.2), 1: (0.4, 0.3)})
    for text in ('{"args": [1]}', '[1]', '{"args": ["--seed=x"]}', b'\xff'):
        (tmp_path / "run" / "run.json").write_bytes(text if isinstance(text, bytes) else text.encode())
        assert logs.run_seed(str(tmp_path / "run")) is None
    (tmp_path / "run" / "run.json").write_text('{"args": ["--seed=4"]}')
    assert logs.run_seed(str(tmp_path / "run")) == 4


def test_help_ends_its_sentences():
    p = subprocess.run([sys.executable, "tools/plot.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    description = p.stdout.split("\n\n")[1]
    assert p.returncode == 0 and description.rstrip().endswith("t-interval."), description


def drawn(runs, baseline, references=None):
    """(figure, [(legend box, axes box)] for each legend and each axes), as drawn on the canvas."""
    fig = plot.figure(runs, plot.plot_metrics(runs), baseline, references)
    fig.canvas.draw()
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return fig, [(leg.get_window_extent(), ax.get_window_extent()) for leg in legends for ax in fig.axes]


def test_figure_of_one_run_has_no_empty_column_and_legends_cover_no_axes(tmp_path):
    pytest.importorskip("matplotlib")
    write_run(tmp_path / "one", {0: (0.3, 0.2), 2: (0.4, 0.5)}, steps=range(1, 3))
    fig, boxes = drawn(logs.load_runs([str(tmp_path / "one")]), "one")
    assert len(fig.axes) == 3 * 2  # train, test pass@1 and regret x (steps, responses): no column of differences
    assert all(ax.lines for ax in fig.axes) and boxes and not any(a.overlaps(b) for a, b in boxes)
    out = sweep_dir(tmp_path, {"base": BASE, "good": GOOD, "other": BASE})
    fig, boxes = drawn(logs.load_runs([str(out)]), "base", {"other": "good"})
    assert len(fig.axes) == 3 * 3 and all(ax.lines for ax in fig.axes)
    assert boxes and not any(a.overlaps(b) for a, b in boxes)

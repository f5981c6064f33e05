"""
Tables and curves of train.py runs grouped by design choice: mean ± std over seeds, and each choice's paired
difference to its reference (the baseline) over the seeds both ran, with a 95% t-interval.

    python tools/plot.py out/sweep                  # a sweep dir: out/sweep/results.md (+ results.png)
    python tools/plot.py out/a out/b --out=cmp      # several runs: their order is the order given
    python tools/plot.py out/sweep --metrics=test_pass@1,entropy,response_len,regret

Which runs form a group (a design choice), and in what order: logs.py. A sweep dir's pipeline.json (written
by sweep.py) also names the baseline (its first entry) and any other reference an entry is compared with (e.g.
replay_64x4 with budget256_64x4).

Paired differences. Runs with the same seed share their evaluation randomness (samples are seeded per prompt
and step), so most of the evaluation noise cancels in the difference of two runs of one seed. For a choice G
and its reference R, d_s = G_s - R_s at the last step both evaluated, for each seed s both ran; the table
gives mean(d) and mean(d) ± t(0.975, k-1) * std(d) / sqrt(k) over the k seeds, "n/a" for one seed.

The figure needs matplotlib, which is optional: without it only the table is written.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: the code this tool drives
sys.path.insert(0, ROOT)

from machinery.cli import die, quiet_interrupt

quiet_interrupt(__name__)  # first: a Ctrl-C during the imports below ends with one line, not a traceback

import argparse
import math
import re

import numpy as np

from logs import EVAL_KEYS, load_runs, read_pipeline

METRICS = EVAL_KEYS  # the table's columns
# the figure's rows without --metrics, those some run logged (trained_pass@1: runs on a train_problems subset)
DEFAULT_PLOT = ("train_pass@1", "test_pass@1", "trained_pass@1", "regret")
# two-sided 95% quantiles of Student's t, t(0.975, df), for df = 1..30, 40, 60, 120 and the normal limit
T975 = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 6: 2.4469, 7: 2.3646, 8: 2.3060, 9: 2.2622,
        10: 2.2281, 11: 2.2010, 12: 2.1788, 13: 2.1604, 14: 2.1448, 15: 2.1314, 16: 2.1199, 17: 2.1098,
        18: 2.1009, 19: 2.0930, 20: 2.0860, 21: 2.0796, 22: 2.0739, 23: 2.0687, 24: 2.0639, 25: 2.0595,
        26: 2.0555, 27: 2.0518, 28: 2.0484, 29: 2.0452, 30: 2.0423, 40: 2.0211, 60: 2.0003, 120: 1.9799,
        math.inf: 1.9600}


def mean_std(x):
    """Mean and std over seeds (axis 0); the sample std (ddof=1) as papers report it, None for one seed."""
    x = np.asarray(x, dtype=float)
    return x.mean(0), (x.std(0, ddof=1) if len(x) > 1 else None)


def t975(df):
    """t(0.975, df): the table's value, or for a df between its entries the next smaller one's (wider)."""
    return T975[max(d for d in T975 if d <= df)]


def series(run, key):
    """{step: value} of a run's lines holding key (eval keys: its evaluations; per-step keys: every step)."""
    return {line["step"]: line[key] for line in run["lines"] if key in line}


def paired(group, ref, key):
    """The paired difference group - ref in key over the seeds both ran, at the last step every one of
    those runs logged it: dict(step, seeds, diffs (k,), mean, lo, hi), lo/hi None for one seed;
    None when no seed is shared or that step is 0 (both runs are still the base policy there)."""
    by_seed = {r["seed"]: r for r in ref if r["seed"] is not None}
    pairs = [(series(r, key), series(by_seed[r["seed"]], key)) for r in group if r["seed"] in by_seed]
    if not pairs:
        return None
    steps = set.intersection(*(set(a) & set(b) for a, b in pairs))
    if not steps or max(steps) == 0:
        return None
    step = max(steps)
    diffs = np.array([a[step] - b[step] for a, b in pairs], dtype=float)  # (k,)
    mean, k = diffs.mean(), len(diffs)
    half = t975(k - 1) * diffs.std(ddof=1) / math.sqrt(k) if k > 1 else None
    return dict(step=step, seeds=k, diffs=diffs, mean=mean, lo=None if half is None else mean - half,
                hi=None if half is None else mean + half)


def reference_of(name, runs, baseline, references):
    """The group `name` is compared with: its entry in references when that group is present, else the
    baseline; `name` itself (not compared) for the baseline and for an entry that references map to itself (a
    twin that serves only as another entry's reference)."""
    ref = (references or {}).get(name)
    return ref if ref in runs else baseline


def summarize(runs, baseline, references=None):
    """One row per group: name, seeds, (mean, std) over seeds of final and best train/test pass@1, the
    reference it is compared with and the paired differences to it (None for the reference itself), the time
    of the last log line (s: training and evaluations but not start-up), and responses sampled per point (1%)
    of test pass@1 gained since step 0 (None when some seed gained nothing); last_step: the step of the
    group's earliest last evaluation."""
    rows = []
    for name, group in runs.items():
        first, last = [r["evals"][0] for r in group], [r["evals"][-1] for r in group]
        gained = [b["test_pass@1"] - a["test_pass@1"] for a, b in zip(first, last)]
        row = dict(name=name, seeds=len(group), ref=reference_of(name, runs, baseline, references))
        for k in METRICS:
            row[f"final_{k}"] = mean_std([line[k] for line in last])
            row[f"best_{k}"] = mean_std([max(line[k] for line in r["evals"]) for r in group])
            row[f"paired_{k}"] = None if row["ref"] == name or row["ref"] not in runs else \
                paired(group, runs[row["ref"]], k)
        row["time"] = mean_std([line["time"] for line in last])
        row["last_step"] = min(line["step"] for line in last)
        row["per_point"] = None if min(gained) <= 0 else \
            mean_std([line["responses"] / (100 * g) for line, g in zip(last, gained)])
        rows.append(row)
    return rows


def cell(ms, scale=1.0, fmt=".1f"):
    """'mean ± std' of a (mean, std) pair, 'mean ± n/a' for one seed, 'n/a' for None."""
    if ms is None:
        return "n/a"
    mean, std = ms
    return f"{scale * mean:{fmt}} ± " + ("n/a" if std is None else f"{scale * std:{fmt}}")


def paired_cell(p, last_step, scale=100.0):
    """'+4.1 [+2.0, +6.2]' in points; 'n/a' for the interval of one seed; @step when not the row's last."""
    if p is None:
        return "n/a"
    text = f"{scale * p['mean']:+.1f} " + ("[n/a]" if p["lo"] is None else
                                          f"[{scale * p['lo']:+.1f}, {scale * p['hi']:+.1f}]")
    return text + (f" @{p['step']}" if p["step"] != last_step else "")


def table(rows, baseline):
    """The markdown table of summarize()'s rows, pass@1 in %."""
    head = ["design choice", "seeds", "final train", "best train", "final test", "best test", "vs",
            "Δ train (95% CI)", "Δ test (95% CI)", "train time (s)", "responses / point"]
    lines = [f"pass@1 in %, mean ± std over seeds. Δ: paired difference to the `vs` entry (baseline "
             f"`{baseline}` unless the pipeline pairs it with another) in points, mean over the seeds both "
             "ran and its 95% t-interval, at the last step both evaluated (@step when earlier than the row's "
             "own). Responses / point: responses sampled / test pass@1 points gained since step 0.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        compared = r["ref"] != r["name"]
        cells = [r["name"], str(r["seeds"])]
        cells += [cell(r[f"{w}_{k}"], 100) for k in METRICS for w in ("final", "best")]
        cells += [r["ref"] if compared else "—"]
        cells += [paired_cell(r[f"paired_{k}"], r["last_step"]) if compared else "—" for k in METRICS]
        cells += [cell(r["time"], fmt=".0f"), cell(r["per_point"], fmt=".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def percent(key):
    """Whether a metric is a fraction shown in %: pass@k, greedy pass@1, accuracies, coverage."""
    return bool(re.search(r"pass@|greedy|acc|coverage", key))


def curves(group, key):
    """(steps (K,), mean responses sampled (K,), values (S, K)) at the steps every seed logged key."""
    by_step = [{line["step"]: line for line in r["lines"] if key in line} for r in group]
    steps = sorted(set.intersection(*map(set, by_step)))
    shape = (len(group), len(steps))
    values = np.array([[b[s][key] for s in steps] for b in by_step], dtype=float).reshape(shape)
    responses = np.array([[b[s]["responses"] for s in steps] for b in by_step], dtype=float).reshape(shape)
    return np.array(steps), responses.mean(0), values


def paired_curve(group, ref, key):
    """(steps (K,), mean (K,), half-width (K,) or None) of the paired difference group - ref, at the steps
    every run of the shared seeds logged key; None when no seed or step is shared."""
    by_seed = {r["seed"]: series(r, key) for r in ref if r["seed"] is not None}
    pairs = [(series(r, key), by_seed[r["seed"]]) for r in group if r["seed"] in by_seed]
    steps = sorted(set.intersection(*(set(a) & set(b) for a, b in pairs))) if pairs else []
    if not steps:
        return None
    diffs = np.array([[a[s] - b[s] for s in steps] for a, b in pairs], dtype=float)  # (k, K)
    k = len(pairs)
    half = t975(k - 1) * diffs.std(0, ddof=1) / math.sqrt(k) if k > 1 else None
    return np.array(steps), diffs.mean(0), half


def figure(runs, metrics, baseline, references=None):
    """The figure: a row per metric; columns: vs step, vs responses sampled (log scale), and, when some group
    is compared, the paired difference to its reference with its 95% band. Mean over seeds, ± std shaded. The
    legend sits below the axes, never over a curve. Raises ImportError without matplotlib."""
    import matplotlib
    from matplotlib.figure import Figure  # not pyplot: no display, and nothing to close
    refs = {name: reference_of(name, runs, baseline, references) for name in runs}
    drawn = {(key, name) for key in metrics for name, group in runs.items()
             if all(series(r, key) for r in group)}
    pcs = {(key, name): pc for key, name in drawn if refs[name] != name and
           (pc := paired_curve(runs[name], runs[refs[name]], key)) is not None}
    cols = 3 if pcs else 2
    fig = Figure(figsize=(16 * cols / 3, 3.6 * len(metrics)))  # no empty column for a single run
    axes = fig.subplots(len(metrics), cols, squeeze=False)
    # tab20's light/dark pairs of one hue: sweep.py's replay pipeline lists each twin next to its replay entry
    colors = matplotlib.colormaps["tab10" if len(runs) <= 10 else "tab20"].colors
    positive = [c["responses"] for g in runs.values() for r in g for c in r["lines"]
                if c.get("responses", 0) > 0]
    for i, key in enumerate(metrics):
        scale = 100 if percent(key) else 1
        for g, (name, group) in enumerate(runs.items()):
            if (key, name) not in drawn:
                continue
            color = colors[g % len(colors)]
            steps, responses, values = curves(group, key)
            mean, std = mean_std(scale * values)  # (K,), (K,) or None
            for ax, x in zip(axes[i, :2], (steps, responses)):
                ax.plot(x, mean, color=color, label=f"{name} ({len(group)})")
                if std is not None:
                    ax.fill_between(x, mean - std, mean + std, color=color, alpha=0.15)
            if (key, name) in pcs:
                steps, diff, half = pcs[key, name]
                axes[i, 2].plot(steps, scale * diff, color=color)
                if half is not None:
                    axes[i, 2].fill_between(steps, scale * (diff - half), scale * (diff + half), color=color,
                                            alpha=.15)
        axes[i, 0].set_ylabel(key + (" (%)" if scale == 100 else ""))
        if cols == 3:
            axes[i, 2].set_ylabel(f"Δ {key}{' (points)' if scale == 100 else ''}")
            axes[i, 2].axhline(0, color="gray", lw=0.8)
        axes[i, 1].set_xscale("symlog", linthresh=min(positive, default=1))  # log, with step 0's 0 responses
        for ax in axes[i]:
            ax.grid(alpha=0.3)
    for ax, label in zip(axes[-1], ("step", "responses sampled (log scale)", "step")):
        ax.set_xlabel(label)
    if cols == 3:
        to = "baseline" if all(r in (n, baseline) for n, r in refs.items()) else "table's vs entry"
        axes[0, 2].set_title(f"paired difference to the {to}, 95% t-band over seeds", fontsize="medium")
    fig.tight_layout()
    # below the figure, outside every axes (savefig's bbox_inches="tight" keeps it in the image)
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0),
               ncol=min(len(runs), 4), title=f"design choice (seeds); baseline {baseline}", fontsize="small")
    return fig


def plot_metrics(runs, metrics=None):
    """The figure's rows: the keys asked for (each logged by some run), else DEFAULT_PLOT's logged ones."""
    logged = {k for g in runs.values() for r in g for line in r["lines"] for k in line}
    if not metrics:
        return [k for k in DEFAULT_PLOT if k in logged]
    missing = [k for k in metrics if k not in logged]
    if missing:
        numeric = sorted(k for k in logged if k not in ("step",))
        die(f"--metrics: {', '.join(missing)} not in any run's log; logged keys: {', '.join(numeric)}")
    return list(metrics)


def save(path, content):
    """Write path whole or not at all: content (text, or a matplotlib figure as PNG) goes to a temporary
    file that then replaces path, so a full or read-only disk leaves the previous file as it was; one line
    if it fails."""
    tmp = f"{path}.tmp"
    try:
        if isinstance(content, str):
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(content)
        else:
            content.savefig(tmp, format="png", dpi=110, bbox_inches="tight")  # "tight": the legend below
        os.replace(tmp, path)
    except OSError as e:
        if os.path.isfile(tmp):
            os.remove(tmp)
        die(f"could not write {path} ({e.strerror or e}); {path} is as it was: free some space or make its "
            f"directory writable, then run the same command again")


def write(runs, prefix, baseline, references=None, metrics=None):
    """prefix.md with the table (also printed) and prefix.png with the curves when matplotlib is installed."""
    text = table(summarize(runs, baseline, references), baseline)
    save(prefix + ".md", text)
    print(text + f"wrote {prefix}.md")
    try:
        fig = figure(runs, plot_metrics(runs, metrics), baseline, references)
    except ImportError:
        print(f"no figure: pip install matplotlib to get {prefix}.png")
        return
    save(prefix + ".png", fig)
    print(f"wrote {prefix}.png")


def main(argv=None):
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()), allow_abbrev=False)
    p.add_argument("paths", nargs="+", help="train.py out_dirs and/or sweep dirs, the baseline's first")
    p.add_argument("--out", default="",
                   help="output prefix (default: PATH/results for one path, else results)")
    p.add_argument("--baseline", default="",
                   help="group the others are compared with (default: a sweep dir's pipeline baseline, else "
                        "the first group)")
    p.add_argument("--metrics", default="",
                   help="comma-separated logged keys to plot (default: "
                        f"{','.join(DEFAULT_PLOT)}, those logged)")
    args = p.parse_args(argv)
    prefix = args.out or (os.path.join(args.paths[0], "results") if len(args.paths) == 1 else "results")
    runs = load_runs(args.paths)
    if not os.path.isdir(os.path.dirname(os.path.abspath(prefix))):  # other failed writes: save() says them
        die(f"--out={prefix!r}: its directory does not exist; create it or pass another --out")
    if not runs:
        die("no run has an evaluation in its log yet")
    pipeline = (read_pipeline(args.paths[0]) or {}) if len(args.paths) == 1 else {}
    baseline = args.baseline or pipeline.get("baseline") or next(iter(runs))
    if baseline not in runs:
        die(f"baseline {baseline!r} is not one of the groups: {', '.join(runs)}")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    write(runs, prefix, baseline, pipeline.get("references"), metrics)


if __name__ == "__main__":
    main()

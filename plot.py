"""
Tables and curves of train.py runs grouped by design choice, mean ± std over seeds.

    python plot.py out/sweep                          # a sweep dir: out/sweep/results.md (+ results.png)
    python plot.py out/a out/b --out=cmp --baseline=a

A run is an out_dir holding log.jsonl. Its group (design choice) is the name of its parent dir when the
run's own dir is named seedN, as sweep.py lays them out, else the name of its own dir. The figure needs
matplotlib, which is optional: without it only the table is written.
"""
import argparse
import glob
import json
import os
import re

import numpy as np

from configurator import die

# the minimalist baseline's names in sweep.py's pipelines: the default for --baseline when present
BASELINE_NAMES = ("none", "minimal", "rollouts_1", "budget256_256x1")
METRICS = ("train_pass@1", "test_pass@1")


def natural(s):
    """Sort key that puts rollouts_8 before rollouts_16 and seed2 before seed10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def find_logs(path):
    """The log.jsonl files under path: a run dir, a dir of runs (seedN or plain out_dirs), or a sweep dir."""
    for depth in ("", "*", os.path.join("*", "*")):
        logs = glob.glob(os.path.join(path, depth, "log.jsonl"))
        if logs:
            return sorted(logs, key=natural)
    return []


def load_runs(paths):
    """{group: [run, ...]}, groups in the order found; a run is dict(dir, evals: its log lines that have
    an evaluation, from the initial one at step 0 to the last). Runs with no evaluation yet are left out."""
    runs = {}
    for path in paths:
        logs = find_logs(path)
        if not logs:
            die(f"{path!r} holds no log.jsonl (give train.py out_dirs or a sweep dir)")
        for log in logs:
            run_dir = os.path.dirname(os.path.abspath(log))
            with open(log) as f:
                evals = [line for line in map(json.loads, f) if "test_pass@1" in line]
            if evals:
                own = os.path.basename(run_dir)
                group = os.path.basename(os.path.dirname(run_dir)) if re.fullmatch(r"seed\d+", own) else own
                runs.setdefault(group, []).append(dict(dir=run_dir, evals=evals))
    return runs


def mean_std(x):
    """Mean and std over seeds (axis 0); the sample std (ddof=1) as papers report it, 0 for one seed."""
    x = np.asarray(x, dtype=float)
    mean = x.mean(0)
    return mean, (x.std(0, ddof=1) if len(x) > 1 else 0 * mean)


def pick_baseline(runs, name=""):
    """The group the gains are measured against: `name`, else the minimalist baseline's, else the first."""
    if name and name not in runs:
        die(f"baseline {name!r} is not one of the groups: {', '.join(runs)}")
    return name or next((n for n in BASELINE_NAMES if n in runs), next(iter(runs)))


def summarize(runs, baseline):
    """One row per group: name, seeds, and (mean, std) over seeds of final and best train/test pass@1,
    the gain in final test pass@1 over the baseline's mean (None without baseline runs), the time of the
    last log line (s: training and evaluations but not start-up), and responses sampled per point (1%) of
    test pass@1 gained since step 0 (None when some seed gained nothing)."""
    base = np.mean([r["evals"][-1]["test_pass@1"] for r in runs[baseline]]) if baseline in runs else None
    rows = []
    for name, group in runs.items():
        first, last = [r["evals"][0] for r in group], [r["evals"][-1] for r in group]
        gained = [b["test_pass@1"] - a["test_pass@1"] for a, b in zip(first, last)]
        row = dict(name=name, seeds=len(group))
        for k in METRICS:
            row[f"final_{k}"] = mean_std([line[k] for line in last])
            row[f"best_{k}"] = mean_std([max(line[k] for line in r["evals"]) for r in group])
        mean, std = row["final_test_pass@1"]
        row["gain"] = None if base is None else (mean - base, std)  # mean - base: exactly 0 for the baseline
        row["time"] = mean_std([line["time"] for line in last])
        row["per_point"] = None if min(gained) <= 0 else \
            mean_std([line["responses"] / (100 * g) for line, g in zip(last, gained)])
        rows.append(row)
    return rows


def cell(ms, scale=1.0, fmt=".1f"):
    """'mean ± std' of a (mean, std) pair, 'n/a' for None; a sign flag in fmt (+.1f) is for the mean only."""
    return "n/a" if ms is None else f"{scale * ms[0]:{fmt}} ± {scale * ms[1]:{fmt.lstrip('+')}}"


def table(rows, baseline):
    """The markdown table of summarize()'s rows, pass@1 in %."""
    head = ["design choice", "seeds", "final train", "best train", "final test", "best test",
            f"gain vs {baseline}", "train time (s)", "responses / point"]
    lines = [f"pass@1 in %, mean ± std over seeds. Gain: final test pass@1 minus the mean of baseline "
             f"`{baseline}`'s. Responses / point: responses sampled / test pass@1 points gained since step 0.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["name"], str(r["seeds"])] + [cell(r[f"{w}_{k}"], 100) for k in METRICS for w in ("final", "best")]
        cells += [cell(r["gain"], 100, "+.1f"), cell(r["time"], fmt=".0f"), cell(r["per_point"], fmt=".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def curves(group, key):
    """(steps (K,), mean responses sampled (K,), values (S, K)) at the eval steps every seed reached."""
    by_step = [{line["step"]: line for line in r["evals"]} for r in group]
    steps = sorted(set.intersection(*map(set, by_step)))
    values = np.array([[b[s][key] for s in steps] for b in by_step])
    responses = np.array([[b[s]["responses"] for s in steps] for b in by_step]).mean(0)
    return np.array(steps), responses, values


def figure(runs, path):
    """2x2 PNG: train and test pass@1 (rows) vs step and vs responses sampled (columns), one line per group,
    mean ± std over seeds shaded. Raises ImportError without matplotlib."""
    import matplotlib
    matplotlib.use("Agg")  # write files, no display
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharey="row")
    for g, (name, group) in enumerate(runs.items()):
        for i, key in enumerate(METRICS):
            steps, responses, values = curves(group, key)
            mean, std = mean_std(100 * values)  # (K,), (K,)
            for ax, x in zip(axes[i], (steps, responses)):
                ax.plot(x, mean, color=f"C{g}", label=f"{name} ({len(group)})")
                ax.fill_between(x, mean - std, mean + std, color=f"C{g}", alpha=0.2)
    for i, key in enumerate(METRICS):
        axes[i, 0].set_ylabel(f"{key} (%)")
        for ax in axes[i]:
            ax.grid(alpha=0.3)
    axes[1, 0].set_xlabel("step")
    axes[1, 1].set_xlabel("responses sampled (compute-matched)")
    axes[0, 0].legend(title="design choice (seeds)", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(runs, prefix, baseline):
    """prefix.md with the table (also printed) and prefix.png with the curves when matplotlib is installed."""
    text = table(summarize(runs, baseline), baseline)
    with open(prefix + ".md", "w") as f:
        f.write(text)
    print(text + f"wrote {prefix}.md")
    try:
        figure(runs, prefix + ".png")
        print(f"wrote {prefix}.png")
    except ImportError:
        print(f"no figure: pip install matplotlib to get {prefix}.png")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1], allow_abbrev=False)
    p.add_argument("paths", nargs="+", help="train.py out_dirs and/or sweep dirs")
    p.add_argument("--out", default="", help="output prefix (default: PATH/results for one path, else results)")
    p.add_argument("--baseline", default="", help=f"group for the gain column (default: {'/'.join(BASELINE_NAMES)} "
                                                  "if present, else the first)")
    args = p.parse_args(argv)
    runs = load_runs(args.paths)
    if not runs:
        die("no run has an evaluation in its log yet")
    prefix = args.out or (os.path.join(args.paths[0], "results") if len(args.paths) == 1 else "results")
    write(runs, prefix, pick_baseline(runs, args.baseline))


if __name__ == "__main__":
    main()

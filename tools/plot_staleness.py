"""
The staleness pipeline by K (tools/pipelines.py; machinery/stale.py): for each arm (the minimalist baseline or
GRPO at 8 rollouts; bare, with PPO's clip, TIS or M2PO), the learning each K costs against the time it saves.

    python tools/sweep.py staleness_minimal --out=out/stale && python tools/plot_staleness.py out/stale
    python tools/plot_staleness.py out/staleness --out=assets/results/staleness

The table, per arm and K: final test pass@1 (mean ± std over seeds); its paired difference to the arm's K = 0
(plot.paired: the seeds both ran, 95% t-interval); mismatch_kl averaged over the steps (k3 of the sampler's
log-probs against pi_old, the trainer's policy at the step's start); and the clock of the training steps from
the logged sample_s and update_s (evaluations left out). In turn, sample + update: what this loop took.
Overlapped, max(sample, update): what a pipeline whose sampler runs beside the trainer, on its own device at
the same speed, would take; it needs K >= 1 (step t+1 is sampled while step t trains), and a larger K overlaps
no more here: it only absorbs steps of uneven length. K = 0 cannot overlap. The clock's unit is a synchronous
step: each step counts max / (sample + update) at K >= 1, 1 at K = 0, a ratio within the step, so that other
work slowing the machine, which stretches both phases, does not move it (the seconds it also gives do).
The figure, a row per arm: test pass@1 against steps; mismatch_kl against steps (log scale); test pass@1
against the clock. A curve per K, the mean over seeds (± std shaded for pass@1).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: the code this tool drives
sys.path.insert(0, ROOT)

from machinery.cli import die, quiet_interrupt

quiet_interrupt(__name__)  # first: a Ctrl-C during the imports below ends with one line, not a traceback

import argparse
import re

import numpy as np

from logs import load_runs
from plot import cell, mean_std, paired, paired_cell, save

KL_BLOCK = 5  # the figure's mismatch_kl: means over blocks of this many steps


def arm_and_k(name):
    """An entry's arm and staleness: minimal_tis_stale4 -> (minimal_tis, 4), minimal -> (minimal, 0)."""
    arm, k = re.fullmatch(r"(.*?)(?:_stale(\d+))?", name).groups()
    return arm, int(k or 0)


def by_arm(runs):
    """{arm: {K: runs}}, arms in the runs' order, each arm's K ascending."""
    arms = {}
    for name, group in runs.items():
        arm, k = arm_and_k(name)
        arms.setdefault(arm, {})[k] = group
    return {arm: dict(sorted(ks.items())) for arm, ks in arms.items()}


def phases(run):
    """(steps (S,), sample_s (S,), update_s (S,)) of a run's training steps."""
    lines = [line for line in run["lines"] if "sample_s" in line and "update_s" in line]
    return tuple(np.array([line[k] for line in lines], dtype=float) for k in ("step", "sample_s", "update_s"))


def clock(run, k):
    """(steps (S + 1,), clock (S + 1,)) from step 0: the run's cumulative clock in synchronous steps, each
    step max(sample, update) / (sample + update) at K >= 1, 1 at K = 0 (the module's docstring)."""
    steps, sample, update = phases(run)
    share = np.maximum(sample, update) / np.maximum(sample + update, 1e-9) if k else np.ones_like(steps)
    return np.concatenate([[0], steps]), np.cumsum(np.concatenate([[0.0], share]))


def kl_series(run):
    """{step: mismatch_kl} of a run's training steps."""
    return {line["step"]: line["mismatch_kl"] for line in run["lines"] if "mismatch_kl" in line}


def table(arms):
    """The markdown table: a row per arm and K."""
    head = ["arm", "K", "seeds", "final test", "Δ test vs K = 0 (95% CI)", "mismatch_kl", "cut (%)", "sampling (s)",
            "update (s)", "in turn (s)", "overlapped (s)", "clock per step"]
    lines = ["test pass@1 in %, mean ± std over seeds; Δ: paired difference to the arm's K = 0 in points over "
             "the seeds both ran, at the last step both evaluated. mismatch_kl: mean over steps. Cut: is_cut, the "
             "tokens the correction truncated (TIS) or masked (MIS, M2PO), in % of the trained ones, mean over "
             "steps. Seconds: sums "
             "over the training steps of sample_s, update_s, their sum (in turn) and their max (overlapped: an "
             "asynchronous pipeline's, sampler beside the trainer, which needs K >= 1). Clock per step: the "
             "mean over steps of max / sum at K >= 1, 1 at K = 0, in synchronous steps.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, ks in arms.items():
        zero = ks.get(0)
        for k, group in ks.items():
            last = [r["evals"][-1] for r in group]
            p = paired(group, zero, "test_pass@1") if zero and k else None
            kl = [np.mean(list(kl_series(r).values())) for r in group]
            cut = [[line["is_cut"] for line in r["lines"] if "is_cut" in line] for r in group]
            sample, update = ([phases(r)[i] for r in group] for i in (1, 2))
            seconds = [[x.sum() for x in sample], [x.sum() for x in update],
                       [(a + b).sum() for a, b in zip(sample, update)],
                       [np.maximum(a, b).sum() for a, b in zip(sample, update)]]
            per_step = mean_std([clock(r, k)[1][-1] / len(phases(r)[0]) for r in group])
            lines.append("| " + " | ".join([
                arm, str(k), str(len(group)), cell(mean_std([line["test_pass@1"] for line in last]), 100),
                paired_cell(p, min(line["step"] for line in last)) if k else "—",
                cell(mean_std(kl), fmt=".1e"), cell(mean_std([np.mean(c) for c in cut]), 100, ".2f")
                if all(cut) else "—",
                *(cell(mean_std(x), fmt=".0f") for x in seconds), cell(per_step, fmt=".2f")]) + " |")
    return "\n".join(lines) + "\n"


def figure(arms):
    """The figure: a row per arm, three columns (the module's docstring). Raises ImportError without
    matplotlib."""
    import matplotlib
    from matplotlib.figure import Figure
    ks = sorted({k for group in arms.values() for k in group})
    colors = dict(zip(ks, matplotlib.colormaps["viridis"](np.linspace(0, 0.9, len(ks)))))
    fig = Figure(figsize=(16, 3.4 * len(arms)))
    axes = fig.subplots(len(arms), 3, squeeze=False)
    for row, (arm, group_by_k) in zip(axes, arms.items()):
        lags = []  # the mean mismatch_kl of each K >= 1 from step 2 on (step 1 samples the initial policy)
        for k, group in group_by_k.items():
            evals = [{line["step"]: line["test_pass@1"] for line in r["evals"]} for r in group]
            steps = sorted(set.intersection(*(set(e) for e in evals)))
            mean, std = mean_std([[100 * e[s] for s in steps] for e in evals])
            kls = [kl_series(r) for r in group]
            kl_steps = sorted(set.intersection(*(set(x) for x in kls)))
            clocks = [dict(zip(*clock(r, k))) for r in group]
            at = np.mean([[c[s] for s in steps] for c in clocks], axis=0)
            for ax, x in ((row[0], steps), (row[2], at)):
                ax.plot(x, mean, color=colors[k], label=f"K = {k}")
                if std is not None:
                    ax.fill_between(x, mean - std, mean + std, color=colors[k], alpha=0.15)
            kl = np.mean([[x[s] for s in kl_steps] for x in kls], axis=0)
            n = len(kl) // KL_BLOCK * KL_BLOCK  # block means: the per-step values are noisy
            row[1].plot(np.reshape(kl_steps[:n], (-1, KL_BLOCK)).mean(1), kl[:n].reshape(-1, KL_BLOCK).mean(1),
                        color=colors[k])
            lags += [kl[1:].mean()] if k and len(kl) > 1 else []
        row[0].set_ylabel(f"{arm}\ntest pass@1 (%)")
        row[1].set_ylabel(f"mismatch_kl ({KL_BLOCK}-step means)")
        row[1].set_yscale("log")
        if lags:  # K = 0's rounding (~1e-13 in fp32) would flatten the K >= 1 curves: left below the axis
            row[1].set_ylim(bottom=min(lags) / 10)
        row[2].set_ylabel("test pass@1 (%)")
        for ax in row:
            ax.grid(alpha=0.3)
    for ax, label in zip(axes[-1], ("step", "step", "clock in synchronous steps (overlapped at K >= 1)")):
        ax.set_xlabel(label)
    fig.tight_layout()
    fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0),
               ncol=len(ks), title="staleness K (mismatch_kl at K = 0 is rounding, below the axis)",
               fontsize="small")
    return fig


def main(argv=None):
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()), allow_abbrev=False)
    p.add_argument("path", help="the sweep dir of a staleness pipeline (or a dir of its entries' run dirs)")
    p.add_argument("--out", default="", help="output prefix (default: PATH/staleness): .md and .png")
    args = p.parse_args(argv)
    prefix = args.out or os.path.join(args.path, "staleness")
    if not os.path.isdir(os.path.dirname(os.path.abspath(prefix))):
        die(f"--out={prefix!r}: its directory does not exist; create it or pass another --out")
    arms = by_arm(load_runs([args.path]))
    if not any(k for ks in arms.values() for k in ks):
        die(f"{args.path} holds no run with staleness (entries named ARM_staleK, as in tools/pipelines.py)")
    text = table(arms)
    save(prefix + ".md", text)
    print(text + f"wrote {prefix}.md")
    try:
        save(prefix + ".png", figure(arms))
        print(f"wrote {prefix}.png")
    except ImportError:
        print(f"no figure: pip install matplotlib to get {prefix}.png")


if __name__ == "__main__":
    main()

"""
Sweeps of design choices x seeds through train.py, then their table and curves (plot.py).

    python sweep.py advantage                     # CPU: config/sweep_cpu.py's budget, 3 seeds, 2 runs at a time
    python sweep.py rollouts --base=config/qwen2.5-0.5b_gsm8k.py --jobs=1   # one GPU: one run at a time
    python sweep.py advantage --base=config/qwen2.5-0.5b_gsm8k.py --gpus=0,1,2,3   # 4 runs at a time, a GPU each
    python sweep.py config/minimal.py,config/rloo.py --seeds=2 --max_steps=50

PIPELINE is a name in PIPELINES or comma-separated config files (an entry each, named after the file). As in the
paper, a pipeline starts from the minimalist baseline and changes one design choice per entry; the table's gains
are measured against its first entry, or --baseline=NAME. Each run is `train.py BASE ENTRY --seed=S EXTRA`, where
EXTRA are this command's other --key=value args. Run this from the repo root: config paths are relative to it.

Layout: {out}/{entry}/seed{S}/ is the run's out_dir (log.jsonl, ckpt/, train.out: its command, stdout and stderr,
run.json: its args and config files' text, done.json: the same, written when it exits 0), and {out}/results.md
(+ results.png) sums up the pipeline. A run whose done.json matches its args and config files' text, and whose
log ends with an evaluation, is finished and skipped, so a stopped sweep goes on where it was; a run stopped
midway resumes from its last checkpoint (train.py --init_from=resume) if its run.json matches, else starts over.
"""
import argparse
import json
import os
import queue
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import plot
from configurator import die

TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
PIPELINES = {
    "rollouts": {f"rollouts_{n}": [f"config/rollouts_{n}.py"] for n in (1, 8, 16, 32, 64)},
    # 256 responses per step: from the minimalist 256 prompts x 1 rollout to 1 prompt x 256 rollouts
    "budget256": {f"budget256_{b}x{256 // b}": [f"config/budget256_{b}x{256 // b}.py"]
                  for b in (256, 128, 64, 32, 16, 8, 4, 2, 1)},
    "advantage": {"none": ["config/minimal.py"], "grpo": ["config/grpo_8rollouts.py"], "dr_grpo": ["config/dr_grpo.py"],
                  "rloo": ["config/rloo.py"], "batch": ["config/reinforce_pp.py"],
                  "extra": ["config/extra_sampling.py"], "replay": ["config/replay.py"]},
    # GRPO's advantage with each loss aggregation; token_mean is grpo_8rollouts.py's own
    "loss": {agg: ["config/grpo_8rollouts.py", f"--loss_agg={agg}"]
             for agg in ("token_mean", "seq_mean_token_mean", "seq_sum_norm")},
}
# every distinct setting once: rollouts_1 is "none", budget256_32x8 is rollouts_8, token_mean is "grpo"
SAME_AS_ANOTHER = ("rollouts_1", "budget256_32x8", "token_mean")
PIPELINES["all"] = {name: cfg for entries in list(PIPELINES.values()) for name, cfg in entries.items()
                    if name not in SAME_AS_ANOTHER}
PRINT_LOCK = threading.Lock()  # runs report from worker threads; keep their lines whole


def say(msg):
    with PRINT_LOCK:
        print(msg, flush=True)


def pipeline_entries(spec):
    """{entry name: [config files and --key=value overrides]} of a pipeline name or comma-separated configs."""
    if spec in PIPELINES:
        return PIPELINES[spec]
    files = spec.split(",")
    if not all(f.endswith(".py") for f in files):
        die(f"unknown pipeline {spec!r}: one of {', '.join(PIPELINES)}, or comma-separated config files")
    entries = {os.path.basename(f)[:-3]: [f] for f in files}
    if len(entries) < len(files):
        die(f"config files in {spec!r} must have different names: they name the entries' dirs")
    return entries


def fingerprint(args):
    """What makes two runs the same: train.py's args (but out_dir) and the text of the config files among them."""
    configs = {}
    for a in args:
        if not a.startswith("--"):
            try:
                with open(a) as f:
                    configs[a] = f.read()
            except OSError:
                die(f"config file {a!r} not found (run sweep.py from the repo root)")
    return dict(args=args, configs=configs)


def final_line(run_dir):
    """The last line of a run's log as a dict; {} when there is none."""
    try:
        with open(os.path.join(run_dir, "log.jsonl")) as f:
            lines = f.read().splitlines()
        return json.loads(lines[-1]) if lines else {}
    except (OSError, ValueError):
        return {}


def read_json(path):
    """A JSON file's content; None when it is missing or cut short."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def has_checkpoint(run_dir):
    """Whether train.py --init_from=resume finds a checkpoint there (ckpt.old survives a crash mid-swap)."""
    return any(os.path.exists(os.path.join(run_dir, d, "train_state.pt")) for d in ("ckpt", "ckpt.old"))


def finished(run):
    """The done.json of a run that exited 0 with these same args and configs, and logged its last evaluation."""
    done = read_json(os.path.join(run["dir"], "done.json")) or {}
    return done if done.get("fingerprint") == run["fingerprint"] and "test_pass@1" in final_line(run["dir"]) \
        else None


def run_one(run):
    """Train one run in a subprocess unless it is finished; report it in one line; True if it is finished."""
    tag = f"[{run['index']}] {run['name']} seed{run['seed']}"
    done_path = os.path.join(run["dir"], "done.json")
    done = finished(run)
    if done:
        say(f"{tag}: skip, finished in {done['wall_s']:.0f}s, test pass@1 {final_line(run['dir'])['test_pass@1']:.3f}")
        return True
    os.makedirs(run["dir"], exist_ok=True)
    if os.path.exists(done_path):
        os.remove(done_path)  # another command's: if this run stops midway, it must not look finished
    resume = has_checkpoint(run["dir"]) and read_json(os.path.join(run["dir"], "run.json")) == run["fingerprint"]
    with open(os.path.join(run["dir"], "run.json"), "w") as f:
        json.dump(run["fingerprint"], f)
    cmd = [sys.executable, TRAIN, *run["args"], f"--out_dir={run['dir']}", *(["--init_from=resume"] * resume)]
    gpu = run["free_gpus"].get() if run["free_gpus"] else None  # held for the run; a job per GPU: never waits
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu) if gpu is not None else None  # the run sees that GPU only
    say(f"{tag}: {'resume' if resume else 'start'}" + (f" on GPU {gpu}" if gpu is not None else ""))
    t0 = time.time()
    try:
        with open(os.path.join(run["dir"], "train.out"), "a" if resume else "w") as out:
            out.write(f"$ {f'CUDA_VISIBLE_DEVICES={gpu} ' if gpu is not None else ''}{shlex.join(cmd)}\n")
            out.flush()
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    finally:
        if gpu is not None:
            run["free_gpus"].put(gpu)
    wall = time.time() - t0
    test = final_line(run["dir"]).get("test_pass@1")
    if rc != 0 or test is None:
        say(f"{tag}: FAILED (exit {rc}) after {wall:.0f}s, see {os.path.join(run['dir'], 'train.out')}")
        return False
    with open(done_path, "w") as f:
        json.dump(dict(fingerprint=run["fingerprint"], wall_s=round(wall, 1)), f)
    say(f"{tag}: done in {wall:.0f}s, test pass@1 {test:.3f}")
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1], allow_abbrev=False,
                                epilog="other --key=value args are passed to every train.py run")
    p.add_argument("pipeline", help=f"{' | '.join(PIPELINES)} | comma-separated config files")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per entry")
    p.add_argument("--base", default="config/sweep_cpu.py",
                   help="model/data config applied before each entry's ('' for none)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time")
    p.add_argument("--gpus", default="", help="comma-separated GPU ids: a run on each at a time (sets --jobs)")
    p.add_argument("--out", default="out/sweep")
    p.add_argument("--baseline", default="", help="entry the gains are measured against (default: the first)")
    args, extra = p.parse_known_args(argv)
    entries = pipeline_entries(args.pipeline)
    for a in extra:
        if not (a.startswith("--") and "=" in a) or a.split("=")[0] in ("--seed", "--out_dir"):
            die(f"{a!r}: extra args must be train.py --key=value overrides other than --seed (use --seeds) "
                "and --out_dir (use --out)")
    if args.seeds < 1 or args.jobs < 1:
        die("--seeds and --jobs must be at least 1")
    if args.baseline and args.baseline not in entries:
        die(f"--baseline={args.baseline} is not an entry of the pipeline: {', '.join(entries)}")
    base = [args.base] if args.base else []
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    free_gpus = queue.Queue() if gpus else None  # the GPU ids no run holds now
    for g in gpus:
        free_gpus.put(g)
    args.jobs = len(gpus) or args.jobs
    # seed-major, so that every entry has a seed early on; numbered in that order
    runs = [dict(name=name, seed=s, dir=os.path.join(args.out, name, f"seed{s}"), free_gpus=free_gpus,
                 args=[*base, *cfg, f"--seed={s}", *extra]) for s in range(args.seeds) for name, cfg in entries.items()]
    for i, run in enumerate(runs, 1):
        run.update(index=f"{i}/{len(runs)}", fingerprint=fingerprint(run["args"]))
    pool = ThreadPoolExecutor(args.jobs)
    try:
        ok = list(pool.map(run_one, runs))
    except KeyboardInterrupt:
        pool.shutdown(cancel_futures=True)  # the running train.py processes got the Ctrl-C too; start no more
        die("interrupted: run the same command again to go on where it stopped")
    pool.shutdown()
    good = [r["dir"] for name in entries for r, fine in zip(runs, ok) if fine and r["name"] == name]
    if good:
        plot.write(plot.load_runs(good), os.path.join(args.out, "results"), args.baseline or next(iter(entries)))
    failed = [f"{r['name']}/seed{r['seed']}" for r, fine in zip(runs, ok) if not fine]
    if failed:
        print(f"error: {len(failed)} of {len(runs)} runs failed: {', '.join(failed)} (see their train.out)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

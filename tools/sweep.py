"""
The papers' experiment pipelines: design choices x seeds through train.py, then their table and curves.

    python tools/sweep.py rollouts           # CPU: config/sweep_cpu.py's budget, 3 seeds, 2 runs at a time
    python tools/sweep.py rollouts --base=config/paper/qwen2.5-0.5b_gsm8k.py --jobs=1   # one GPU, in turn
    python tools/sweep.py budget256 --base=config/paper/qwen2.5-0.5b_gsm8k.py --gpus=0,1,2,3   # a run per GPU
    python tools/sweep.py config/minimal.py,config/rloo.py --seeds=2 --max_steps=50

PIPELINE is a name in pipelines.py (the paper's grids rollouts, budget256, batch, extra, replay; the sibling
paper's one_problem; nanoRFT's advantage, loss, precision, top_p; all: each distinct setting once), or
comma-separated config files (an entry each, named after the file). A pipeline starts from its baseline (its
first entry) and changes one design choice per entry; plot.py compares each entry with the baseline, or with
the entry pipelines.REFERENCES pairs it with, seed by seed. Each run is `train.py BASE ENTRY [CPU steps]
--seed=S EXTRA`, where EXTRA are this command's other --key=value args, and [CPU steps] cuts an expensive
entry's max_steps on the CPU base (pipelines.CPU_STEPS). It runs from any directory: a config path is read
from the working directory, else from the repo root (pipelines.py's config/...); --out is the working
directory's.

Layout: {out}/pipeline.json (entry order, baseline, references: plot.py reads them), {out}/{entry}/seed{S}/ is
the run's out_dir (log.jsonl, ckpt/, train.out: its command, stdout and stderr, run.json: its args and config
files' text, done.json: the same, written when it exits 0), and {out}/results.md (+ results.png) sums up the
pipeline. A run whose done.json matches its args and config files' text, and whose log ends with an
evaluation, is finished and skipped, so a stopped sweep goes on where it was; a run stopped midway resumes
from its last checkpoint (train.py --init_from=resume) if its run.json matches, else starts over
(--overwrite=True). Args that train.py lets a resume change (checkpoint.SAFE_TO_CHANGE: --eval_batch_size,
--device, ...) are not part of the match, but --max_steps is: a longer one resumes a finished run. A finished
run of other settings is never replaced unless --rerun names its entry: the sweep stops first, in one line.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: the code this tool drives
sys.path.insert(0, ROOT)

from configurator import read_config
from machinery.cli import die, portable_path, quiet_interrupt

quiet_interrupt(__name__)  # first: a Ctrl-C during the imports below ends with one line, not a traceback

import argparse
import json
import queue
import re
import shlex
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from machinery import checkpoint
from pipelines import CPU_BASE, CPU_STEPS, PIPELINES, REFERENCES
import plot

TRAIN = os.path.join(ROOT, "train.py")
SWEEP_FILES = {"run.json", "train.out", "done.json"}  # what sweep.py itself writes in a run's dir
# --key=value args left out when two runs are compared: those a resume may change (train.py's own list), and
# for a finished run, which ran to its max_steps, those but max_steps (a longer one resumes it)
RESUMABLE = frozenset(checkpoint.SAFE_TO_CHANGE)
SAME_RESULT = RESUMABLE - {"max_steps"}
INCLUDE = re.compile(r"""^\s*include\(\s*["']([^"']+)["']\s*\)""", re.M)  # configurator's include("file")
PRINT_LOCK = threading.Lock()  # runs report from worker threads; keep their lines whole


def say(msg):
    with PRINT_LOCK:
        print(msg, flush=True)


def pipeline_entries(spec):
    """{entry name: [config files and --key=value overrides]} of a pipeline name or comma-separated files."""
    if spec in PIPELINES:
        return PIPELINES[spec]
    files = spec.split(",")
    if not all(f.endswith(".py") for f in files):
        die(f"unknown pipeline {spec!r}: one of {', '.join(PIPELINES)}, or comma-separated config files")
    entries = {os.path.basename(f)[:-3]: [f] for f in files}
    if len(entries) < len(files):
        die(f"config files in {spec!r} must have different names: they name the entries' dirs")
    return entries


def config_path(path):
    """The file a config path names: path from the working directory, else the repo's own copy of a relative
    path (the pipelines' config/... from any directory, as checkpoint.bundled does for assets/)."""
    mine = os.path.join(ROOT, path)
    return mine if not os.path.exists(path) and not os.path.isabs(path) and os.path.isfile(mine) else path


def fingerprint(args):
    """What a run is: train.py's args (but out_dir) and the text of the config files among them, and of the
    files they include(), read as train.py reads them (one line if one is missing or not UTF-8). A file is
    recorded under its path as given, wherever config_path found it: the same record from any directory."""
    configs = {}
    todo = [(a, config_path(a), None) for a in args if not a.startswith("--")]  # (name, file, includer's name)
    while todo:
        name, path, parent = todo.pop(0)
        if name in configs:
            continue
        where = f"config file {name!r}" + (f" (included from {parent!r})" if parent else "")
        configs[name] = read_config(path, where, missing=f" in the working directory or the repo ({ROOT})")
        todo += [(os.path.join(os.path.dirname(name), inc), os.path.join(os.path.dirname(path), inc), name)
                 for inc in INCLUDE.findall(configs[name])]  # include() reads beside the file that includes it
    return dict(args=args, configs=configs)


def experiment(fp, ignore):
    """A fingerprint without the --key=value args whose key is in ignore: what two runs must share to be the
    same; None for what is not a fingerprint (a run.json or done.json cut short or another program's)."""
    if not (isinstance(fp, dict) and isinstance(fp.get("args"), list) and isinstance(fp.get("configs"), dict)
            and all(isinstance(a, str) for a in fp["args"])):
        return None
    keep = [a for a in fp["args"] if not a.startswith("--") or a[2:].partition("=")[0] not in ignore]
    return dict(args=keep, configs=fp["configs"])


def same(a, b, ignore):
    return experiment(a, ignore) is not None and experiment(a, ignore) == experiment(b, ignore)


def changes(old, new):
    """What differs from the fingerprint old to new, in a few words."""
    a, b = experiment(old, SAME_RESULT), experiment(new, SAME_RESULT)
    if a is None:
        return "its done.json does not say which (damaged or another program's)"
    words = [f"{' '.join(x for x in a['args'] if x not in b['args']) or '(none)'} -> "
             f"{' '.join(x for x in b['args'] if x not in a['args']) or '(none)'}"]
    words += [f"{path} edited" for path, text in b["configs"].items() if a["configs"].get(path, text) != text]
    return "; ".join(words)


def final_test(run_dir):
    """test pass@1 of the last line of a run's log when that line is an evaluation, else None (no log, or its
    last line is a step's, cut short, not UTF-8 or another program's)."""
    try:
        with open(os.path.join(run_dir, "log.jsonl"), encoding="utf-8") as f:
            lines = f.read().splitlines()
        test = json.loads(lines[-1]).get("test_pass@1") if lines else None
    except (OSError, ValueError, AttributeError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return test if type(test) in (int, float) else None


def read_json(path):
    """A JSON file's object; None when it is missing, cut short, not UTF-8 or not an object."""
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (OSError, ValueError, RecursionError):
        return None
    return content if isinstance(content, dict) else None


def has_checkpoint(run_dir):
    """Whether train.py --init_from=resume finds a whole checkpoint there (ckpt, or ckpt.old after a crash
    mid-swap), by train.py's own test: a damaged one would fail every retry."""
    return checkpoint.last(run_dir) is not None


def done_record(run_dir):
    """The done.json of a run that exited 0 and whose log ends with an evaluation (any args), else None."""
    done = read_json(os.path.join(run_dir, "done.json"))
    return done if done is not None and final_test(run_dir) is not None else None


def finished(run):
    """The done.json of a finished run of these same args and configs (but SAME_RESULT's), else None."""
    done = done_record(run["dir"])
    fresh = done is not None and same(done.get("fingerprint"), run["fingerprint"], SAME_RESULT)
    return done if fresh else None


def replaced(run):
    """Whether starting this run would replace a finished run of other settings (and not resume it)."""
    done = done_record(run["dir"])
    return done is not None and not finished(run) and not resumable(run)


def resumable(run):
    """Whether the run's checkpoint is one of these args and configs (but RESUMABLE's): train.py resumes it."""
    started = read_json(os.path.join(run["dir"], "run.json"))
    return has_checkpoint(run["dir"]) and same(started, run["fingerprint"], RESUMABLE)


def run_one(run):
    """Train one run in a subprocess unless it is finished; report it in one line; True if it is finished."""
    tag = f"[{run['index']}] {run['name']} seed{run['seed']}"
    done_path = os.path.join(run["dir"], "done.json")
    done = finished(run)
    if done:
        wall = done.get("wall_s")
        say(f"{tag}: skip, finished" + (f" in {wall:.0f}s" if type(wall) in (int, float) else "") +
            f", test pass@1 {final_test(run['dir']):.3f}")
        return True
    try:
        os.makedirs(run["dir"], exist_ok=True)
        if os.path.exists(done_path):
            os.remove(done_path)  # another command's: if this run stops midway, it must not look finished
    except OSError as e:
        die(f"cannot write the run dir {run['dir']} ({e.strerror}); make --out writable or pass another --out")
    resume = resumable(run)
    # starting over where a run was (other args, or stopped before its first checkpoint; main() stopped before
    # replacing a finished run unless --rerun named it): say so to train.py, which refuses to replace a run
    over = not resume and bool(set(os.listdir(run["dir"])) - SWEEP_FILES)
    plot.save(os.path.join(run["dir"], "run.json"), json.dumps(run["fingerprint"]))
    args = [a if a.startswith("--") else config_path(a) for a in run["args"]]  # the files fingerprint read
    cmd = [sys.executable, TRAIN, *args, f"--out_dir={run['dir']}", *(["--init_from=resume"] * resume),
           *(["--overwrite=True"] * over)]
    gpu = run["free_gpus"].get() if run["free_gpus"] else None  # held for the run; a job per GPU: never waits
    env = dict(os.environ, CUDA_VISIBLE_DEVICES=gpu) if gpu is not None else None  # the run sees that GPU only
    say(f"{tag}: {'resume' if resume else 'start'}" + (f" on GPU {gpu}" if gpu is not None else ""))
    t0 = time.time()
    try:
        with open(os.path.join(run["dir"], "train.out"), "a" if resume else "w") as out:
            out.write(f"$ {f'CUDA_VISIBLE_DEVICES={gpu} ' if gpu is not None else ''}{shlex.join(cmd)}\n")
            out.flush()
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    except OSError as e:
        die(f"cannot write {os.path.join(run['dir'], 'train.out')} ({e.strerror}); free some space or make "
            f"--out writable, then run the same command again")
    finally:
        if gpu is not None:
            run["free_gpus"].put(gpu)
    wall = time.time() - t0
    test = final_test(run["dir"])
    if rc != 0 or test is None:
        say(f"{tag}: FAILED (exit {rc}) after {wall:.0f}s, see {os.path.join(run['dir'], 'train.out')}")
        return False
    plot.save(done_path, json.dumps(dict(fingerprint=run["fingerprint"], wall_s=round(wall, 1))))
    say(f"{tag}: done in {wall:.0f}s, test pass@1 {test:.3f}")
    return True


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[1], allow_abbrev=False,
                                epilog="other --key=value args are passed to every train.py run")
    p.add_argument("pipeline", help=f"{' | '.join(PIPELINES)} | comma-separated config files")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per entry (default: %(default)s)")
    p.add_argument("--base", default=CPU_BASE,
                   help="model/data config applied before each entry's, '' for none (default: %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default: %(default)s)")
    p.add_argument("--gpus", default="", help="comma-separated GPU ids: a run on each at a time, sets --jobs "
                                              "(default: none, the CPU)")
    p.add_argument("--out", default="out/sweep", help="the sweep dir: pipeline.json, ENTRY/seedS/ run dirs, "
                                                      "results.md and .png; plot.py reads it "
                                                      "(default: %(default)s)")
    p.add_argument("--baseline", default="", help="entry the others are compared with (default: the first)")
    p.add_argument("--rerun", default="", help="comma-separated entries whose finished runs of other settings "
                                               "are trained again, replacing them (default: none; the sweep "
                                               "stops before replacing a finished run)")
    return p


def main(argv=None):
    args, extra = parser().parse_known_args(argv)
    entries = pipeline_entries(args.pipeline)
    for a in extra:
        if not (a.startswith("--") and "=" in a) or a.split("=")[0] in ("--seed", "--out_dir"):
            die(f"{a!r}: extra args must be train.py --key=value overrides other than --seed (use --seeds) "
                "and --out_dir (use --out)")
    if args.seeds < 1 or args.jobs < 1:
        die("--seeds and --jobs must be at least 1")
    if args.baseline and args.baseline not in entries:
        die(f"--baseline={args.baseline} is not an entry of the pipeline: {', '.join(entries)}")
    rerun = {e for e in args.rerun.split(",") if e}
    if rerun - set(entries):
        die(f"--rerun={args.rerun}: {', '.join(sorted(rerun - set(entries)))} not an entry of the pipeline: "
            f"{', '.join(entries)}")
    if os.path.exists(portable_path("--out", args.out)) and not os.path.isdir(args.out):  # (train.py's out_dirs)
        die(f"--out={args.out!r} is a file, not a directory; pass another --out")
    base = [args.base] if args.base else []
    gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
    free_gpus = queue.Queue() if gpus else None  # the GPU ids no run holds now
    for g in gpus:
        free_gpus.put(g)
    args.jobs = len(gpus) or args.jobs
    steps = CPU_STEPS if args.base == CPU_BASE else {}
    cut = {name: [f"--max_steps={steps[name]}", f"--eval_interval={steps[name] // 5}"] if name in steps else []
           for name in entries}
    # seed-major, so that every entry has a seed early on; numbered in that order
    runs = [dict(name=name, seed=s, dir=os.path.join(args.out, name, f"seed{s}"), free_gpus=free_gpus,
                 args=[*base, *cfg, *cut[name], f"--seed={s}", *extra])
            for s in range(args.seeds) for name, cfg in entries.items()]
    for i, run in enumerate(runs, 1):
        run.update(index=f"{i}/{len(runs)}", fingerprint=fingerprint(run["args"]))
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        die(f"cannot create --out={args.out!r} ({e.strerror}); pass another --out")
    kept = [r for r in runs if r["name"] not in rerun and replaced(r)]
    if kept:  # hours of work: replaced only when asked for by name
        first = kept[0]
        old = read_json(os.path.join(first["dir"], "done.json")).get("fingerprint")
        what = changes(old, first["fingerprint"])
        names = ",".join(sorted({r["name"] for r in kept}))
        die(f"{len(kept)} finished run(s) in {args.out} were made with other settings ({first['name']}/seed"
            f"{first['seed']}: {what}); pass --rerun={names} to train them again and replace them, or another "
            "--out")
    baseline = args.baseline or next(iter(entries))
    references = {e: r for e, r in REFERENCES.get(args.pipeline, {}).items() if e in entries and r in entries}
    plot.save(os.path.join(args.out, "pipeline.json"),  # plot.py's order, baseline and pairs
              json.dumps(dict(pipeline=args.pipeline, entries=list(entries), baseline=baseline,
                              references=references), indent=1))
    pool = ThreadPoolExecutor(args.jobs)
    try:
        ok = list(pool.map(run_one, runs))
    except KeyboardInterrupt:
        pool.shutdown(cancel_futures=True)  # the running train.py processes got the Ctrl-C too; start no more
        die("interrupted: run the same command again to go on where it stopped")
    except SystemExit:  # a run's files could not be written (its one line is said): start no more
        pool.shutdown(cancel_futures=True)
        raise
    pool.shutdown()
    good = [r["dir"] for name in entries for r, fine in zip(runs, ok) if fine and r["name"] == name]
    logged = plot.load_runs(good) if good else {}
    if logged:
        shown = baseline if baseline in logged else next(iter(logged))
        plot.write(logged, os.path.join(args.out, "results"), shown, references)
    failed = [f"{r['name']}/seed{r['seed']}" for r, fine in zip(runs, ok) if not fine]
    if failed:
        print(f"error: {len(failed)} of {len(runs)} runs failed: {', '.join(failed)} (see their train.out)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

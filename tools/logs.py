"""
The train.py runs under some paths, read for plot.py and sweep.py: their log.jsonl files, their seeds and
their groups, in the order a sweep's pipeline.json gives.

A run is an out_dir holding log.jsonl. Its group (design choice) is the name of its parent dir when the
run's own dir is named seedN, as sweep.py lays them out, else the name of its own dir. Groups keep the
order of the paths given; a sweep dir's pipeline.json (written by sweep.py) gives its entries' order, the
baseline (the first) and any other reference an entry is compared with (e.g. replay_64x4 with budget256_64x4).
A log is read as train.py's resume reads it, so a run a kill cut short is read up to its last whole line.
"""
import glob
import json
import os
import re
import sys

from machinery.cli import die

EVAL_KEYS = ("train_pass@1", "test_pass@1")  # what an evaluation logs, with step, time and responses


def load_runs(paths):
    """{group: [run, ...]}, groups in the order of the paths (a sweep dir's: its pipeline's order). A run is
    dict(dir, seed, lines: its log lines, evals: those with an evaluation, from the one at step 0 to the
    last). Runs with no evaluation yet are left out."""
    runs = {}
    for path in paths:
        logs = find_logs(path)
        if not logs:
            die(f"{path!r} holds no log.jsonl (give train.py out_dirs or a sweep dir)")
        order = (read_pipeline(path) or {}).get("entries", [])
        rank = lambda log: (order.index(g) if (g := group_of(log)) in order else len(order), natural(log))
        for log in sorted(logs, key=rank):
            run_dir = os.path.dirname(os.path.abspath(log))
            lines = read_log(log)
            evals = [line for line in lines if "test_pass@1" in line]
            if evals:
                runs.setdefault(group_of(log), []).append(
                    dict(dir=run_dir, seed=run_seed(run_dir), lines=lines, evals=evals))
    return runs


def find_logs(path):
    """The log.jsonl files under path: a run dir, a dir of runs (seedN or plain out_dirs), or a sweep dir."""
    for depth in ("", "*", os.path.join("*", "*")):
        logs = glob.glob(os.path.join(glob.escape(path), depth, "log.jsonl"))  # "run [v2]" names itself
        if logs:
            return sorted(logs, key=natural)
    return []


def natural(s):
    """Sort key that puts rollouts_8 before rollouts_16 and seed2 before seed10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def group_of(log):
    """A log's group: its run dir's parent when that dir is seedN (sweep.py's layout), else the run dir."""
    run_dir = os.path.dirname(os.path.abspath(log))
    own = os.path.basename(run_dir)
    return os.path.basename(os.path.dirname(run_dir)) if re.fullmatch(r"seed\d+", own) else own


def run_seed(run_dir):
    """A run's seed: from its seedN dir (sweep.py's layout) or the --seed= of its run.json; None if
    unknown."""
    m = re.fullmatch(r"seed(\d+)", os.path.basename(run_dir))
    if m:
        return int(m.group(1))
    try:
        with open(os.path.join(run_dir, "run.json")) as f:
            args = json.load(f)["args"]
        return next(int(a.split("=")[1]) for a in args if a.startswith("--seed="))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, StopIteration, RecursionError):
        return None  # missing, cut short or another program's: the seed is unknown, so the run is not paired


def read_pipeline(path):
    """The pipeline.json sweep.py wrote in a sweep dir: dict(entries, baseline, references); None where there
    is none; one line when it is there but not sweep.py's (cut short, not JSON, another program's)."""
    file = os.path.join(path, "pipeline.json")
    if not os.path.exists(file):
        return None
    try:
        with open(file, encoding="utf-8") as f:
            p = json.load(f)
        entries, refs = p.get("entries", []), p.get("references", {})
        ok = isinstance(entries, list) and isinstance(p.get("baseline", ""), str) and isinstance(refs, dict) \
            and all(isinstance(e, str) for e in [*entries, *refs.values()])
    except (OSError, ValueError, RecursionError, AttributeError):  # UnicodeDecodeError is a ValueError
        ok = False
    if not ok:
        die(f"{file} is not a pipeline.json of sweep.py (a JSON object of entries, baseline and references): "
            f"run the sweep's command again to rewrite it, or delete it")
    return p


def read_log(path):
    """The records of a log.jsonl, read as train.py's resume reads it (report.resume_lines): bytes that
    are not UTF-8 are replaced, a line a kill cut is dropped, other damaged lines are skipped with a
    warning."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            texts = f.readlines()
    except OSError as e:
        die(f"cannot read {path} ({e.strerror}); make it readable or leave its run out")
    records = [record(text) for text in texts if text.strip()]
    # a last line without its newline was cut by a kill while it was written (a step that never finished)
    cut = bool(texts) and bool(texts[-1].strip()) and not texts[-1].endswith("\n")
    torn = int(cut and records[-1] is None)
    if records.count(None) > torn:
        print(f"warning: {path}: skipped {records.count(None) - torn} damaged line(s)", file=sys.stderr)
    return [r for r in records if r is not None]


def record(text):
    """A log line as a dict of its numeric fields, or None when it is not a train.py log line."""
    try:  # numbers only: not bool, str or null (AttributeError: not an object)
        line = {k: v for k, v in json.loads(text).items() if type(v) in (int, float)}
    except (ValueError, RecursionError, AttributeError):
        return None
    # every train.py line holds step, time and responses; an evaluation's also holds EVAL_KEYS
    needed = ("time", "responses", *(EVAL_KEYS if "test_pass@1" in line else ()))
    return line if type(line.get("step")) is int and all(k in line for k in needed) else None

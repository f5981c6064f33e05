"""
Where a run lives, and how it survives being killed. out_dir holds:

  log.jsonl      one JSON line per step (eval steps carry pass@1); written before the step's checkpoint
  samples.jsonl  responses at every evaluation (and optionally some training rollouts)
  ckpt/          the policy as a Hugging Face directory + train_state.pt (optimizer, step, data position,
                 replay windows, bandit counters, the run's config)

A checkpoint is written to ckpt.tmp and swapped in by renames, so a kill at any point leaves a complete
checkpoint in ckpt or, between the two renames, in ckpt.old. Resume refuses a changed experiment, a fresh
run refuses to overwrite another, and what cannot be recovered is said in one line.
"""
import json
import os
import re
import shutil
import sys

import torch

from configurator import die

# knobs that may differ on --init_from=resume: they change how a run is executed or reported, not what it
# computes (samples are seeded per prompt, so sampler and micro-batch sizes don't change them)
SAFE_TO_CHANGE = ("out_dir", "init_from", "overwrite", "device", "num_threads", "max_steps", "eval_interval",
                  "eval_batch_size", "sample_batch_size", "micro_batch_size", "grad_checkpointing", "max_bad_steps",
                  "log_interval", "log_samples", "log_rollouts", "wandb_log", "wandb_project", "wandb_run_name")
RUN_FILES = ("log.jsonl", "samples.jsonl", "ckpt", "ckpt.old", "ckpt.tmp")


def warn(msg):
    print(f"warning: {msg}", file=sys.stderr)


def default_out_dir(argv, task):
    """out/<config file names and --key=value overrides>, so two different commands never share a directory
    while a resumed run (same command plus --init_from=resume or a longer max_steps) finds its own."""
    parts = []
    for arg in argv:
        key, eq, value = arg[2:].partition("=")
        if not arg.startswith("--"):
            parts.append(os.path.splitext(os.path.basename(arg))[0])
        elif key not in SAFE_TO_CHANGE:
            parts.append(f"{key}={value}" if eq else key)
    name = re.sub(r"[^A-Za-z0-9._=+-]", "_", "-".join(parts)) or task
    return os.path.join("out", name[:120])


def prepare_out_dir(out_dir, resume, overwrite, main_rank=True):
    """Check out_dir before any expensive work: a writable directory, and, for a fresh run, not another run's
    (unless overwrite, which removes that run's files)."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        die(f"out_dir {out_dir!r} is a file, not a directory; pass another --out_dir")
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, f".write_test.{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        die(f"cannot write to out_dir {out_dir!r} ({e.strerror}); pass a writable --out_dir")
    found = [f for f in RUN_FILES if os.path.exists(os.path.join(out_dir, f))]
    if resume or not found:
        return
    if not overwrite:
        die(f"out_dir {out_dir!r} already holds a run ({', '.join(found)}); continue it with --init_from=resume, "
            f"pass another --out_dir, or replace it with --overwrite=True")
    if main_rank:
        for f in found:
            path = os.path.join(out_dir, f)
            shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def save(out_dir, policy, tok, opt, state):
    """Write out_dir/ckpt, crash-safe: ckpt.tmp first, then ckpt -> ckpt.old, ckpt.tmp -> ckpt, drop ckpt.old.
    A ckpt.old left by a kill during that last deletion is stale (ckpt is complete) and is removed first."""
    path, tmp, old = (os.path.join(out_dir, d) for d in ("ckpt", "ckpt.tmp", "ckpt.old"))
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        policy.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        torch.save(dict(state, optimizer=opt.state_dict()), os.path.join(tmp, "train_state.pt"))  # last: marks it whole
    except OSError as e:  # disk full, quota, permissions
        shutil.rmtree(tmp, ignore_errors=True)
        kept = f"the previous checkpoint in {path} is intact" if os.path.isdir(path) else "no checkpoint was written"
        die(f"could not write a checkpoint to {tmp} ({e.strerror or e}); {kept}; free space and resume with "
            f"--init_from=resume")
    try:
        if os.path.isdir(path):
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        die(f"could not swap in the new checkpoint ({e}); the last complete one is in {path} or {old}")


def load(out_dir):
    """(model dir, train state) of out_dir's last complete checkpoint: ckpt, else ckpt.old (which survives only
    a kill between the two renames of save, or a damaged ckpt)."""
    problems = []
    for d in ("ckpt", "ckpt.old"):
        path = os.path.join(out_dir, d)
        if not os.path.exists(os.path.join(path, "train_state.pt")):
            continue
        bad = weights_problem(os.path.join(path, "model.safetensors"))
        try:
            state = None if bad else torch.load(os.path.join(path, "train_state.pt"), weights_only=True)
        except Exception as e:  # truncated or overwritten: pickle, zip and torch errors alike
            bad = f"{path}/train_state.pt is unreadable ({type(e).__name__})"
        if bad:
            problems.append(bad)
            continue
        if problems:
            warn(f"{'; '.join(problems)}: resuming from {path} (step {state['step']}) instead")
        return path, state
    if problems:
        die(f"{'; '.join(problems)}, and there is no other checkpoint: this run cannot be resumed; start it over "
            f"with --overwrite=True or pass another --out_dir")
    die(f"init_from=resume but {out_dir!r} holds no checkpoint (ckpt/train_state.pt); start a fresh run instead")


def weights_problem(path):
    """Why a safetensors file is not whole (missing, or shorter than its header says), or None. Reads the
    8-byte header length and the header only."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if os.path.getsize(path) < 8 + n + end:
            return f"{path} is truncated"
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        return f"{path} is unreadable ({type(e).__name__})"
    return None


def check_resume(saved, now):
    """Refuse to resume a run under a config that changes the experiment: one line naming each changed key
    and both values. Keys the checkpoint doesn't know (added to nanoRFT later) are not compared."""
    safe = set(SAFE_TO_CHANGE) - ({"max_steps"} if now.get("lr_schedule") == "cosine" else set())  # it sets the decay
    changed = [k for k in saved if k in now and k not in safe and saved[k] != now[k]]
    if changed:
        die(f"--init_from=resume with a different experiment: {', '.join(f'{k}={saved[k]!r} -> {now[k]!r}' for k in changed)}"
            f"; resume with the run's own settings (only {', '.join(sorted(safe - {'init_from', 'out_dir'}))} may "
            f"change) or start a new run in another out_dir")


def resume_lines(path, step, what):
    """The JSON lines of out_dir's log.jsonl or samples.jsonl up to `step` (the checkpoint's; later ones are
    redone), skipping lines that a kill cut short or that are not JSON, and saying what was lost."""
    if not os.path.exists(path):
        warn(f"{path} is missing: its {what} up to step {step} are lost; the run goes on from there")
        return []
    kept, broken = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
                if record["step"] <= step:
                    kept.append(json.dumps(record) + "\n")
            except (ValueError, KeyError, TypeError):
                broken += 1
    if broken:
        warn(f"{path}: dropped {broken} damaged line(s)")
    if what == "log lines" and not any(json.loads(line)["step"] == step for line in kept):
        warn(f"{path} has no line for the checkpoint's step {step} (it was damaged or emptied): lines up to there "
             f"are lost; the run goes on from step {step}")
    return kept

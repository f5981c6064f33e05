"""
Where a run lives, and how it survives being killed. out_dir holds:

  log.jsonl      one JSON line per step (eval steps carry pass@1); written before the step's checkpoint
  samples.jsonl  responses at every evaluation (and optionally some training rollouts)
  ckpt/          the policy as a Hugging Face directory + train_state.pt (optimizer, fp16's loss scale, step,
                 data position, replay windows, bandit counters, the run's config)

A checkpoint is written to ckpt.tmp and swapped in by renames (ckpt -> ckpt.old, ckpt.tmp -> ckpt, then
ckpt.old is deleted), so a kill at any point leaves a whole checkpoint in ckpt or ckpt.old, and the next save
copes with whatever a kill or a damaged disk left. Resume refuses a changed experiment, a fresh run refuses
to overwrite another, and what cannot be recovered is said in one line.
"""
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import sys

import torch
from safetensors import SafetensorError

from machinery import distributed as ddp
from machinery.cli import die, portable_path

# knobs that may differ on --init_from=resume: they change how a run is executed or reported, not what it
# computes (samples are seeded per prompt, so sampler and micro-batch sizes don't change them)
SAFE_TO_CHANGE = ("out_dir", "init_from", "overwrite", "device", "num_threads", "max_steps", "eval_interval",
                  "eval_batch_size", "sample_batch_size", "micro_batch_size", "grad_checkpointing", "max_bad_steps",
                  "log_interval", "log_samples", "log_rollouts", "wandb_log", "wandb_project", "wandb_run_name",
                  "ddp_timeout", "compile")
LOCK = ".lock"  # held by the process that runs in out_dir (claim)
HELD = {}  # lock path -> the open file that holds its flock, for this process's life
SCALER_KEYS = {"scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker"}  # GradScaler's state
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")  # bundled policies
RUN_FILES = ("log.jsonl", "samples.jsonl", "ckpt", "ckpt.old", "ckpt.tmp", "eval.json", "eval_samples.jsonl")


def warn(msg):
    if ddp.rank == 0:  # under torchrun every rank loads the checkpoint: say it once
        print(f"warning: {msg}", file=sys.stderr)


def default_out_dir(argv, task):
    """out/<config file names and --key=value overrides>, so two different commands never share a directory
    while a resumed run (same command plus --init_from=resume or a longer max_steps) finds its own."""
    parts = []
    for arg in argv:
        key, eq, value = arg[2:].partition("=")
        if not arg.startswith("--"):
            parts.append(os.path.splitext(os.path.basename(arg))[0])
        elif key not in SAFE_TO_CHANGE or (key == "init_from" and value != "resume"):  # another base: another run
            parts.append(f"{key}={value}" if eq else key)
    name = re.sub(r"[^A-Za-z0-9._=+-]", "_", "-".join(parts)) or task
    if len(name) > 120:  # a long command keeps a digest of all of it, so two of them still get two directories
        name = f"{name[:111]}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
    return os.path.join("out", name)


def prepare_out_dir(out_dir, resume, overwrite, clear=True):
    """Check out_dir before any expensive work: a writable directory, and, for a fresh run, not another run's
    (unless overwrite). clear: remove the replaced run's files now (False on ranks other than 0, or to call
    clear_run later, once the new run has passed its checks)."""
    portable_path("out_dir", out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        die(f"out_dir {out_dir!r} is a file, not a directory; pass another --out_dir")
    if resume and not os.path.isdir(out_dir):
        die(f"init_from=resume but out_dir {out_dir!r} does not exist; pass the run's --out_dir, or resume with the "
            f"command that started it (its config files and overrides name the default out_dir)")
    try:
        os.makedirs(out_dir, exist_ok=True)
        probe = os.path.join(out_dir, f".write_test.{os.getpid()}")
        open(probe, "w").close()
        os.remove(probe)
    except OSError as e:
        die(f"cannot write to out_dir {out_dir!r} ({e.strerror}); pass a writable --out_dir")
    if ddp.rank == 0:  # the run's one writer; other ranks share its claim
        claim(out_dir)
    found = [f for f in RUN_FILES if os.path.exists(os.path.join(out_dir, f))]
    if resume or not found:
        return
    if not overwrite:
        go_on = "continue it with --init_from=resume, " if last(out_dir) else "(it has no checkpoint to resume) "
        die(f"out_dir {out_dir!r} already holds a run ({', '.join(found)}); {go_on}pass another --out_dir, or "
            f"replace it with --overwrite=True")
    if clear:
        clear_run(out_dir)


def claim(out_dir):
    """Hold out_dir for this process until it ends: an exclusive flock on out_dir/LOCK, which holds the pid.
    Check and claim are one atomic step, so of two runs started at once into one out_dir the second stops here
    with one line; the kernel drops the lock of a process that died, so a killed run leaves no stale claim."""
    path = os.path.join(out_dir, LOCK)
    key = os.path.realpath(path)
    if key in HELD:  # this process holds it already (a test calling main() again)
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
        die(f"out_dir {out_dir!r} is in use by another run (pid {pid}, holding {path}); wait for it to end, or "
            f"pass another --out_dir")
    except OSError as e:  # a filesystem without locks (some network ones): run, but say what is not caught
        warn(f"cannot lock {path} ({e.strerror or e}): a second run started into {out_dir} would not be stopped")
        return
    HELD[key] = fd
    with contextlib.suppress(OSError):  # the pid only names the holder; a full disk is said at the first log line
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())


def clear_run(out_dir):
    """Remove the files of the run in out_dir (--overwrite=True)."""
    for f in RUN_FILES:
        path = os.path.join(out_dir, f)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


def save(out_dir, policy, tok, opt, state):
    """Write out_dir/ckpt, crash-safe: the new checkpoint goes to ckpt.tmp, then ckpt -> ckpt.old, ckpt.tmp ->
    ckpt, and ckpt.old is deleted. What a kill or a damaged disk left is handled on the way: a half-written
    ckpt.tmp or a stale ckpt.old is deleted, and a ckpt that is not whole (a resume fell back to ckpt.old) is
    deleted rather than moved over ckpt.old, which holds the last whole checkpoint until the new one is in."""
    path, tmp, old = (os.path.join(out_dir, d) for d in ("ckpt", "ckpt.tmp", "ckpt.old"))
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        policy.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        torch.save(dict(state, optimizer=opt.state_dict()), os.path.join(tmp, "train_state.pt"))  # last: marks it whole
    except (OSError, RuntimeError, SafetensorError) as e:  # a full disk, a quota, permissions; torch and
        # safetensors report a full disk as RuntimeError and SafetensorError, not OSError
        shutil.rmtree(tmp, ignore_errors=True)
        why = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())[:100]
        free = shutil.disk_usage(out_dir).free / 2 ** 20
        die(f"could not write the checkpoint of step {state['step']} to {tmp} ({why}; {free:.0f} MiB free there); "
            f"{resume_hint(out_dir, 'free some space, then ')}")
    try:
        if read(path)[0] is not None:  # whole: it is the fallback until the new one is in place
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        else:  # missing or damaged: the last whole checkpoint, if any, is ckpt.old, and it stays
            shutil.rmtree(path, ignore_errors=True)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as e:
        die(f"could not swap in the new checkpoint ({e.strerror or e}); {resume_hint(out_dir)}")


def read(path, mmap=True):
    """(train state, None) if the checkpoint directory `path` is whole, else (None, why not). Whole: config.json
    and the tokenizer's, a model.safetensors as long as its header says, and a train_state.pt that loads (save
    writes it last).
    mmap: map the state's tensors without reading them (a cheap check; load reads them)."""
    for f in ("config.json", "tokenizer_config.json", "train_state.pt"):
        if not os.path.isfile(os.path.join(path, f)):
            return None, f"{path} has no {f}"
    json_files = [f for f in ("config.json", "tokenizer_config.json", "tokenizer.json")
                  if os.path.isfile(os.path.join(path, f))]
    for bad in [json_problem(os.path.join(path, f)) for f in json_files] + \
            [weights_problem(os.path.join(path, "model.safetensors"))]:
        if bad:
            return None, bad
    try:
        # to the CPU: a GPU run's file reads on a machine without one, and a save's check that the last checkpoint
        # is whole puts no AdamW state on the GPU; the optimizer moves its state to its parameters' device itself
        state = torch.load(os.path.join(path, "train_state.pt"), weights_only=True, mmap=mmap, map_location="cpu")
    except Exception as e:  # truncated or overwritten: pickle, zip and torch errors alike
        return None, f"{path}/train_state.pt is unreadable ({type(e).__name__})"
    if not isinstance(state, dict) or not {"step", "optimizer", "config"} <= state.keys() or \
            type(state["step"]) is not int or not isinstance(state["config"], dict) or not scaler_ok(state):
        return None, f"{path}/train_state.pt is not a nanoRFT training state"
    return state, None


def scaler_ok(state):
    """fp16's loss scaler state: absent (older checkpoints), empty (not fp16) or GradScaler's five numbers (a
    later torch may add keys: load_state_dict reads these)."""
    saved = state.get("scaler", {})
    return saved == {} or isinstance(saved, dict) and SCALER_KEYS <= saved.keys() and \
        all(type(saved[k]) in (int, float) for k in SCALER_KEYS)


def weights_problem(path):
    """Why a safetensors file is not whole (missing, or shorter than its header says), or None. Reads the
    8-byte header length and the header only."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")  # random bytes: up to 2^64, more than f.read() can take
            if 8 + n > size:
                return f"{path} is truncated or not safetensors (its header claims {n} bytes)"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if size < 8 + n + end:
            return f"{path} is truncated"
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, MemoryError, RecursionError) as e:
        return f"{path} is unreadable ({type(e).__name__})"
    return None


def json_problem(path):
    """Why a JSON file of a checkpoint (config, tokenizer) is not whole: not UTF-8 JSON holding an object, or
    None."""
    try:
        with open(path, "rb") as f:
            ok = isinstance(json.loads(f.read()), dict)
    except (OSError, ValueError, RecursionError, MemoryError) as e:  # UnicodeDecodeError is a ValueError
        return f"{path} is unreadable ({type(e).__name__})"
    return None if ok else f"{path} is not a JSON object"


def last(out_dir):
    """(directory, step) of the checkpoint a resume would start from, or None."""
    for d in ("ckpt", "ckpt.old"):
        state, _ = read(os.path.join(out_dir, d))
        if state is not None:
            return os.path.join(out_dir, d), state["step"]
    return None


def resume_hint(out_dir, first=""):
    """Where a stopped run can go on from, for its last message; it never names a checkpoint that isn't there.
    first: what to do before that."""
    found = last(out_dir)
    if found is None:
        again = " with --overwrite=True" if any(os.path.exists(os.path.join(out_dir, f)) for f in RUN_FILES) else ""
        return f"{out_dir} holds no checkpoint: {first}start the run again{again}"
    return (f"the last checkpoint ({found[0]}, step {found[1]}) is intact: {first}continue with the same command "
            f"and --init_from=resume")


def load(out_dir):
    """(model dir, train state) of out_dir's last whole checkpoint: ckpt, else ckpt.old (which survives a kill
    between the two renames of save, and is the fallback for a damaged ckpt)."""
    problems = []
    for d in ("ckpt", "ckpt.old"):
        path = os.path.join(out_dir, d)
        if not os.path.exists(path):
            continue
        state, bad = read(path, mmap=False)
        if bad:
            problems.append(bad)
            continue
        if problems:
            warn(f"{'; '.join(problems)}: resuming from {path} (step {state['step']}) instead (the damaged "
                 f"checkpoint is replaced by the next one)")
        return path, state
    if problems:
        die(f"{'; '.join(problems)}, and there is no other checkpoint: this run cannot be resumed; start it over "
            f"with --overwrite=True or pass another --out_dir")
    die(f"init_from=resume but {out_dir!r} holds no checkpoint (ckpt/train_state.pt); start the run again "
        f"{'with --overwrite=True' if set(os.listdir(out_dir)) - {LOCK} else 'without --init_from=resume'}")


def model_dir(path):
    """The model directory `path` means: itself, or for a train.py out_dir its last whole checkpoint (what
    evaluate.py --init_from=out/arith evaluates and train.py --init_from=out/arith starts from); a bundled
    policy (bundled) from any working directory."""
    path = bundled(portable_path("init_from", path))
    if not os.path.isdir(path) or os.path.exists(os.path.join(path, "config.json")) or \
            not any(os.path.exists(os.path.join(path, f)) for f in RUN_FILES):
        return path
    found = last(path)
    if found is None:
        die(f"{path} is a train.py out_dir but holds no whole checkpoint (ckpt or ckpt.old) to start from")
    return found[0]


def bundled(path):
    """path; but a relative path under assets/ that is not in the working directory is nanoRFT's own copy (the
    default init_from, assets/tiny-arith, names the code's directory, not the one a user runs it from)."""
    mine = os.path.normpath(os.path.join(os.path.dirname(ASSETS), path))
    if os.path.exists(path) or os.path.isabs(path) or os.path.dirname(mine) != ASSETS or not os.path.isdir(mine):
        return path
    return mine


def start_from(init_from, out_dir):
    """The model directory a fresh run into out_dir starts from (model_dir); never out_dir's own checkpoint,
    which the run deletes (--overwrite=True) and replaces."""
    path = model_dir(init_from)
    if os.path.isdir(path) and os.path.isdir(out_dir) and \
            os.path.commonpath([os.path.realpath(path), os.path.realpath(out_dir)]) == os.path.realpath(out_dir):
        die(f"init_from={init_from!r} is this run's own out_dir {out_dir!r}, whose checkpoint a fresh run replaces: "
            f"continue it with --init_from=resume, or start from it into another --out_dir")
    return path


def load_optimizer(opt, saved, path):
    """Load a checkpoint's optimizer state (read to the CPU; AdamW moves it to its parameters' device) into `opt`,
    once it is checked to fit the policy: its groups of parameters, moments of each parameter's shape. Checked
    before a resume changes anything: a train state that belongs to another model fails in load_state_dict, or
    (same tensor count, other shapes) in the first opt.step(), after log.jsonl was cut."""
    sizes = [len(group["params"]) for group in opt.param_groups]
    shapes = [tuple(p.shape) for group in opt.param_groups for p in group["params"]]
    try:
        ids = sorted(i for group in saved["param_groups"] for i in group["params"])
        saved_sizes = [len(group["params"]) for group in saved["param_groups"]]
        if saved_sizes != sizes or ids != list(range(len(shapes))):
            why = f"parameter tensors per group {saved_sizes}, the model's {sizes}"
        else:
            wrong = [(i, tuple(v.shape)) for i, moments in saved["state"].items() for k, v in moments.items()
                     if k in ("exp_avg", "exp_avg_sq") and tuple(v.shape) != shapes[i]]
            why = wrong and f"parameter {wrong[0][0]}'s moments have shape {wrong[0][1]}, the model's " \
                            f"{shapes[wrong[0][0]]}"
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        why = f"not an AdamW state: {type(e).__name__}"
    if why:
        die(f"{path}/train_state.pt holds the optimizer state of another model ({why}): the checkpoint's weights "
            f"and train state do not belong together; resume from a whole checkpoint of this run, or start it over "
            f"with --overwrite=True")
    opt.load_state_dict(saved)


def check_resume(saved, now):
    """Refuse to resume a run under a config that changes the experiment: one line naming each changed key
    and both values. Keys the checkpoint doesn't know (added to nanoRFT later) are not compared."""
    safe = set(SAFE_TO_CHANGE) - ({"max_steps"} if now.get("lr_schedule") == "cosine" else set())  # it sets the decay
    changed = [k for k in saved if k in now and k not in safe and saved[k] != now[k]]
    if changed:
        diff = ", ".join(f"{k}={saved[k]!r} -> {now[k]!r}" for k in changed)
        may = ", ".join(sorted(safe - {"init_from", "out_dir"}))
        die(f"--init_from=resume with a different experiment: {diff}; resume with the run's own settings (only "
            f"{may} may change) or start a new run in another out_dir")

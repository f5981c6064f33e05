"""
What a run shows and keeps, rank 0 only: the config it runs (what differs from the defaults), a short console
line every log_interval steps, log.jsonl (every step's metrics), samples.jsonl (responses at each evaluation
and, optionally, some training rollouts), and the same metrics in Weights & Biases when wandb_log is on.
On resume, log and samples keep their lines up to the checkpoint's step (later ones are redone).
"""
import json
import math
import os
import secrets
import sys

import torch

from machinery import checkpoint, distributed as ddp
from machinery.cli import die


def config_lines(config, defaults, out_dir):
    """The settings that differ from train.py's defaults, and where the run writes: what to read at a glance."""
    changed = [f"{k}={v!r}" for k, v in config.items() if v != defaults.get(k) and k != "out_dir"]
    return f"out_dir: {out_dir}\nconfig: {' '.join(changed) or '(the defaults)'}"


def console_line(line):
    """One short text line of a step's log line: the learning signal, the loss and its parts, length, speed."""
    parts = [f"step {line['step']}", f"reward {line['reward']:.3f}", f"acc {line['train_acc']:.3f}"]
    parts += [f"{k} {line[k]:.4g}" for k in ("loss", "entropy", "kl") if k in line]
    parts += [f"len {line['response_len']:.1f}", f"coverage {line['coverage']:.3f}",
              f"{line['sample_s'] + line['update_s']:.2f}s"]
    return " | ".join(parts)


def eval_line(line):
    keys = [k for k in line if k.endswith(("pass@1", "greedy"))]
    return f"step {line['step']} eval: " + " ".join(f"{k} {line[k]:.3f}" for k in keys)


class Reporter:
    """Holds the open log files (and the wandb run) of rank 0; every method is a no-op on other ranks."""

    def __init__(self, out_dir, resume_step, config, state, active):
        self.active, self.wandb, self.lines = active, None, []  # (summary on every rank: said by rank 0)
        if not active:
            return
        log_path, samples_path = (os.path.join(out_dir, f) for f in ("log.jsonl", "samples.jsonl"))
        if resume_step is None:  # a fresh run
            kept_log, kept_samples = [], []
        else:  # keep what precedes the checkpoint; what follows is redone
            kept_log = resume_lines(log_path, resume_step, "log lines")
            kept_samples = resume_lines(samples_path, resume_step, "samples") \
                if os.path.exists(samples_path) or kept_log else []
        self.lines, self.out_dir = [json.loads(line) for line in kept_log], out_dir
        for path, kept in ((log_path, kept_log), (samples_path, kept_samples)):
            try:  # the kept lines replace the file whole: a kill here, or a full disk, loses none
                with open(path + ".tmp", "wb", buffering=0) as f:
                    append(f, "".join(kept))
                os.replace(path + ".tmp", path)
            except OSError as e:
                if os.path.exists(path + ".tmp"):
                    os.remove(path + ".tmp")
                die(f"could not write {path} ({e.strerror or e}); it is unchanged, and "
                    f"{checkpoint.resume_hint(out_dir, 'free some space, then ')}")
        # unbuffered: each line is on disk when write() returns, so a kill loses no finished step, and a full
        # disk fails in write() itself, not again in a flush at exit
        self.log, self.samples = open(log_path, "ab", buffering=0), open(samples_path, "ab", buffering=0)
        if config.get("wandb_log"):  # optional dependency, imported only when asked for
            try:
                import wandb
            except ImportError:
                die("wandb_log=True needs wandb: pip install wandb (WANDB_MODE=offline runs without an account)")
            state.setdefault("wandb_id", secrets.token_hex(4))  # kept in the checkpoint: a resume continues the run
            self.wandb = wandb.init(project=config["wandb_project"], name=config["wandb_run_name"] or
                                    os.path.basename(out_dir),
                                    id=state["wandb_id"], resume="allow", config=config, dir=out_dir)

    def say(self, msg):
        """A console line, from rank 0 only (say)."""
        if self.active:
            say(msg)

    def write(self, line, samples=()):
        """One step: its samples, then its log line. A write that fails (a full disk) ends the run with one line
        saying what the files keep: the lines of the steps before this one (a resume drops a torn last line)."""
        if not self.active:
            return
        for f, text in ((self.samples, "".join(json.dumps(dict(step=line["step"], **s)) + "\n" for s in samples)),
                        (self.log, json.dumps(line) + "\n")):
            try:
                append(f, text)
            except OSError as e:
                kept = f"steps up to {self.lines[-1]['step']}" if self.lines else "no step"
                die(f"could not write {f.name} at step {line['step']} ({e.strerror or e}); log.jsonl and "
                    f"samples.jsonl keep {kept}, and {checkpoint.resume_hint(self.out_dir, 'free some space, then ')}")
        self.lines.append(line)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in line.items() if k != "step"}, step=line["step"])

    def summary(self, seconds, ckpt):
        """The run in one line: test pass@1 (and greedy) from the first evaluation to the last."""
        evals = [line for line in self.lines if "test_pass@1" in line]
        if not evals:
            return f"done in {seconds:.0f}s"
        a, b = evals[0], evals[-1]
        return (f"done: test pass@1 {a['test_pass@1']:.3f} -> {b['test_pass@1']:.3f} (greedy {a['test_greedy']:.3f} "
                f"-> {b['test_greedy']:.3f}, steps {a['step']} -> {b['step']}) in {seconds:.0f}s; checkpoint in {ckpt}")

    def close(self):
        if self.active:
            self.log.close()
            self.samples.close()
            if self.wandb is not None:
                self.wandb.finish()


def resume_lines(path, step, what):
    """The JSON lines of out_dir's log.jsonl or samples.jsonl up to `step` (the checkpoint's; later ones are
    redone), skipping lines that a kill cut short or that are not JSON, and saying what was lost."""
    if not os.path.exists(path):
        checkpoint.warn(f"{path} is missing: its {what} up to step {step} are lost; the run goes on from there")
        return []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError as e:  # a directory, or unreadable
        die(f"cannot read {path} ({e.strerror or e}); move it away to resume without its {what}")
    kept, broken = [], 0
    for i, line in enumerate(lines):
        try:
            record = json.loads(line)
            if record["step"] <= step:
                kept.append(json.dumps(record) + "\n")
        except (ValueError, KeyError, TypeError, RecursionError):
            # a last line without its newline was cut by a kill while it was written: a step after the
            # checkpoint's (each step's lines are written before its checkpoint), so nothing is lost
            broken += i < len(lines) - 1 or line.endswith("\n")
    if broken:
        checkpoint.warn(f"{path}: dropped {broken} damaged line(s)")
    if what == "log lines" and not any(json.loads(line)["step"] == step for line in kept):
        checkpoint.warn(f"{path} has no line for the checkpoint's step {step} (it was damaged or emptied): lines up "
                        f"to there are lost; the run goes on from step {step}")
    return kept


def rollout_examples(problems, ids, mine, n, texts, answers, finished, correct, k):
    """The step's first k training responses as samples.jsonl records, in a single process's order (rank 0's
    prompts first, then rank 1's, ...), on every rank: each rank's first k are gathered. ids: the batch's
    problem ids (B,); mine: this rank's positions in it; n responses per prompt; this rank's prompt-major
    texts/answers/finished (len(mine) * n,); correct: {grader: (B, n)} of the whole batch."""
    if k == 0:  # the same on every rank: then no rank gathers
        return []
    own = []
    for j in range(min(k, len(texts))):
        b = mine[j // n]  # the response's prompt, as a position in the batch
        own.append(dict(index=ids[b], sample=j % n, prompt=problems[ids[b]]["prompt"], response=texts[j],
                        answer=answers[j], finished=bool(finished[j]),
                        **{f"reward_{g}": c[b, j % n].item() for g, c in correct.items()}))
    return ddp.gather_objects(own)[:k]


def append(f, text):
    """Write all of text to the unbuffered binary file f (a write may take only part of it, as a disk fills)."""
    data = text.encode()
    while data:
        data = data[f.write(data):]


def bad_step(step, stats, rows, bad_steps, max_bad_steps, active):
    """After a step whose optimizer step(s) were skipped (stats["skipped"]): a warning naming what was non-finite
    first: the log-probs of the sampled tokens (the policy's logits / temperature at sampling), the loss, or only
    the gradient. The bad_steps-th such step in a row (>= max_bad_steps) stops the run: resuming would repeat it,
    so the run's settings are at fault. rows: the step's (N, T) old_logprobs and mask."""
    if not stats.get("skipped"):
        return
    if not torch.isfinite(rows["old_logprobs"][rows["mask"]]).all():
        why = "log-prob at sampling (the policy's logits / temperature)"
    else:
        why = "loss" if not math.isfinite(stats["loss"]) else "gradient"
    if active:
        from tqdm import tqdm
        tqdm.write(f"warning: step {step}: non-finite {why}, skipped {stats['skipped']} optimizer step(s)",
                   file=sys.stderr)
    if bad_steps >= max_bad_steps:
        die(f"{bad_steps} steps in a row had a non-finite {why}; stopping: start a new run with a lower "
            f"learning_rate (another out_dir, or --overwrite=True)")


def say(msg):
    """A line on stdout that doesn't break a tqdm bar, flushed at once (a redirected console keeps up). A console
    that fails (`| head`, a full disk) never stops the run: an entry point's stdout is a cli.Console."""
    from tqdm import tqdm
    tqdm.write(msg, file=sys.stdout)
    sys.stdout.flush()

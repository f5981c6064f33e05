"""Faults, second round: every file of a run that train.py and evaluate.py read can be truncated,
corrupt or foreign, every file they write can fail, and two runs may start into one out_dir; each case ends
with one line `error: ...` (or, where a whole checkpoint is left, goes on from it) and loses nothing. Bad
inputs and Ctrl-C: test_faults_entry.py. Helpers and the shared run come from test_faults.py."""
import errno
import json
import os
import random
import shutil
import subprocess
import sys

import pytest
import torch

from machinery import checkpoint
import evaluate
from machinery import report
from machinery.report import Reporter
from test_faults import (ENV, FAST, ROOT, TINY, base_run, evaluate_main, fails, log_steps, one_error, run_copy,
                         snapshot, train_main)

__all__ = ["base_run", "run_copy"]  # fixtures shared with test_faults.py


def garbage(path, seed=0, size=256):
    """Overwrite path with seeded random bytes whose first 8 (a safetensors header length) are 0xff: 2^64 - 1."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.write(b"\xff" * 8 + bytes(rng.randrange(256) for _ in range(size)))


def run_cli(script, *argv, timeout=180, env=ENV):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, argv)], env=env, capture_output=True,
                          text=True, timeout=timeout)


# -----------------------------------------------------------------------------
# 1. a checkpoint file of random bytes: every reader survives it, and a resume falls back to ckpt.old

CKPT_FILES = ["model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", "train_state.pt"]


@pytest.mark.parametrize("name", CKPT_FILES)
def test_random_bytes_in_any_checkpoint_file_fall_back_to_ckpt_old(name, run_copy, capsys):
    shutil.copytree(run_copy / "ckpt", run_copy / "ckpt.old")
    garbage(run_copy / "ckpt" / name)
    path, state = checkpoint.load(str(run_copy))
    assert os.path.basename(path) == "ckpt.old" and state["step"] == 2
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and name in err and "resuming from" in err
    assert checkpoint.last(str(run_copy)) == (str(run_copy / "ckpt.old"), 2)


@pytest.mark.parametrize("seed", range(8))
def test_a_safetensors_header_of_random_bytes_is_unreadable_not_a_crash(seed, tmp_path):
    path = tmp_path / "model.safetensors"
    rng = random.Random(seed)
    path.write_bytes(bytes(rng.randrange(256) for _ in range(rng.choice([3, 8, 64, 4096]))))
    assert "model.safetensors" in checkpoint.weights_problem(str(path))


def test_a_garbage_checkpoint_resumes_from_ckpt_old(run_copy, capsys):
    shutil.copytree(run_copy / "ckpt", run_copy / "ckpt.old")
    garbage(run_copy / "ckpt" / "model.safetensors")
    train_main(run_copy, "--init_from=resume", "--max_steps=3")
    assert "not safetensors" in capsys.readouterr().err
    assert log_steps(run_copy) == [0, 1, 2, 3] and checkpoint.last(str(run_copy))[1] == 3


def test_a_garbage_checkpoint_alone_is_one_line_everywhere(run_copy, monkeypatch, capsys):
    """Resume, a fresh run into that out_dir (its refusal reads the checkpoint) and evaluate.py on it."""
    garbage(run_copy / "ckpt" / "model.safetensors")
    before = snapshot(run_copy)
    assert "cannot be resumed" in fails(capsys, train_main, run_copy, "--init_from=resume")
    line = fails(capsys, train_main, run_copy)
    assert "already holds a run" in line and "no checkpoint to resume" in line
    assert "no whole checkpoint" in fails(capsys, evaluate_main, monkeypatch, f"--init_from={run_copy}")
    assert snapshot(run_copy) == before


@pytest.mark.slow
def test_a_garbage_checkpoint_on_the_command_line(run_copy):
    garbage(run_copy / "ckpt" / "model.safetensors")
    p = run_cli("train.py", *FAST, "--init_from=resume", f"--out_dir={run_copy}")
    assert p.returncode == 2 and "cannot be resumed" in one_error(p.stderr)
    p = run_cli("evaluate.py", f"--init_from={run_copy}", "--n_samples=1")
    assert p.returncode == 2 and "no whole checkpoint" in one_error(p.stderr)


# -----------------------------------------------------------------------------
# 2. train_state.pt holding another model's optimizer state

def foreign_optimizer(state, how):
    opt = state["optimizer"]
    if how == "another layer count":  # the moments of one parameter fewer
        last = max(opt["state"])
        del opt["state"][last]
        opt["param_groups"][0]["params"].remove(last)
    elif how == "other shapes":  # as many tensors, one of another shape: load_state_dict takes it, opt.step() fails
        opt["state"][0]["exp_avg"] = torch.zeros(3, 5)
        opt["state"][0]["exp_avg_sq"] = torch.zeros(3, 5)
    else:
        state["optimizer"] = {"lr": 1e-4}


@pytest.mark.parametrize("how", ["another layer count", "other shapes", "not an optimizer state"])
def test_an_optimizer_state_of_another_model_is_refused_before_anything_changes(how, run_copy, capsys):
    path = run_copy / "ckpt" / "train_state.pt"
    state = torch.load(path, weights_only=True)
    foreign_optimizer(state, how)
    torch.save(state, path)
    with open(run_copy / "log.jsonl", "a") as f:  # a step after the checkpoint's: a resume would cut it
        f.write(json.dumps(dict(step=3, reward=0.0)) + "\n")
    before = snapshot(run_copy)
    line = fails(capsys, train_main, run_copy, "--init_from=resume", "--max_steps=4")
    assert "train_state.pt holds the optimizer state of another model" in line
    assert {"another layer count": "parameter tensors per group", "other shapes": "shape (3, 5)",
            "not an optimizer state": "not an AdamW state"}[how] in line
    assert snapshot(run_copy) == before  # the log keeps its line of step 3


# -----------------------------------------------------------------------------
# 3. a disk that fills while log.jsonl / samples.jsonl are written

def disk_fills(monkeypatch, name, at):
    """The at-th write to out_dir's `name` (log.jsonl, samples.jsonl, or a .tmp) takes half its bytes, as a
    filling disk does, and every later write to it fails with ENOSPC."""
    real_open, count = open, [0]

    class Filling:
        def __init__(self, f):
            self.f, self.name, self.full = f, f.name, False

        def write(self, b):
            if os.path.basename(self.name) == name:
                count[0] += 1
                if self.full or count[0] > at:
                    raise OSError(errno.ENOSPC, "No space left on device")
                if count[0] == at:
                    self.full = True
                    return self.f.write(b[:len(b) // 2])
            return self.f.write(b)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def close(self):
            self.f.close()

        def __getattr__(self, attr):  # reading (a resume's kept lines) as the real file
            return getattr(self.f, attr)

    monkeypatch.setattr(report, "open", lambda *a, **k: Filling(real_open(*a, **k)), raising=False)


@pytest.mark.parametrize("name", ["log.jsonl", "samples.jsonl"])
def test_a_disk_that_fills_while_logging_is_one_line_and_the_run_resumes(name, run_copy, monkeypatch, capsys):
    with monkeypatch.context() as m:
        disk_fills(m, name, at=2)  # resumed at step 2: step 3 is written whole, step 4 only half
        line = fails(capsys, train_main, run_copy, "--init_from=resume", "--max_steps=4", "--eval_interval=1")
    assert f"could not write {run_copy / name} at step 4 (No space left on device)" in line
    assert "keep steps up to 3" in line and f"the last checkpoint ({run_copy / 'ckpt'}, step 3) is intact" in line
    train_main(run_copy, "--init_from=resume", "--max_steps=4", "--eval_interval=1")
    assert log_steps(run_copy) == [0, 1, 2, 3, 4] and checkpoint.last(str(run_copy))[1] == 4
    samples = [json.loads(line)["step"] for line in open(run_copy / "samples.jsonl")]
    assert sorted(set(samples)) == [0, 2, 3, 4] and samples == sorted(samples)


def test_a_full_disk_when_a_resume_cuts_the_log_changes_nothing(run_copy, monkeypatch, capsys):
    before = snapshot(run_copy)
    disk_fills(monkeypatch, "log.jsonl.tmp", at=1)
    line = fails(capsys, Reporter, str(run_copy), 2, {}, {}, True)
    assert "log.jsonl" in line and "No space left on device" in line and "is unchanged" in line
    assert snapshot(run_copy) == before


@pytest.mark.parametrize("damage", ["a line nested 1000 deep", "a directory"])
def test_a_foreign_samples_file_on_resume(damage, run_copy, capsys):
    samples = run_copy / "samples.jsonl"
    if damage == "a directory":
        os.remove(samples)
        samples.mkdir()
        assert "cannot read" in fails(capsys, Reporter, str(run_copy), 2, {}, {}, True)
        return
    lines = samples.read_text().splitlines(keepends=True)
    samples.write_text(lines[0] + "[" * 1000 + "]" * 1000 + "\n" + "".join(lines[1:]))
    Reporter(str(run_copy), 2, {}, {}, True).close()
    assert "dropped 1 damaged line" in capsys.readouterr().err
    assert samples.read_text().splitlines(keepends=True) == lines


@pytest.mark.slow
def test_a_run_whose_stdout_pipe_closes_goes_on(tmp_path):
    """`python train.py | head -c 5`: the console's pipe closes while the run goes on."""
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "train.py"), *FAST, f"--out_dir={tmp_path}"], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.read(5) == "out_d"
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=300) == 0 and "Traceback" not in err and "Exception ignored" not in err, err
    assert "warning: cannot write to stdout (Broken pipe): going on without it" in err
    assert log_steps(tmp_path) == [0, 1, 2]


def test_a_listing_whose_reader_closes_the_pipe_goes_on_with_one_warning():
    """`python tools/exercises.py list | head -c 0`: the reader has gone (its end is closed before the program writes,
    so the write surely fails), and the program finishes without a BrokenPipeError traceback or Python's "Exception
    ignored" note, one warning saying so (cli.Console, as for every entry point)."""
    read, write = os.pipe()
    os.close(read)
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools/exercises.py"), "list"], env=ENV, cwd=ROOT,
                       stdout=write, stderr=subprocess.PIPE, text=True, timeout=60)
    os.close(write)
    assert p.returncode == 0 and p.stderr == "warning: cannot write to stdout (Broken pipe): going on without it\n", \
        p.stderr


# -----------------------------------------------------------------------------
# 4. evaluate.py: the output is writable before the evaluation, and a failed write keeps an earlier result

def test_evaluate_refuses_a_read_only_run_directory_before_evaluating(run_copy, monkeypatch, capsys):
    real_open = open

    def read_only(path, mode="r", *a, **k):  # root ignores chmod: the directory refuses writes as it would a user
        if mode != "r" and str(path).startswith(str(run_copy)):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_open(path, mode, *a, **k)
    monkeypatch.setattr(evaluate, "open", read_only, raising=False)
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated before checking the output"))
    line = fails(capsys, evaluate_main, monkeypatch, f"--init_from={run_copy}")
    assert f"cannot write {run_copy / 'eval.json'} (Permission denied)" in line


def test_evaluate_on_a_full_disk_keeps_the_earlier_result(tmp_path, monkeypatch, capsys):
    out = tmp_path / "eval.json"
    out.write_text('{"earlier": 1}')
    real_open = open

    def full(path, mode="r", *a, **k):
        if str(path) == f"{out}.tmp":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *a, **k)
    monkeypatch.setattr(evaluate, "open", full, raising=False)
    line = fails(capsys, evaluate_main, monkeypatch, f"--init_from={TINY}", f"--out={out}", "--splits=test",
                 "--eval_problems=4", "--n_samples=1", "--max_new_tokens=4")
    assert "No space left on device" in line and "not saved" in line
    assert out.read_text() == '{"earlier": 1}' and sorted(os.listdir(tmp_path)) == ["eval.json"]


# -----------------------------------------------------------------------------
# 15. one run at a time in an out_dir

HOLD = ("import sys; sys.path.insert(0, {root!r}); from machinery import checkpoint; checkpoint.claim({out!r}); "
        "print('held', flush=True); sys.stdin.read()")


def test_a_second_run_into_a_claimed_out_dir_is_refused(run_copy, capsys):
    holder = subprocess.Popen([sys.executable, "-c", HOLD.format(root=ROOT, out=str(run_copy))], env=ENV,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        before = snapshot(run_copy)
        for argv in ([], ["--init_from=resume"], ["--overwrite=True"]):
            line = fails(capsys, train_main, run_copy, *argv)
            assert f"is in use by another run (pid {holder.pid}" in line
        assert snapshot(run_copy) == before
    finally:
        holder.kill()
        holder.wait()
    checkpoint.claim(str(run_copy))  # the kernel dropped the dead holder's lock: free again


def test_a_stale_lock_of_a_dead_run_is_taken_over(tmp_path):
    (tmp_path / checkpoint.LOCK).write_text("999999999\n")  # a run killed with -9 left its lock file
    train_main(tmp_path, "--max_steps=1", "--eval_problems=4")
    assert log_steps(tmp_path) == [0, 1] and (tmp_path / checkpoint.LOCK).read_text() == f"{os.getpid()}\n"


@pytest.mark.slow
def test_two_fresh_runs_started_at_once_into_one_out_dir(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *FAST, f"--out_dir={out}"]
    runs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in runs]
    codes = sorted(p.returncode for p in runs)
    assert codes == [0, 2], errs
    loser = one_error(errs[[p.returncode for p in runs].index(2)])
    assert "in use by another run" in loser or "already holds a run" in loser
    assert log_steps(out) == [0, 1, 2] and checkpoint.last(str(out)) == (str(out / "ckpt"), 2)

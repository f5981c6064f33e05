"""Kills and damage: whatever a kill at any step of a checkpoint save, a full disk or a damaged file leaves, the
run resumes from a whole checkpoint, or says in one line that none is left; and no message points at a checkpoint
that isn't there. Helpers and the shared run come from test_faults.py."""
import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import SafetensorError

from machinery import checkpoint
import model
from machinery.report import Reporter
from test_faults import (DEFAULTS, ENV, FAST, ROOT, TINY, base_run, ckpt_step, fails, log_steps, one_error, run_copy,
                         snapshot, train_main)

__all__ = ["base_run", "run_copy"]  # fixtures of test_faults.py


# -----------------------------------------------------------------------------
# kills and damage: whatever a kill or a bad disk leaves, the run resumes from a whole checkpoint

class Killed(BaseException):
    """The process dies here: nothing after it runs and no `except Exception` sees it."""


@pytest.fixture(scope="module")
def saver():
    policy = model.Transformer.from_pretrained(TINY)
    return policy, model.load_tokenizer(TINY), torch.optim.AdamW(policy.parameters())


def save(out_dir, saver, step):
    state = dict(step=step, draws=step, responses=0, elapsed=0.0, base=TINY, replay={}, solved=[], regret=0,
                 config=dict(DEFAULTS))
    checkpoint.save(str(out_dir), *saver, state)


def kill_at(monkeypatch, n):
    """Die at the n-th filesystem step of a save (n = 0: never); returns the list of the steps taken. A step
    is a rename, a deletion of an existing directory (it dies having removed one file), or writing the train
    state (it dies having written a few bytes)."""
    done, real_replace, real_rmtree, real_save = [], os.replace, shutil.rmtree, torch.save

    def step(what):
        done.append(what)
        return len(done) == n

    def replace(src, dst):
        if step(f"rename {os.path.basename(src)} -> {os.path.basename(dst)}"):
            raise Killed
        real_replace(src, dst)

    def rmtree(path, ignore_errors=False):
        if os.path.isdir(path) and step(f"delete {os.path.basename(path)}"):
            os.remove(os.path.join(path, sorted(os.listdir(path))[0]))
            raise Killed
        real_rmtree(path, ignore_errors=ignore_errors)

    def save_state(obj, f, *a, **k):
        if step("write train_state.pt"):
            open(f, "wb").write(b"PK\x03\x04")
            raise Killed
        real_save(obj, f, *a, **k)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    monkeypatch.setattr(torch, "save", save_state)
    return done


def leave(out_dir, saver, situation):
    """An out_dir whose last whole checkpoint is step 2, as a run or a kill or a bad disk can leave it."""
    save(out_dir, saver, 2)
    ckpt, old = out_dir / "ckpt", out_dir / "ckpt.old"
    if situation == "a stale ckpt.old":  # killed while ckpt.old was being deleted
        shutil.copytree(ckpt, old)
    elif situation == "only ckpt.old":  # killed between the two renames
        os.rename(ckpt, old)
        shutil.copytree(old, out_dir / "ckpt.tmp")
    elif situation == "a damaged ckpt":  # resumed from ckpt.old after a disk error
        shutil.copytree(ckpt, old)
        os.truncate(ckpt / "model.safetensors", 1000)


SITUATIONS = ["a whole ckpt", "a stale ckpt.old", "only ckpt.old", "a damaged ckpt"]


def test_the_fallback_to_ckpt_old_is_said_once_under_torchrun(saver, tmp_path, monkeypatch, capsys):
    leave(tmp_path, saver, "a damaged ckpt")
    for rank, said in ((0, True), (1, False)):  # every rank loads; rank 0 alone warns
        monkeypatch.setattr(checkpoint.ddp, "rank", rank)
        assert checkpoint.load(str(tmp_path))[1]["step"] == 2
        assert ("resuming from" in capsys.readouterr().err) == said


@pytest.mark.parametrize("situation", SITUATIONS)
def test_a_kill_at_any_point_of_a_save_leaves_a_whole_checkpoint(situation, saver, tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as m:  # count the steps of one save
        steps = kill_at(m, 0)
        leave(tmp_path / "count", saver, situation)
        steps.clear()
        save(tmp_path / "count", saver, 4)
    assert any(s.startswith("rename") for s in steps)
    for n in range(1, len(steps) + 1):
        out = tmp_path / str(n)
        leave(out, saver, situation)
        with monkeypatch.context() as m:
            kill_at(m, n)
            with pytest.raises(Killed):
                save(out, saver, 4)
        path, state = checkpoint.load(str(out))
        assert state["step"] in (2, 4), (steps[n - 1], state["step"])
        model.Transformer.from_pretrained(path)  # the weights load too
        save(out, saver, 6)  # the next save copes with what the kill left
        path, state = checkpoint.load(str(out))
        assert (os.path.basename(path), state["step"]) == ("ckpt", 6), steps[n - 1]
        assert sorted(os.listdir(out)) == ["ckpt"], (steps[n - 1], os.listdir(out))
    capsys.readouterr()


def test_a_leftover_ckpt_old_does_not_block_later_checkpoints(run_copy):
    """The issue's reproduction: train 2 steps, cp -r ckpt ckpt.old, resume."""
    shutil.copytree(run_copy / "ckpt", run_copy / "ckpt.old")
    train_main(run_copy, "--init_from=resume", "--max_steps=4")
    assert log_steps(run_copy) == [0, 1, 2, 3, 4] and ckpt_step(run_copy / "ckpt") == 4
    assert not (run_copy / "ckpt.old").exists()


FULL = {"tokenizer files": (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        "model.safetensors": (SafetensorError("Error while serializing: I/O error: No space left on device (os "
                                              "error 28)"), "No space left on device"),
        "train_state.pt": (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"),
                           "MiB free")}


@pytest.mark.parametrize("where", FULL)
def test_a_full_disk_while_checkpointing_keeps_the_previous_one(where, saver, tmp_path, monkeypatch, capsys):
    """The errors a full disk really raises (torch: RuntimeError; safetensors: SafetensorError; json: OSError)."""
    save(tmp_path, saver, 2)
    before = snapshot(tmp_path)
    error, says = FULL[where]

    def full(*a, **k):
        raise error
    target = {"tokenizer files": (saver[1], "save_pretrained"), "model.safetensors": (model, "save_file"),
              "train_state.pt": (torch, "save")}[where]
    monkeypatch.setattr(*target, full)
    line = fails(capsys, save, tmp_path, saver, 4)
    assert says in line and "ckpt.tmp" in line
    assert f"the last checkpoint ({tmp_path / 'ckpt'}, step 2) is intact" in line
    assert snapshot(tmp_path) == before  # ckpt untouched, ckpt.tmp removed


def test_a_full_disk_in_a_run_is_one_line_after_the_bar(run_copy, monkeypatch, capsys):
    def full(*a, **k):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    monkeypatch.setattr(torch, "save", full)
    line = fails(capsys, train_main, run_copy, "--init_from=resume", "--max_steps=4")
    assert "step 2) is intact" in line
    monkeypatch.undo()
    assert checkpoint.load(str(run_copy))[1]["step"] == 2


@pytest.mark.parametrize("damage", ["corrupt train_state.pt", "truncated model.safetensors", "no train_state.pt"])
@pytest.mark.parametrize("with_old", [True, False], ids=["with ckpt.old", "alone"])
def test_a_damaged_checkpoint(damage, with_old, saver, tmp_path, capsys):
    save(tmp_path, saver, 2)
    if with_old:
        shutil.copytree(tmp_path / "ckpt", tmp_path / "ckpt.old")
    ckpt = tmp_path / "ckpt"
    if damage == "corrupt train_state.pt":
        (ckpt / "train_state.pt").write_bytes(b"\x00" * 64)
    elif damage == "truncated model.safetensors":
        os.truncate(ckpt / "model.safetensors", os.path.getsize(ckpt / "model.safetensors") - 1)
    else:
        os.remove(ckpt / "train_state.pt")
    if with_old:
        path, state = checkpoint.load(str(tmp_path))
        err = capsys.readouterr().err
        assert os.path.basename(path) == "ckpt.old" and state["step"] == 2
        assert err.startswith("warning: ") and "ckpt" in err and "step 2" in err
    else:
        line = fails(capsys, checkpoint.load, str(tmp_path))
        assert "cannot be resumed" in line and "--overwrite=True" in line


def test_resume_falls_back_to_ckpt_old_and_replaces_the_damaged_ckpt(run_copy, capsys):
    shutil.copytree(run_copy / "ckpt", run_copy / "ckpt.old")
    os.truncate(run_copy / "ckpt" / "model.safetensors", 100)
    train_main(run_copy, "--init_from=resume", "--max_steps=4")
    assert "truncated" in capsys.readouterr().err
    assert log_steps(run_copy) == [0, 1, 2, 3, 4] and ckpt_step(run_copy / "ckpt") == 4
    assert sorted(os.listdir(run_copy)) == [checkpoint.LOCK, "ckpt", "log.jsonl", "samples.jsonl"]


@pytest.mark.parametrize("damage, says", [("deleted", "missing"), ("emptied", "no line for the checkpoint's step 2"),
                                          ("cut", None), ("garbled", "dropped 1 damaged line")])
def test_a_damaged_log_resumes_and_says_what_was_lost(damage, says, run_copy, capsys):
    """A log line cut by a kill is after the checkpoint's step (lines are written before the checkpoint): it is
    dropped without a word. Anything else lost is said."""
    log = run_copy / "log.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    if damage == "deleted":
        os.remove(log)
    elif damage == "emptied":
        log.write_text("")
    elif damage == "cut":
        log.write_text("".join(lines) + lines[-1].replace('"step": 2', '"step": 3')[:40])
    else:
        log.write_text(lines[0] + "\x00{not json\n" + "".join(lines[1:]))
    capsys.readouterr()
    Reporter(str(run_copy), 2, {}, {}, True).close()  # what a resume keeps of the log
    err = capsys.readouterr().err
    kept = [json.loads(line)["step"] for line in open(log)]
    if says:
        assert says in err and err.startswith("warning: ")
    else:
        assert err == ""
    assert kept == {"deleted": [], "emptied": [], "cut": [0, 1, 2], "garbled": [0, 1, 2]}[damage]


def test_a_run_resumes_from_an_emptied_log(run_copy, capsys):
    (run_copy / "log.jsonl").write_text("")
    train_main(run_copy, "--init_from=resume", "--max_steps=4")
    assert "lost" in capsys.readouterr().err
    assert log_steps(run_copy) == [3, 4] and ckpt_step(run_copy / "ckpt") == 4


# -----------------------------------------------------------------------------
# messages never point at a checkpoint that isn't there

def test_resume_hint_names_the_checkpoint_that_is_there(run_copy):
    assert checkpoint.resume_hint(str(run_copy)) == \
        f"the last checkpoint ({run_copy / 'ckpt'}, step 2) is intact: continue with the same command and " \
        f"--init_from=resume"
    os.rename(run_copy / "ckpt", run_copy / "ckpt.old")
    assert f"({run_copy / 'ckpt.old'}, step 2)" in checkpoint.resume_hint(str(run_copy))
    os.remove(run_copy / "ckpt.old" / "train_state.pt")
    assert "holds no checkpoint" in checkpoint.resume_hint(str(run_copy))
    assert "--overwrite=True" in checkpoint.resume_hint(str(run_copy))


def test_a_fresh_run_refusal_offers_resume_only_with_a_checkpoint(run_copy, capsys):
    shutil.rmtree(run_copy / "ckpt")
    line = fails(capsys, train_main, run_copy)
    assert "--init_from=resume" not in line and "no checkpoint" in line


def test_resume_without_a_checkpoint_says_how_to_start_over(tmp_path, capsys):
    (tmp_path / "log.jsonl").write_text("")  # a run killed before its first checkpoint
    line = fails(capsys, train_main, tmp_path, "--init_from=resume")
    assert "holds no checkpoint" in line and "--overwrite=True" in line


INTERRUPT = """
import os, runpy, signal, sys
sys.path.insert(0, {root!r})
import evaluate
def ctrl_c(*a, **k):  # a real SIGINT during the step-0 evaluation, before any checkpoint exists
    os.kill(os.getpid(), signal.SIGINT)
evaluate.evaluate_splits = ctrl_c
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever the test runner inherited
sys.argv = [os.path.join({root!r}, "train.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_ctrl_c_is_one_line_that_names_no_missing_checkpoint(tmp_path):
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT.format(root=ROOT))
    p = subprocess.run([sys.executable, str(script), *FAST, f"--out_dir={tmp_path / 'run'}"], env=ENV,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 130, p.stderr[-2000:]
    line = one_error(p.stderr)
    assert "interrupted" in line and "holds no checkpoint" in line and "--overwrite=True" in line

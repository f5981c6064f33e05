"""Faults, third round, tried as a careless or unlucky user would: more ranks than problems, a console that
fails (a full disk, a closed descriptor, a reader gone), a locale that is not UTF-8, glob characters in paths,
a tokenizer larger than the model, prompts of no tokens, numbers that pass the range checks then overflow, gold
answers that never parse, a run's out_dir as init_from, the datasets cache under a read-only HOME, a stray RANK
and a stalled rank. Each ends in one line `error: ...` (exit 2) before anything expensive, or goes on, and loses
nothing. Helpers and the shared run come from test_faults.py."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from machinery import checkpoint, checks
from machinery import distributed as ddp
from machinery.cli import Console
import data
import evaluate
import model
from test_faults import (DEFAULTS, ENV, FAST, ROOT, TINY, base_run, evaluate_main, fails, log_steps, no_eval,
                         one_error, run_copy, snapshot, train_main)
from test_faults_entry import write_jsonl

__all__ = ["base_run", "no_eval", "run_copy"]  # fixtures of test_faults.py
SMALL = FAST + ["--max_steps=1", "--eval_problems=4"]  # the cheapest whole run: step 0, one step, checkpoint


def cli(script, *argv, timeout=300, **kwargs):
    """`python ROOT/script argv...` as a subprocess, with ENV unless env= is given."""
    kwargs.setdefault("env", ENV)
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, argv)], timeout=timeout,
                          **kwargs)


def torchrun(*argv, env=ENV):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           *map(str, argv)], cwd=ROOT, env=dict(env, OMP_NUM_THREADS="1"), capture_output=True,
                          text=True, timeout=600)


# -----------------------------------------------------------------------------
# torchrun: a rank with no problem to evaluate; every rank's rollouts logged; a stray RANK; a stalled rank

@pytest.mark.slow
def test_two_ranks_with_one_problem_log_what_one_process_logs(tmp_path):
    """train_problems=1 and eval_problems=1 leave rank 1 with no problem of any evaluated split; log_rollouts=8
    asks for every response of a step, 4 of them on each rank: samples.jsonl holds the same 8 as one process."""
    flags = ["--max_steps=1", "--eval_interval=1", "--eval_problems=1", "--train_problems=1", "--batch_size=4",
             "--rollouts=2", "--log_rollouts=8", f"--init_from={TINY}"]
    one = cli("train.py", *flags, f"--out_dir={tmp_path / 'one'}", capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-3000:]
    two = torchrun("train.py", *flags, f"--out_dir={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr[-6000:]
    rollouts = [json.loads(x) for x in open(tmp_path / "two" / "samples.jsonl") if '"rollout"' in x]
    assert [(r["step"], r["sample"]) for r in rollouts] == [(1, j % 2) for j in range(8)]
    assert open(tmp_path / "one" / "samples.jsonl").read() == open(tmp_path / "two" / "samples.jsonl").read()
    la, lb = ([json.loads(x) for x in open(tmp_path / d / "log.jsonl")] for d in ("one", "two"))
    for x, y in zip(la, lb):  # sampling is seeded per prompt: the same responses, rewards and evaluations
        for k in ("reward", "train_acc", "train_pass@1", "test_pass@1", "test_greedy", "trained_pass@1"):
            assert x.get(k) == y.get(k), k
    assert "trained_pass@1" in la[0] and "test_greedy" in la[1]


def test_a_rank_without_problems_evaluates_to_zero_sums(monkeypatch):
    """What rank 1 of 2 gets with one problem: an empty shard, whose means weigh 0 in the all-reduced sums."""
    policy, tok = model.Transformer.from_pretrained(TINY), model.load_tokenizer(TINY)
    monkeypatch.setattr(ddp, "rank", 1)
    monkeypatch.setattr(ddp, "world", 2)
    monkeypatch.setattr(ddp, "all_sum", lambda x: x)  # this rank's share alone
    monkeypatch.setattr(ddp, "gather_objects", list)
    out, samples = evaluate.evaluate_splits(policy, tok, "arith", {"test": data.load_split("arith", "test")[:1]},
                                            step=0, seed=0, n=2, keep=4)
    assert out == {"test_pass@1": 0.0, "test_pass@2": 0.0, "test_pass@1_paper": 0.0, "test_solved_all": 0.0,
                   "test_solved_none": 0.0, "test_greedy": 0.0} and samples == []


@pytest.mark.parametrize("script", ["train.py", "evaluate.py"])
def test_a_stray_rank_variable_is_no_launch(script, tmp_path, monkeypatch, capsys, no_eval):
    monkeypatch.setenv("RANK", "0")
    for k in ddp.LAUNCH[1:]:
        monkeypatch.delenv(k, raising=False)
    run = (lambda: train_main(tmp_path / "run")) if script == "train.py" else \
        (lambda: evaluate_main(monkeypatch, f"--init_from={TINY}"))
    line = fails(capsys, run)
    assert "RANK=0 is set but not WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT" in line and "torchrun" in line
    assert (ddp.rank, ddp.world) == (0, 1) and not os.path.exists(tmp_path / "run" / "log.jsonl")


STALL = """
import os, runpy, sys, time
sys.path.insert(0, {root!r})
import evaluate
real = evaluate.evaluate_splits
def stalled(*a, **k):  # rank 1 hangs in the step-0 evaluation (a hung read, a deadlock)
    if os.environ["RANK"] == "1":
        time.sleep(300)
    return real(*a, **k)
evaluate.evaluate_splits = stalled
sys.argv = [os.path.join({root!r}, "train.py")] + sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow
def test_a_stalled_rank_stops_the_run_after_ddp_timeout_with_one_line(tmp_path):
    script = tmp_path / "stall.py"
    script.write_text(STALL.format(root=ROOT))
    t0 = time.monotonic()
    p = torchrun(script, *SMALL, "--ddp_timeout=5", f"--out_dir={tmp_path / 'run'}")
    assert p.returncode != 0 and time.monotonic() - t0 < 240, p.stderr[-4000:]  # gloo's default: 30 minutes
    said = [line for line in p.stderr.splitlines() if line.startswith("error: ")]
    assert len(said) == 1 and said[0].startswith("error: rank 0 waited 5s for the other ranks"), p.stderr[-4000:]
    assert "--init_from=resume" in said[0] and "unbound_buffer" not in p.stderr  # not gloo's own traceback


def test_ddp_timeout_is_checked_and_may_change_on_resume(capsys):
    assert "ddp_timeout" in fails(capsys, ddp.setup, "cpu", 0)
    assert "ddp_timeout" in checkpoint.SAFE_TO_CHANGE


# -----------------------------------------------------------------------------
# the console: a full disk, a closed descriptor, a reader gone never cost a log line, a checkpoint or eval.json

@pytest.mark.slow
@pytest.mark.parametrize("how", [">/dev/full", ">&-", "2>&1 | head -1"])
def test_train_goes_on_when_its_console_fails(how, tmp_path):
    argv = [os.path.join(ROOT, "train.py"), *FAST, f"--out_dir={tmp_path / 'run'}"]
    if how == "2>&1 | head -1":  # head reads one line and exits: the pipe of stdout and stderr closes
        p = subprocess.Popen([sys.executable, *argv], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert p.stdout.readline().startswith(b"out_dir: ")
        p.stdout.close()
        assert p.wait(timeout=300) == 0
    else:
        full = open("/dev/full", "w") if how == ">/dev/full" else None
        p = subprocess.run([sys.executable, *argv], env=ENV, stdout=full, stderr=subprocess.PIPE, text=True,
                           timeout=300, preexec_fn=None if full else lambda: os.close(1))
        assert p.returncode == 0 and "Traceback" not in p.stderr and "Exception ignored" not in p.stderr, p.stderr
        assert ("warning: cannot write to stdout (No space left on device)" in p.stderr) == bool(full)
    assert log_steps(tmp_path / "run") == [0, 1, 2] and checkpoint.last(str(tmp_path / "run"))[1] == 2


@pytest.mark.slow
def test_evaluate_writes_its_results_when_stdout_is_full(tmp_path):
    with open("/dev/full", "w") as full:
        p = cli("evaluate.py", f"--init_from={TINY}", f"--out={tmp_path / 'eval.json'}", "--splits=test",
                "--eval_problems=4", "--n_samples=2", stdout=full, stderr=subprocess.PIPE, text=True)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert json.load(open(tmp_path / "eval.json"))["test"]["pass@1"] >= 0
    assert len(open(tmp_path / "eval_samples.jsonl").readlines()) == 4 * 2


def test_a_console_that_fails_is_dropped_once_and_said_on_the_other(monkeypatch, tmp_path):
    read, write = os.pipe()
    os.close(read)  # the reader has gone: every write fails with EPIPE
    fd = os.dup(2)  # a Console takes over its descriptor: not the test runner's own
    os.dup2(write, fd)
    os.close(write)
    other = tmp_path / "other"
    with open(other, "w") as said:
        console = Console(open(fd, "w", closefd=False), "stderr")
        monkeypatch.setattr(sys, "stdout", said)
        console.write("x" * 100000)  # more than a pipe holds: the write itself fails
        console.write("more")
        console.flush()
    os.close(fd)
    assert other.read_text() == "warning: cannot write to stderr (Broken pipe): going on without it\n"


def test_a_character_the_locale_cannot_encode_is_an_escape(tmp_path):
    path = tmp_path / "out"
    with open(path, "w", encoding="ascii") as f:
        Console(f, "stdout").write("run-\u904b\n")
    assert path.read_text() == "run-\\u904b\n"


# -----------------------------------------------------------------------------
# a locale that is not UTF-8: a non-ASCII path would fail at the first checkpoint (tokenizers, safetensors)

C_LOCALE = dict(ENV, LC_ALL="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0")  # file names are ASCII, bytes escaped


@pytest.mark.slow
@pytest.mark.parametrize("knob", ["out_dir", "init_from", "data_path"])
def test_a_non_ascii_path_under_a_non_utf8_locale_is_one_line_first(knob, tmp_path):
    named = os.fsencode(tmp_path / "run-\u00e9")
    argv = {"out_dir": [f"--init_from={TINY}"], "init_from": [], "data_path": [f"--init_from={TINY}", "--task=gsm8k"]}
    if knob == "init_from":
        shutil.copytree(os.fsencode(TINY), named)
    if knob == "data_path":
        write_jsonl(tmp_path / "x", [{"question": "1+2", "answer": "#### 3"}])
        os.rename(tmp_path / "x", named)
    out = [] if knob == "out_dir" else [f"--out_dir={tmp_path / 'run'}"]
    p = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), *argv[knob], *out,
                        b"--" + knob.encode() + b"=" + named], env=C_LOCALE, capture_output=True, timeout=300)
    line = one_error(p.stderr.decode("ascii", "backslashreplace"))
    assert p.returncode == 2 and f"{knob} '" in line and "not UTF-8" in line and "PYTHONUTF8=1" in line
    assert not os.path.exists(os.path.join(named, b"ckpt")) and not os.path.exists(tmp_path / "run" / "log.jsonl")


@pytest.mark.slow
def test_a_sweep_into_a_non_ascii_out_under_a_non_utf8_locale_is_one_line_first(tmp_path):
    named = os.fsencode(tmp_path / "sweep-\u00e9")  # every run's out_dir would fail at its first checkpoint
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "sweep.py"), "advantage", b"--out=" + named],
                       cwd=ROOT, env=C_LOCALE, capture_output=True, timeout=300)
    line = one_error(p.stderr.decode("ascii", "backslashreplace"))
    assert p.returncode == 2 and "--out '" in line and "not UTF-8" in line and not os.path.exists(named)


# -----------------------------------------------------------------------------
# glob characters in paths name only themselves

def test_a_data_file_with_brackets_is_read_not_its_glob_match(tmp_path):
    write_jsonl(tmp_path / "data[1].jsonl", [{"question": "1+1", "answer": "#### 2"}])
    write_jsonl(tmp_path / "data1.jsonl", [{"question": "5+5", "answer": "#### 10"}])  # what [1] matches
    assert [p["answer"] for p in data.load_split("gsm8k", "train", str(tmp_path / "data[1].jsonl"))] == ["#### 2"]
    split_dir = tmp_path / "run [v2]"  # a directory of split files
    split_dir.mkdir()
    write_jsonl(split_dir / "train.jsonl", [{"question": "3", "answer": "3"}])
    assert [p["answer"] for p in data.load_split("gsm8k", "train", str(split_dir))] == ["3"]


def test_a_run_and_a_model_in_directories_with_brackets(tmp_path, monkeypatch, capsys):
    import logs
    shutil.copytree(TINY, tmp_path / "m [v2]")
    run = tmp_path / "run [v2]"
    train_main(run, f"--init_from={tmp_path / 'm [v2]'}", "--max_steps=1", "--eval_problems=4")
    assert log_steps(run) == [0, 1] and logs.find_logs(str(run)) == [str(run / "log.jsonl")]  # plot.py's reader
    evaluate_main(monkeypatch, f"--init_from={run}", "--splits=test", "--eval_problems=4", "--n_samples=1")
    assert (run / "eval.json").exists()
    capsys.readouterr()


# -----------------------------------------------------------------------------
# a tokenizer larger than the model; prompts of no tokens; gold answers that never parse

def bigger_tokenizer(tmp_path):
    """tiny-arith (15 ids) with a 16th token, 'apples': what another model's tokenizer does."""
    path = tmp_path / "model"
    shutil.copytree(TINY, path)
    tok = model.load_tokenizer(str(path))
    tok.add_tokens(["apples"])
    tok.save_pretrained(str(path))
    return path


def test_a_tokenizer_with_ids_past_the_vocabulary(tmp_path, monkeypatch, capsys, no_eval):
    path = bigger_tokenizer(tmp_path)
    rows = write_jsonl(tmp_path / "d.jsonl", [{"question": "1+2 apples", "answer": "#### 3"}])
    line = fails(capsys, train_main, tmp_path / "run", f"--init_from={path}", "--task=gsm8k", f"--data_path={rows}")
    assert "has ids up to 15 but the model's vocab_size is 15" in line and str(path) in line
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated first"))
    line = fails(capsys, evaluate_main, monkeypatch, f"--init_from={path}", "--task=gsm8k", f"--data_path={rows}")
    assert "vocab_size is 15" in line


def test_a_question_of_no_tokens(tmp_path, monkeypatch, capsys, no_eval):
    """tiny-arith's tokenizer knows digits, '+' and '=' only: a question of words is no token at all."""
    rows = write_jsonl(tmp_path / "d.jsonl", [{"question": "1+2", "answer": "#### 3"},
                                              {"question": "hello", "answer": "#### 3"}])
    line = fails(capsys, train_main, tmp_path / "run", "--task=gsm8k", f"--data_path={rows}")
    assert "train problem 1 encodes to no tokens ('hello " in line
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated first"))
    line = fails(capsys, evaluate_main, monkeypatch, f"--init_from={TINY}", "--task=gsm8k", f"--data_path={rows}")
    assert "encodes to no tokens" in line


@pytest.mark.parametrize("task, answer", [("gsm8k", "The answer is 3"), ("gsm8k", "#### three"),
                                          ("math", "\\boxed{3"), ("arith", "x")])
def test_gold_answers_that_never_parse_are_refused(task, answer, capsys):
    problems = [{"prompt": "1+2", "answer": answer}] * 3
    for grader in ("nanorft", "paper"):
        line = fails(capsys, checks.check_answers, task, {"train": problems}, True, grader)
        assert f"no gold answer of the train split reads as a {task} answer under grader={grader}" in line


@pytest.mark.parametrize("task, answer", [("gsm8k", "so 3 #### 3"), ("gsm8k", "3"), ("gsm8k", "it is #### 1,000"),
                                          ("math", "so \\boxed{\\frac{1}{2}}"), ("math", "\\frac{1}{2}"),
                                          ("math", "(1, 2]"), ("arith", "130")])
def test_gold_answers_in_each_tasks_form_pass(task, answer, capsys):
    for strict, grader in ((True, "nanorft"), (False, "nanorft"), (True, "paper")):  # the paper's flexible mode
        checks.check_answers(task, {"test": [{"prompt": "q", "answer": answer}]}, strict, grader)  # keeps commas
    assert capsys.readouterr().err == ""


def test_a_run_on_answers_that_never_parse_stops_and_a_few_are_counted(tmp_path, capsys, no_eval):
    rows = write_jsonl(tmp_path / "d.jsonl", [{"question": "1+2", "answer": "The answer is 3"}] * 2)
    line = fails(capsys, train_main, tmp_path / "run", "--task=gsm8k", f"--data_path={rows}")
    assert "every reward would be 0" in line and "--task" in line
    checks.check_answers("gsm8k", {"train": [{"answer": "#### 3"}, {"answer": "three"}]}, True, "nanorft")
    assert "warning: 1 of the 2 gold answers of the train split" in capsys.readouterr().err


# -----------------------------------------------------------------------------
# numbers that pass every range check and then overflow

@pytest.mark.parametrize("key, value, says", [("learning_rate", 1e38, "learning_rate must be in (0, 1]"),
                                              ("learning_rate", 1.5, "learning_rate must be in (0, 1]"),
                                              ("weight_decay", 1e4, "learning_rate * weight_decay"),
                                              ("num_threads", 2 ** 70, "does not fit in 64 bits"),
                                              ("micro_batch_size", 2 ** 70, "does not fit in 64 bits"),
                                              ("seed", 2 ** 70, "seed")], ids=str)
def test_a_number_that_would_overflow_later_is_refused(key, value, says, capsys):
    assert says in fails(capsys, checks.check_config, dict(DEFAULTS, **{key: value}), world=1)
    checks.check_config(dict(DEFAULTS, learning_rate=1.0, weight_decay=0.99), world=1)  # the edges pass


@pytest.mark.parametrize("argv", [["--seed=-1"], [f"--seed={2 ** 70}"], [f"--top_k={2 ** 70}"]], ids=str)
def test_evaluate_refuses_numbers_past_its_generators(argv, monkeypatch, capsys):
    monkeypatch.setattr(evaluate, "evaluate", lambda *a, **k: pytest.fail("evaluated first"))
    line = fails(capsys, evaluate_main, monkeypatch, f"--init_from={TINY}", *argv)
    assert argv[0][2:].split("=")[0] in line


# -----------------------------------------------------------------------------
# where init_from points: the code's own assets from any directory; a run's out_dir is its checkpoint

def test_the_default_init_from_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert checkpoint.model_dir(evaluate.init_from) == TINY
    evaluate_main(monkeypatch, "--splits=test", "--eval_problems=4", "--n_samples=1")
    assert os.path.exists("eval.json")  # in the working directory, as before
    assert checkpoint.bundled("assets/missing") == "assets/missing"  # only what is there


def test_train_starts_from_a_runs_out_dir_as_evaluate_reads_it(run_copy, tmp_path):
    train_main(tmp_path / "next", f"--init_from={run_copy}", "--max_steps=1", "--eval_problems=4")
    state = checkpoint.load(str(tmp_path / "next"))[1]
    assert state["base"] == str(run_copy / "ckpt") and log_steps(tmp_path / "next") == [0, 1]


def test_a_fresh_run_never_starts_from_its_own_checkpoint(run_copy, capsys):
    before = snapshot(run_copy)
    line = fails(capsys, train_main, run_copy, f"--init_from={run_copy}", "--overwrite=True")
    assert "is this run's own out_dir" in line and "--init_from=resume" in line
    assert snapshot(run_copy) == before


# -----------------------------------------------------------------------------
# the datasets cache under a read-only HOME is named, not the data file

def test_an_unwritable_datasets_cache_is_named(tmp_path, monkeypatch, capsys, no_eval):
    import datasets
    (tmp_path / "home").write_text("")  # HOME a file: as unwritable for root as a read-only one is for a user
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "home" / ".cache" / "datasets"))
    rows = write_jsonl(tmp_path / "d.jsonl", [{"question": "1+2", "answer": "#### 3"}])
    line = fails(capsys, train_main, tmp_path / "run", "--task=gsm8k", f"--data_path={rows}")
    assert f"the datasets cache {tmp_path / 'home'}" in line and "HF_DATASETS_CACHE" in line
    assert str(rows) not in line

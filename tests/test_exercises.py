"""The exercises (exercises.py, EXERCISES.md) against the code they are cut from: every marker is well-formed; on
a student copy with one exercise stripped, that exercise's tests fail with its NotImplementedError while other
tests still pass; the baseline still trains with every exercise it does not need stripped. Also two focused tests
for regions no other test pins (the bandit's coverage and regret) and the baseline step the copies must keep."""
import json
import math
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch

import exercises
import train
from configurator import configure

ROOT = exercises.ROOT
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
try:
    EXERCISES = exercises.find()
except ValueError:  # test_markers_are_well_formed says what is wrong
    EXERCISES = {}
# python train.py (the baseline, with its evaluation) cannot run while one of these is stripped
BASELINE_NEEDS = {"reinforce", "coverage_regret", "pass_at_k", "kv_cache", "rope"}
# fast tests of code no exercise touches: each stripped copy must still pass them (it imports, the rest works)
OTHERS = [("tests/test_advantage.py", "test_none_returns_rewards_unchanged"),
          ("tests/test_reward.py", "test_unknown_task_or_grader"),
          ("tests/test_evaluate.py", "test_batch_indices_shuffle_each_epoch_and_are_reproducible")]
STEP = ("tests/test_exercises.py", "test_the_baseline_trains_a_step")  # also passes unless in BASELINE_NEEDS


def configure_train(monkeypatch, **overrides):
    """train.py's knobs: the defaults with these overrides, restored after the test."""
    for k, v in configure(train.DEFAULTS, [f"--{k}={v}" for k, v in overrides.items()]).items():
        monkeypatch.setitem(train.__dict__, k, v)


def test_the_baseline_trains_a_step(arith, monkeypatch):
    """The default design (raw reward, REINFORCE, token mean) samples, scores and updates: what a student copy
    must keep doing while an exercise outside the baseline is unsolved."""
    model, tok = arith
    problems = train.data.load_split("arith", "train")
    configure_train(monkeypatch, batch_size=8)
    rows, metrics, _ = train.sample_step(model, None, tok, problems, 0, dict(replay={}, solved=[], regret=0))
    before = [p.detach().clone() for p in model.parameters()]
    stats = train.update(model, None, torch.optim.SGD(model.parameters(), lr=0.1), train.ddp.select_rows([rows], 8))
    assert 0 < metrics["reward"] < 1 and math.isfinite(stats["loss"]) and stats["skipped"] == 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_the_bandit_coverage_and_regret_count_solved_prompts_and_wrong_responses(arith, monkeypatch):
    """sample_step adds the draw's prompts solved at least once to state["solved"] (sorted ids: coverage is its
    length over the number of problems) and its wrong responses to state["regret"], extra rollouts included."""
    model, tok = arith
    problems = train.data.load_split("arith", "train")
    configure_train(monkeypatch, batch_size=8, rollouts=2, extra_rollouts=1, advantage="extra", log_rollouts=24)
    state = dict(replay={}, solved=[5, 1999], regret=7)  # what earlier draws left
    _, _, examples = train.sample_step(model, None, tok, problems, 0, state)
    right = [e["index"] for e in examples if e["reward_nanorft"] == 1]
    wrong = [e["index"] for e in examples if e["reward_nanorft"] == 0]
    assert len(examples) == 24 and right and wrong  # every response of the draw, some right and some wrong
    assert state["solved"] == sorted({5, 1999} | set(right))
    assert state["regret"] == 7 + len(wrong)


# -----------------------------------------------------------------------------
# the markers and the tool


def test_markers_are_well_formed():
    found = exercises.find()  # raises for an unpaired or nested marker, a name used twice, a missing test file
    assert list(found) == list(exercises.ORDER), "exercises.ORDER must list every marked exercise, in order"
    for ex in found.values():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", ex.name) and ex.what and ex.function, ex.name
        assert all(t.startswith("tests/test_") and t.endswith(".py") for t in ex.tests[:-2]), ex.tests
    worksheet = open(os.path.join(ROOT, "EXERCISES.md"), encoding="utf-8").read()
    assert re.findall(r"^## \d+\. .*\(`(\w+)`\)$", worksheet, re.M) == list(found), \
        "EXERCISES.md's sections must be the exercises, in exercises.ORDER"


def test_list_prints_the_worksheet_in_order():
    p = subprocess.run([sys.executable, "exercises.py", "list"], cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr
    listed = re.findall(r"^ *\d+\. (\w+) +(\w+\.py):(\S+) ", p.stdout, re.M)
    assert [name for name, _, _ in listed] == list(EXERCISES)
    assert all(EXERCISES[n].path == f and EXERCISES[n].function == fn for n, f, fn in listed)
    assert p.stdout.count("tests: python -m pytest -q tests/") == len(EXERCISES)


BAD = [
    ("x = 1\n# EXERCISE a: do it (tests: tests/test_loss.py -k a)\ny = 2\n", "no END EXERCISE"),
    ("x = 1\n# END EXERCISE\n", "without an EXERCISE line"),
    ("# EXERCISE a: do it (tests: tests/test_loss.py -k a)\n# EXERCISE b: do it (tests: tests/test_loss.py -k b)\n"
     "y = 2\n# END EXERCISE\n", "no END EXERCISE before the next marker"),
    ("# EXERCISE a: do it\ny = 2\n# END EXERCISE\n", "must end with '(tests:"),
    ("# EXERCISE a: do it (tests: tests/test_loss.py)\ny = 2\n# END EXERCISE\n", "-k EXPRESSION"),
    ("def f():\n    # EXERCISE a: do it (tests: tests/test_loss.py -k a)\n        y = 2\n    # END EXERCISE\n",
     "starts at the marker's indentation"),
    ("# EXERCISE a: do it (tests: tests/test_loss.py -k a)\n# END EXERCISE\n", "must hold code"),
    ("# EXERCISE A-1: do it (tests: tests/test_loss.py -k a)\ny = 2\n# END EXERCISE\n", "malformed marker"),
]


@pytest.mark.parametrize("text, error", BAD, ids=["unclosed", "unopened", "nested", "no_tests", "no_k", "indent",
                                                  "empty", "bad_name"])
def test_malformed_markers_are_refused_with_their_line(text, error):
    with pytest.raises(ValueError, match=re.escape(error)):
        exercises.parse("f.py", text)


def test_strip_replaces_the_region_by_an_indented_raise_and_keeps_the_markers():
    text = ("def f(x):\n    if x:\n        # EXERCISE half: return half of x, a two-line\n"
            "        # header (tests: tests/test_loss.py -k \"half and not whole\")\n        y = x / 2\n\n"
            "        return y\n        # END EXERCISE\n    return 0\n")
    (ex,) = exercises.parse("f.py", text)
    assert (ex.name, ex.what, ex.function) == ("half", "return half of x, a two-line header", "f")
    assert ex.tests == ["tests/test_loss.py", "-k", "half and not whole"]
    out = exercises.stripped(text, [ex])
    assert out.splitlines()[:4] == text.splitlines()[:4] and out.splitlines()[-2:] == text.splitlines()[-2:]
    assert "y = x / 2" not in out and out.splitlines()[4].startswith("        raise NotImplementedError(")
    namespace = {}
    exec(compile(out, "f.py", "exec"), namespace)
    assert namespace["f"](0) == 0
    with pytest.raises(NotImplementedError, match="exercise half: return half of x, a two-line header; check with: "
                                                  "python -m pytest -q tests/test_loss.py -k 'half and not whole'"):
        namespace["f"](1)


@pytest.mark.parametrize("text", ['plain', 'state["solved"]', "it's", 'a \\ backslash', "-k 'a or b'"])
def test_messages_are_python_literals_of_themselves(text):
    assert eval(exercises.python_string(text)) == text


def test_strip_refuses_a_region_inside_an_expression(tmp_path, capsys):
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "tests" / "test_x.py").write_text("")
    (repo / "m.py").write_text("x = [\n    # EXERCISE a: the item (tests: tests/test_x.py -k a)\n    1,\n"
                               "    # END EXERCISE\n]\n")
    with pytest.raises(SystemExit) as e:
        exercises.strip(["a"], str(tmp_path / "out"), root=str(repo))
    assert e.value.code == 2 and "m.py does not parse with a stripped" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing copied


def test_strip_refuses_a_non_empty_out_dir_and_unknown_names(tmp_path):
    (tmp_path / "x").write_text("")
    for args, error in ((["strip", "grpo", "--out", str(tmp_path)], "not an empty directory"),
                        (["strip", "nope", f"--out={tmp_path / 'new'}"], "unknown exercise 'nope'"),
                        (["check", "nope"], "unknown exercise 'nope'"), (["strip", "grpo"], "needs exercise names")):
        p = subprocess.run([sys.executable, "exercises.py", *args], cwd=ROOT, capture_output=True, text=True)
        assert p.returncode == 2 and p.stderr.startswith("error: ") and error in p.stderr, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1


# -----------------------------------------------------------------------------
# every exercise stripped, one at a time


# One Python process imports torch, pytest and transformers once and forks a pytest run per job, two at a time:
# a fresh interpreter per stripped copy would spend most of this file's time importing them again.
FORK_SERVER = r"""
import contextlib, io, json, os, sys, tempfile
import hypothesis, pytest, torch, torch._dynamo  # torch.optim imports _dynamo at its first step (1-2 s)
from transformers import AutoTokenizer
AutoTokenizer.from_pretrained(sys.argv[1])  # imports the tokenizer's modules
torch.set_num_threads(1)
with tempfile.TemporaryDirectory() as empty, contextlib.redirect_stdout(io.StringIO()):
    pytest.main(["-q", "-p", "no:cacheprovider", "--collect-only", empty])  # imports pytest's plugins
running = {}
for line in list(sys.stdin) + [None] * 2:
    if len(running) == 2 or (line is None and running):
        running.pop(os.wait()[0])
    if line is None:
        continue
    root, args = json.loads(line)
    pid = os.fork()
    if pid == 0:
        os.chdir(root)
        sys.path.insert(0, root)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1), os.dup2(null, 2)
        os._exit(int(pytest.main(args)))
    running[pid] = root
"""


def run_tests(jobs, reports):
    """jobs: {key: (root, files, expression)} -> {key: {(file, function, case id): (outcome, message)}}: pytest in
    root (the repo or a copy) on the non-slow tests of `files` that -k `expression` selects; reports: a directory
    for its JUnit files."""
    xml = {key: os.path.join(reports, f"junit-{i}.xml") for i, key in enumerate(jobs)}
    lines = [json.dumps([root, ["-q", "-p", "no:cacheprovider", f"--junitxml={xml[key]}", "-m", "not slow", *files,
                                "-k", expression]]) for key, (root, files, expression) in jobs.items()]
    p = subprocess.run([sys.executable, "-c", FORK_SERVER, os.path.join(ROOT, "assets", "tiny-arith")],
                       input="\n".join(lines), capture_output=True, text=True, env=ENV, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    results = {}
    for key in jobs:
        assert os.path.exists(xml[key]), f"pytest wrote no report in {jobs[key][0]} (a crash?)"
        cases = results[key] = {}
        for case in ET.parse(xml[key]).iter("testcase"):
            failed = case.find("failure") if case.find("failure") is not None else case.find("error")
            outcome = "skipped" if case.find("skipped") is not None else "failed" if failed is not None else "passed"
            name = case.get("name")
            where = (case.get("classname").replace(".", "/") + ".py", name.split("[")[0], name)
            cases[where] = (outcome, "" if failed is None else (failed.get("message") or "") + (failed.text or ""))
    return results


def others_of(name):
    return OTHERS + ([] if name in BASELINE_NEEDS else [STEP])


@pytest.fixture(scope="module")
def stripped_runs(tmp_path_factory):
    """For each exercise, a copy of the repo with it alone stripped, and the results there of its tests and of
    the other fast tests; under "repo", the results of every exercise's tests on the repo itself."""
    jobs = {"repo": (ROOT, sorted({t for ex in EXERCISES.values() for t in ex.tests[:-2]}),
                     " or ".join(f"({ex.tests[-1]})" for ex in EXERCISES.values()))}
    for name, ex in EXERCISES.items():
        copy = str(tmp_path_factory.mktemp(name) / "copy")
        exercises.strip([name], copy)
        others = others_of(name)
        jobs[name] = (copy, sorted(set(ex.tests[:-2]) | {f for f, _ in others}),
                      f"({ex.tests[-1]}) or " + " or ".join(fn for _, fn in others))
    return run_tests(jobs, str(tmp_path_factory.mktemp("reports")))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXERCISES))
def test_a_stripped_exercise_fails_its_tests_and_no_others(name, stripped_runs):
    ex, cases, others = EXERCISES[name], stripped_runs[name], others_of(name)
    own = {k: v for k, v in cases.items() if k[:2] not in others}
    assert own, f"{ex.command()} selects no (fast) test"
    for (_, _, case), (outcome, message) in own.items():
        assert outcome == "failed" and f"NotImplementedError: exercise {name}:" in message, \
            f"{case} {outcome} with exercise {name} stripped: it does not test the region ({message[:300]})"
    for f, fn in others:
        got = [outcome for k, (outcome, _) in cases.items() if k[:2] == (f, fn)]
        assert got and set(got) == {"passed"}, f"{f}::{fn} {got} with exercise {name} stripped"


@pytest.mark.slow
def test_every_exercise_passes_on_the_repo(stripped_runs):
    cases = stripped_runs["repo"]
    assert cases and {k: v for k, v in cases.items() if v[0] != "passed"} == {}


@pytest.mark.slow
def test_the_baseline_trains_with_the_other_exercises_stripped_and_check_says_what_to_do(tmp_path):
    copy = tmp_path / "copy"
    todo = [n for n in EXERCISES if n not in BASELINE_NEEDS]
    exercises.strip(todo, str(copy))
    p = subprocess.run([sys.executable, "train.py", "--max_steps=2", "--eval_interval=2", "--eval_problems=8",
                        "--batch_size=4", f"--out_dir={tmp_path / 'run'}"], cwd=copy, capture_output=True,
                       text=True, env=ENV, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    assert [line for line in open(tmp_path / "run" / "log.jsonl")][-1].startswith('{"step": 2')
    p = subprocess.run([sys.executable, "exercises.py", "check", "grpo"], cwd=copy, capture_output=True, text=True,
                       env=ENV, timeout=600)
    where = f"advantage.py:{EXERCISES['grpo'].body + 1} (compute_advantages)"
    assert p.returncode == 1 and f"FAIL  grpo: not implemented yet: replace the raise at {where}" in p.stdout

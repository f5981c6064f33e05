"""What a student sees of the worksheet: check's verdicts, table and JSON on hand-made test records, a copy graded
over what strip assigned there, a copy's docs that hide the answers, and train.py in a copy with exercises stripped
(it trains without the others, and stops at a stripped one with its one line)."""
import json
import os
import subprocess
import sys

import pytest

import exercises
from test_worksheet import BASELINE_NEEDS, ENV, EXERCISES, ROOT


# -----------------------------------------------------------------------------
# check's verdicts and table on hand-made test records


def record(test, outcome="passed", **kw):
    return dict(test=test, outcome=outcome, **kw)


VERDICTS = [  # (records, status, a piece of the summary)
    ([record("t::a"), record("t::b", "skipped", blocked_by="rope")], "PASS", "1 of 2 tests pass, 1 blocked by "
                                                                             "exercise rope"),
    ([record("t::a", "failed", todo=True, error="NotImplementedError", at="loss.py:31")], "TODO",
     "not implemented yet: replace the raise at"),
    ([record("t::a", "failed", todo=True, error="NotImplementedError", at="loss.py:31"),
      record("t::b", "failed", error="AssertionError", at="tests/t.py:9")], "WRONG", "disagrees with t::b"),
    ([record("t::a", "failed", error="TypeError", at="loss.py:32", text="E   TypeError: bad operand")], "RAISES",
     "raises TypeError at loss.py:32 in t::a"),
    ([record("t::a", "skipped", blocked_by="rope"), record("t::b", "skipped", blocked_by="kv_cache")], "BLOCKED",
     "every test needs exercise kv_cache, rope, still stripped"),
    ([], "EMPTY", "selects no test"),
]


@pytest.mark.parametrize("records, status, summary", VERDICTS, ids=[v[1] for v in VERDICTS])
def test_verdicts_tell_todo_wrong_raises_and_blocked_apart(records, status, summary):
    result = exercises.verdict(EXERCISES["reinforce"], records)
    assert result["status"] == status and summary in result["summary"], result


def test_check_all_prints_a_table_to_grade_from_and_json(monkeypatch, capsys):
    canned = {"reinforce": VERDICTS[0][0], "grpo": VERDICTS[3][0]}
    monkeypatch.setattr(exercises, "run_tests", lambda ex, root: canned.get(ex.name, VERDICTS[1][0]))
    results = exercises.check(["all"])
    out = capsys.readouterr().out
    assert len(results) == len(EXERCISES) and f"1 of {len(EXERCISES)} exercises pass" in out
    table = out[out.index("\nexercise "):].splitlines()[2:-1]
    assert [row.split()[:2] for row in table] == [[n, dict(reinforce="PASS", grpo="RAISES").get(n, "TODO")]
                                                  for n in EXERCISES]
    assert "---- t::a (what it expects is left out: the values are on the E lines)\nE   TypeError: bad operand\n" \
           "----\nRAISES  grpo: raises TypeError at loss.py:32" in out
    exercises.check(["reinforce", "grpo"], as_json=True)
    out = json.loads(capsys.readouterr().out)
    assert (out["passed"], out["total"]) == (1, 2) and out["exercises"][0]["blocked_by"] == ["rope"]
    assert out["exercises"][1]["first_failure"] == dict(test="t::a", error="TypeError", at="loss.py:32")


def test_check_all_in_a_copy_grades_what_strip_assigned_there(tmp_path, monkeypatch, capsys):
    """strip writes the assignment into the copy (MANIFEST); `check all` there checks and scores those exercises
    only, and an exercise named though not assigned is checked but no grade."""
    copy = tmp_path / "copy"
    exercises.strip(["rloo", "grpo"], str(copy))
    assert json.loads((copy / exercises.MANIFEST).read_text()) == dict(assigned=["grpo", "rloo"])
    canned = {"grpo": VERDICTS[0][0], "top_p": VERDICTS[0][0]}
    monkeypatch.setattr(exercises, "run_tests", lambda ex, root: canned.get(ex.name, VERDICTS[1][0]))
    results = exercises.check(["all"], root=str(copy))
    out = capsys.readouterr().out
    assert [r["name"] for r in results] == ["grpo", "rloo"]
    assert "1 of 2 assigned exercises pass (2 assigned in this copy: grpo, rloo)" in out
    exercises.check(["grpo", "top_p"], root=str(copy), as_json=True)
    out = json.loads(capsys.readouterr().out)
    assert (out["passed"], out["total"], out["assigned"]) == (1, 1, ["grpo", "rloo"])
    assert [(r["name"], r["status"], r["assigned"]) for r in out["exercises"]] == [("grpo", "PASS", True),
                                                                                   ("top_p", "PASS", False)]
    for bad in ('{"assigned": ["grpo", "nope"]}', "not json", '["grpo"]'):
        (copy / exercises.MANIFEST).write_text(bad)
        with pytest.raises(SystemExit) as e:
            exercises.check(["all"], root=str(copy))
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and "put back the one of the copy handed out" in err


# -----------------------------------------------------------------------------
# a student's copy: its docs, and train.py in it with exercises stripped


@pytest.mark.slow
def test_a_copys_docs_hide_the_stripped_solutions_but_not_the_tasks(tmp_path):
    """The README's formula -> code table points at the exercise instead of each stripped solution's line, the
    answer key is left out, and the code next to an exercise does not repeat its answer (extra runs grpo's)."""
    copy = tmp_path / "copy"
    exercises.strip(["all"], str(copy))
    readme, worksheet = (copy / "README.md").read_text(), (copy / "EXERCISES.md").read_text()
    original = open(os.path.join(ROOT, "README.md")).read()
    for shown in ("torch.exp(-log_ratio) - 1 + log_ratio", "-advantages * logprobs", "(r - mean) / (std + eps)",
                  "r - (r.sum(1, keepdim=True) - r) / (n - 1)", "torch.maximum(surrogate, surrogate_clipped)"):
        assert shown not in readme and shown in original
    for name in ("reinforce", "grpo", "rloo", "ppo_clip", "k3", "pass_at_k", "coverage_regret"):
        assert f"| (exercise {name}) |" in readme, name
    assert "`dual_clip > 0`" in worksheet and "`x.sum() / n_tokens`" in readme  # a task; a line nobody strips
    key = open(os.path.join(ROOT, exercises.ANSWER_KEY)).read()
    assert (copy / exercises.ANSWER_KEY).read_text() == exercises.KEY_NOTE and "## 1." in key
    answer = "torch.where(all_equal(r), 0.0, (r - mean) / (std + eps))"  # grpo's line, once "extra"'s too
    assert answer in open(os.path.join(ROOT, "advantage.py")).read()
    assert answer not in (copy / "advantage.py").read_text()


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
    p = subprocess.run([sys.executable, "tools/exercises.py", "check", "grpo", "reinforce", "--json"], cwd=copy,
                       capture_output=True, text=True, env=ENV, timeout=600)
    where = f"advantage.py:{EXERCISES['grpo'].body + 1} (compute_advantages)"
    out = json.loads(p.stdout)
    # reinforce passes but is no grade: the copy did not assign it
    assert p.returncode == 1 and (out["passed"], out["total"], out["assigned"]) == (0, 1, todo), p.stdout
    assert [(r["name"], r["status"], r["assigned"]) for r in out["exercises"]] == [("grpo", "TODO", True),
                                                                                   ("reinforce", "PASS", False)]
    assert out["exercises"][0]["summary"].startswith(f"not implemented yet: replace the raise at {where}")


def test_a_run_that_reaches_a_stripped_exercise_ends_with_its_one_line(tmp_path):
    """train.py in a copy whose pass_at_k is still to write stops at the step-0 evaluation with the exercise's
    own message as one `error:` line, exit 2, not a traceback (configurator.quiet_interrupt)."""
    copy = tmp_path / "copy"
    exercises.strip(["pass_at_k"], str(copy))
    p = subprocess.run([sys.executable, "train.py", "--max_steps=1", "--eval_problems=4",
                        f"--out_dir={tmp_path / 'run'}"], cwd=copy, capture_output=True, text=True, env=ENV,
                       timeout=600)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert p.stderr.splitlines()[-1].startswith("error: exercise pass_at_k: "), p.stderr[-2000:]

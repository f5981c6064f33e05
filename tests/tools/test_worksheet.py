"""The worksheet's tooling (tools/exercises.py, tools/markers.py, EXERCISES.md): every marker is well-formed and a
malformed one is refused with its line; strip replaces a region by an indented raise and refuses what it cannot
strip or copy; list and log print what the worksheet quotes; check's report hides what a test expects. Holds what
the other worksheet tests import (ROOT, ENV, EXERCISES, BASELINE_NEEDS). Each exercise stripped, solved and answered
wrongly: test_worksheet_stripped.py; check's verdicts and a student's copy: test_worksheet_check.py."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import exercises
import markers

ROOT = exercises.ROOT
ENV = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
try:
    EXERCISES = markers.find(ROOT)
except ValueError:  # test_markers_are_well_formed says what is wrong
    EXERCISES = {}
# python train.py (the baseline, with its evaluation) cannot run while one of these is stripped: the worksheet puts
# them before its first training experiment (coverage_regret's), or leaves them solved in `strip all`
BASELINE_NEEDS = {"reinforce", "coverage_regret", "pass_at_k", "kv_cache", "rope"}


# -----------------------------------------------------------------------------
# the markers and the tool


def test_markers_are_well_formed():
    found = markers.find(ROOT)  # raises for an unpaired or nested marker, a name used twice, a missing test file
    assert list(found) == list(markers.ORDER), "markers.ORDER must list every marked exercise, in order"
    before_training = markers.ORDER[:markers.ORDER.index("coverage_regret") + 1]
    assert BASELINE_NEEDS <= set(before_training) | set(exercises.ON_REQUEST) <= set(found)
    for ex in found.values():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", ex.name) and ex.what and ex.function, ex.name
        assert all(t.startswith("tests/test_") and t.endswith(".py") for t in ex.tests[:-2]), ex.tests
    worksheet = open(os.path.join(ROOT, "EXERCISES.md"), encoding="utf-8").read()
    assert re.findall(r"^## \d+\. .*\(`(\w+)`\)$", worksheet, re.M) == list(found), \
        "EXERCISES.md's sections must be the exercises, in markers.ORDER"
    assert re.findall(r"^\| \d+ \| `(\w+)` \|", worksheet, re.M) == list(found), \
        "EXERCISES.md's instructor table must list the exercises, in markers.ORDER"


def test_list_prints_the_worksheet_in_order():
    p = subprocess.run([sys.executable, "tools/exercises.py", "list"], cwd=ROOT, capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr
    listed = re.findall(r"^ *\d+\. (\w+) +([\w/]+\.py):(\S+) ", p.stdout, re.M)
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
        markers.parse("f.py", text)


def test_strip_replaces_the_region_by_an_indented_raise_and_keeps_the_markers():
    text = ("def f(x):\n    if x:\n        # EXERCISE half: return half of x, a two-line\n"
            "        # header (tests: tests/test_loss.py -k \"half and not whole\")\n        y = x / 2\n\n"
            "        return y\n        # END EXERCISE\n    return 0\n")
    (ex,) = markers.parse("f.py", text)
    assert (ex.name, ex.what, ex.function) == ("half", "return half of x, a two-line header", "f")
    assert ex.tests == ["tests/test_loss.py", "-k", "half and not whole"]
    out = markers.stripped(text, [ex])
    assert out.splitlines()[:4] == text.splitlines()[:4] and out.splitlines()[-2:] == text.splitlines()[-2:]
    assert "y = x / 2" not in out and out.splitlines()[4].startswith("        raise NotImplementedError(")
    namespace = {}
    exec(compile(out, "f.py", "exec"), namespace)
    assert namespace["f"](0) == 0
    with pytest.raises(NotImplementedError, match=re.escape(
            "exercise half: return half of x, a two-line header; check with: python tools/exercises.py check half "
            "(python -m pytest -q tests/test_loss.py -k 'half and not whole')")):
        namespace["f"](1)


@pytest.mark.parametrize("text", ['plain', 'state["solved"]', "it's", 'a \\ backslash', "-k 'a or b'"])
def test_messages_are_python_literals_of_themselves(text):
    assert eval(markers.python_string(text)) == text


def test_strip_refuses_a_region_inside_an_expression(tmp_path, capsys):
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "machinery").mkdir()
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
        p = subprocess.run([sys.executable, "tools/exercises.py", *args], cwd=ROOT, capture_output=True, text=True)
        assert p.returncode == 2 and p.stderr.startswith("error: ") and error in p.stderr, (args, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1


def test_a_copy_that_cannot_be_written_ends_in_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """A disk that fills halfway through the copy: one line, and no half copy a student might start from."""
    real_copy, copied = shutil.copy2, []

    def full_disk(src, dst, *args, **kwargs):
        if len(copied) == 3:
            open(dst, "w").close()  # created, as on a full disk, then the write fails
            raise OSError(28, "No space left on device")
        copied.append(dst)
        return real_copy(src, dst, *args, **kwargs)
    monkeypatch.setattr(exercises.shutil, "copy2", full_disk)
    for out, existed in ((tmp_path / "new", False), (tmp_path / "empty", True)):
        out.mkdir() if existed else None
        copied.clear()
        with pytest.raises(SystemExit) as e:
            exercises.main(["strip", "grpo", f"--out={out}"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and err.count("\n") == 1 and "No space left on device" in err, err
        assert out.exists() == existed and (not existed or not any(out.iterdir()))


def test_a_failing_tests_report_keeps_its_values_but_not_what_it_expects():
    """hide_expected on pytest's report: in the tests' frames an assertion keeps its actual side (assert_close's
    first argument, an assert's left side), continuation lines and all; the E lines and other frames stay."""
    report = "\n".join([
        "def test_x():",
        "        got = f(2)",
        "        torch.testing.assert_close(g(got, 1), -adv * logprobs, atol=1e-6)",
        "        assert got == pytest.approx(",
        "            (1 + 2) / 3)",
        ">       assert got.item() <= 2 * x, (got, x)",
        "E       assert 5.0 <= 4.0",
        "",
        "tests/test_x.py:5: AssertionError",
        "_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ ",
        "    def helper(a):",
        ">       assert a == 3 * b",
        "E       assert 1 == 6",
        "",
        "loss.py:9: AssertionError"])
    shown = markers.hide_expected(report).splitlines()
    assert shown[:5] == ["def test_x():", "        got = f(2)", "        torch.testing.assert_close(g(got, 1), ...)",
                         "        assert got == ...", ">       assert got.item() <= ..."], shown
    assert shown[5:] == report.splitlines()[6:]  # the values, and a frame outside tests/ as it was


def test_hidden_and_backup_copies_of_a_file_are_not_read_as_a_second_marking(tmp_path):
    (tmp_path / "tests").mkdir()
    (tmp_path / "machinery").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("")
    region = "# EXERCISE a: the item (tests: tests/test_x.py -k a)\nx = 1\n# END EXERCISE\n"
    for name in ("m.py", ".m.py", "#m.py#", "m.py~", "m.py.bak", "m.orig", "machinery/.m.py"):
        (tmp_path / name).write_text(region)
    assert [(ex.name, ex.path) for ex in markers.find(str(tmp_path)).values()] == [("a", "m.py")]
    (tmp_path / "m_old.py").write_text(region)  # a copy that is neither: says what to do
    with pytest.raises(ValueError, match=re.escape("marked twice: m.py and m_old.py; if one is a copy, give it a "
                                                   "hidden or backup name (.NAME.py, NAME.py.bak), which are not "
                                                   "read")):
        markers.find(str(tmp_path))


def test_log_prints_a_runs_keys_first_mean_min_max_last(tmp_path):
    """The worksheet quotes a run's averages of logged keys (zero_var_frac, ratio, kl ...): log prints them."""
    lines = [{"step": 0, "time": 0.0, "responses": 0, "test_pass@1": 0.25, "train_pass@1": 0.5},
             {"step": 1, "time": 1.0, "responses": 8, "kl": -0.5},
             {"step": 2, "time": 2.0, "responses": 16, "kl": 2.0, "test_pass@1": 0.75, "train_pass@1": 0.5}]
    (tmp_path / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    p = subprocess.run([sys.executable, "tools/exercises.py", "log", str(tmp_path), "kl", "test_pass@1"], cwd=ROOT,
                       capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr
    assert [line.split() for line in p.stdout.splitlines()] == [
        ["key", "lines", "first", "mean", "min", "max", "last"],
        ["kl", "2", "-0.5", "0.75", "-0.5", "2", "2"], ["test_pass@1", "2", "0.25", "0.5", "0.25", "0.75", "0.75"]]
    for args, error in (([str(tmp_path), "nope"], "nope not in"), ([str(tmp_path / "x"), "kl"], "does not exist")):
        p = subprocess.run([sys.executable, "tools/exercises.py", "log", *args], cwd=ROOT, capture_output=True,
                           text=True, env=ENV)
        assert p.returncode == 2 and p.stderr.startswith("error: ") and error in p.stderr, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1

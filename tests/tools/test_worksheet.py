"""The worksheet's tooling (tools/exercises.py, tools/markers.py, EXERCISES.md) against the code it is cut from:
every marker is well-formed; on a student copy with one exercise stripped, that exercise's tests fail with its
NotImplementedError while other tests still pass; each exercise solved alone in a worksheet copy passes its check;
the wrong answers a student would plausibly write (WRONG) each fail their check; a copy hides the answers (in its
docs and in check's output) and is graded over what it assigns."""
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
# fast tests of code no exercise touches: each stripped copy must still pass them (it imports, the rest works)
OTHERS = [("tests/test_advantage.py", "test_none_returns_rewards_unchanged"),
          ("tests/test_reward.py", "test_unknown_task_or_grader"),
          ("tests/test_evaluate.py", "test_batch_indices_shuffle_each_epoch_and_are_reproducible")]
STEP = ("tests/test_exercises.py", "test_the_baseline_trains_a_step")  # also passes unless in BASELINE_NEEDS


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
    """jobs: {key: (root, files, expression, exercise)} -> {key: [test records]}: pytest in root (the repo or a
    copy) on the non-slow tests of `files` that -k `expression` selects, as `exercises.py check exercise` runs them
    (--exercise; "" for none), each test's record as tests/conftest.py writes it; reports: a directory for them."""
    out = {key: os.path.join(reports, f"records-{i}.json") for i, key in enumerate(jobs)}
    lines = [json.dumps([root, ["-q", "-p", "no:cacheprovider", f"--exercise={exercise}",
                                f"--exercise-report={out[key]}", "-m", "not slow", *files, "-k", expression]])
             for key, (root, files, expression, exercise) in jobs.items()]
    p = subprocess.run([sys.executable, "-c", FORK_SERVER, os.path.join(ROOT, "assets", "tiny-arith")],
                       input="\n".join(lines), capture_output=True, text=True, env=ENV, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    results = {}
    for key in jobs:
        assert os.path.exists(out[key]), f"pytest wrote no records in {jobs[key][0]} (a crash?)"
        with open(out[key], encoding="utf-8") as fh:
            results[key] = json.load(fh)
    return results


def others_of(name):
    return OTHERS + ([] if name in BASELINE_NEEDS else [STEP])


def group_of(name):
    """The worksheet copy an exercise is done in: `strip all`, or all and the model's exercises for those."""
    return ["all", *exercises.ON_REQUEST] if name in exercises.ON_REQUEST else ["all"]


# The wrong answers a student would plausibly write, in each exercise's region: (exercise, a piece of the solution,
# what the student wrote instead, the status check gives). Each must fail its check: a test that lets one pass has a
# hole (a two-sided TIS clamp passed until a ratio below 1/cap was tested). RAISES: an exception, not a PASS.
WRONG = [
    ("reinforce", "return -advantages * logprobs", "return advantages * logprobs", "WRONG"),  # the sign
    ("reinforce", "-advantages * logprobs,", "-advantages * logprobs.exp(),", "WRONG"),  # the probability
    ("reinforce", "-advantages * logprobs,", "-(advantages * logprobs).mean(),", "WRONG"),  # aggregated here
    ("pass_at_k", "if n - c < k:", "if n - c <= k:", "WRONG"),  # off by one
    ("pass_at_k", "return 1.0 - math.comb(n - c, k) / math.comb(n, k)", "return 1.0 - (1 - c / n) ** k",
     "WRONG"),  # with replacement: biased
    ("pass_at_k", "math.comb(n, k)", "math.comb(n, c)", "WRONG"),  # the other binomial
    ("coverage_regret", "correct[grader].any(1)", "correct[grader].all(1)", "WRONG"),  # solved: all right
    ("coverage_regret", "correct[grader].numel() - correct[grader].sum().item()",
     "correct[grader][:, :rollouts].numel() - correct[grader][:, :rollouts].sum().item()",
     "WRONG"),  # the extra rollouts left out
    ("coverage_regret", 'state["regret"] +=', 'state["regret"] =', "WRONG"),  # this draw's only
    ("grpo", "mean, std = group_stats(r)", "mean, std = r.mean(1, keepdim=True), r.std(1, keepdim=True)",
     "WRONG"),  # no group-of-one convention: NaN at n = 1
    ("grpo", "mean, std = group_stats(r)", "mean, std = group_stats(r)[0], r.std(1, keepdim=True, unbiased=False)",
     "WRONG"),  # ddof 0
    ("grpo", "torch.where(all_equal(r), 0.0, (r - mean) / (std + eps))", "(r - mean) / (std + eps)",
     "WRONG"),  # an all-equal group of floats: rounding / eps
    ("grpo", "(std + eps)", "std", "WRONG"),  # no eps
    ("grpo", "mean, std = group_stats(r)", "mean, std = group_stats(r.reshape(1, -1))", "WRONG"),  # the batch's
    ("rloo", "r.sum(1, keepdim=True)", "r.sum(2, keepdim=True)", "RAISES"),  # an exception in the region
    ("rloo", "r - (r.sum(1, keepdim=True) - r) / (n - 1)", "r - r.mean(1, keepdim=True)",
     "WRONG"),  # the response itself in its baseline
    ("rloo", "/ (n - 1)", "/ n", "WRONG"),  # off by one
    ("rloo", "torch.where(all_equal(r), 0.0, r - (r.sum(1, keepdim=True) - r) / (n - 1))",
     "r - (r.sum(1, keepdim=True) - r) / (n - 1)", "WRONG"),  # an all-equal group of floats: ~1e-8 left
    ("aggregate", "(x.sum(1) / mask.sum(1).clamp(min=1)).sum() / n_seqs", "x.sum() / n_tokens",
     "WRONG"),  # token mean
    ("aggregate", "(x.sum(1) / mask.sum(1).clamp(min=1)).sum() / n_seqs",
     "(x.sum(1) / mask.sum(1).clamp(min=1)).mean()", "WRONG"),  # the micro-batch's mean, not the minibatch's
    ("aggregate", "(x.sum(1) / mask.sum(1).clamp(min=1)).sum() / n_seqs", "(x.sum(1) / mask.sum(1)).sum() / n_seqs",
     "WRONG"),  # 0 / 0 for a response with no trained token
    ("aggregate", "x.sum() / (n_seqs * max_new_tokens)", "x.sum() / n_seqs", "WRONG"),  # no constant length
    ("aggregate", "x.sum() / (n_seqs * max_new_tokens)", "x.sum() / (mask.sum(1).max() * n_seqs)",
     "WRONG"),  # the longest response, not max_new_tokens
    ("gsm8k", 'text.rfind("####")', 'text.find("####")', "WRONG"),  # the first ####
    ("gsm8k", "_GSM_NUMBER.match(text[i + 4:].lstrip())", "_GSM_NUMBER.search(text[i + 4:])",
     "WRONG"),  # any number after it
    ("gsm8k", "_clean_number(m.group())", "m.group()", "WRONG"),  # not cleaned
    ("gsm8k", "for m in _GSM_NUMBER.finditer(text):\n            pass", "m = _GSM_NUMBER.search(text)",
     "WRONG"),  # the first number
    ("ppo_clip", "torch.maximum(surrogate, surrogate_clipped)", "torch.minimum(surrogate, surrogate_clipped)",
     "WRONG"),  # optimistic
    ("ppo_clip", "loss = torch.maximum(surrogate, surrogate_clipped)", "loss = surrogate_clipped",
     "WRONG"),  # the clipped side only
    ("ppo_clip", "torch.where(advantages < 0, torch.minimum(loss, -dual_clip * advantages), loss)",
     "torch.minimum(loss, -dual_clip * advantages)", "WRONG"),  # dual-clip on positive advantages too
    ("ppo_clip", "-dual_clip * advantages", "dual_clip * advantages", "WRONG"),  # dual-clip's sign
    ("ppo_clip", "(surrogate_clipped > surrogate)", "(clipped != ratio)", "WRONG"),  # every ratio outside
    ("ppo_clip", "((surrogate_clipped > surrogate).float() * mask).sum()",
     "((surrogate_clipped > surrogate).float() * mask).mean()", "WRONG"),  # a fraction, not a count
    ("k3", "torch.exp(-log_ratio) - 1 + log_ratio", "torch.exp(log_ratio) - 1 - log_ratio", "WRONG"),  # direction
    ("k3", "torch.exp(-log_ratio) - 1 + log_ratio", "torch.exp(-log_ratio) - 1 - log_ratio", "WRONG"),  # a sign
    ("k3", "torch.exp(-log_ratio) - 1 + log_ratio", "0.5 * log_ratio ** 2", "WRONG"),  # k2
    ("tis", "torch.exp(log_ratio).clamp(max=cap)", "torch.exp(log_ratio).clamp(1 / cap, cap)",
     "WRONG"),  # two-sided
    ("tis", "torch.exp(log_ratio).clamp(max=cap)", "torch.exp(-log_ratio).clamp(max=cap)", "WRONG"),  # inverted
    ("tis", "torch.exp(log_ratio).clamp(max=cap)", "torch.exp(log_ratio.clamp(max=cap))", "WRONG"),  # log's cap
    ("tis", "torch.exp(log_ratio).clamp(max=cap)", "torch.exp(log_ratio).clamp(min=cap)", "WRONG"),  # other side
    ("rope", "torch.cat((-x2, x1), dim=-1)", "torch.cat((x2, -x1), dim=-1)", "WRONG"),  # clockwise
    ("rope", "x1, x2 = x.chunk(2, dim=-1)", "x1, x2 = x[..., 0::2], x[..., 1::2]", "WRONG"),  # interleaved
    ("rope", "x * cos + torch.cat((-x2, x1), dim=-1) * sin", "x * cos - torch.cat((-x2, x1), dim=-1) * sin",
     "WRONG"),  # the angle's sign
    ("kv_cache", "pos + t,", "pos + t + 1,", "WRONG"),  # off-by-one position
    ("kv_cache", "tokens[:, P + t]", "tokens[:, P + t - 1]", "WRONG"),  # the previous token
    ("kv_cache", "cols[t]", "cols[t] + 1", "WRONG"),  # the cache column one to the right
    ("kv_cache", "cols[t], keys", "cols[t], valid", "WRONG"),  # the prompts' keys only, not the response's
    ("top_p", ">= top_p", "> top_p", "WRONG"),  # an exact tie
    ("top_p", "(p.cumsum(-1) - p) >= top_p", "p.cumsum(-1) > top_p", "WRONG"),  # drops the token that reaches p
    ("top_p", 'logits = logits.masked_fill(drop.scatter(-1, idx, drop), float("-inf"))',
     'logits = logits.masked_fill(drop, float("-inf"))', "WRONG"),  # sorted order, not the vocabulary's
    ("top_p", "drop = (p.cumsum(-1) - p) >= top_p",
     "drop = sorted_logits < sorted_logits.gather(-1, ((p.cumsum(-1) - p) < top_p).sum(-1, keepdim=True) - 1)",
     "WRONG"),  # top-k's pattern: ties with the last kept token stay
]


def test_every_exercise_has_planted_wrong_answers():
    assert {name for name, *_ in WRONG} == set(EXERCISES)


@pytest.fixture(scope="module")
def stripped_runs(tmp_path_factory):
    """The results (test records) of exercises' tests: under "repo", every exercise's on the repo itself; under
    name, a copy with that exercise alone stripped (its tests and the other fast tests); under ("solved", name), a
    worksheet copy (group_of) with every exercise stripped but that one; under ("wrong", i), the repo with
    WRONG[i]'s answer in its exercise's region."""
    jobs = {"repo": (ROOT, sorted({t for ex in EXERCISES.values() for t in ex.tests[:-2]}),
                     " or ".join(f"({ex.tests[-1]})" for ex in EXERCISES.values()), "")}
    for name, ex in EXERCISES.items():
        copy = str(tmp_path_factory.mktemp(name) / "copy")
        exercises.strip([name], copy)
        others = others_of(name)
        jobs[name] = (copy, sorted(set(ex.tests[:-2]) | {f for f, _ in others}),
                      f"({ex.tests[-1]}) or " + " or ".join(fn for _, fn in others), name)
        copy = str(tmp_path_factory.mktemp(name) / "solved")
        exercises.strip([n for n in exercises.chosen(group_of(name), EXERCISES) if n != name], copy)
        jobs["solved", name] = (copy, ex.tests[:-2], ex.tests[-1], name)
    for i, (name, solution, wrong, _) in enumerate(WRONG):
        ex, copy = EXERCISES[name], tmp_path_factory.mktemp(name) / "wrong"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "out", "__pycache__", ".pytest_cache"))
        text = (copy / ex.path).read_text()
        region = "".join(text.splitlines(keepends=True)[ex.body:ex.end])
        assert region.count(solution) == 1, f"WRONG's {solution!r} is not in exercise {name}'s region once"
        (copy / ex.path).write_text(text.replace(region, region.replace(solution, wrong)))
        jobs["wrong", i] = (str(copy), ex.tests[:-2], ex.tests[-1], name)
    return run_tests(jobs, str(tmp_path_factory.mktemp("reports")))


def key_of(record):
    """(file, function) of a test record, e.g. ("tests/test_loss.py", "test_loss_aggregations")."""
    f, name = record["test"].split("::", 1)
    return f, name.split("[")[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXERCISES))
def test_a_stripped_exercise_fails_its_tests_and_no_others(name, stripped_runs):
    ex, records, others = EXERCISES[name], stripped_runs[name], others_of(name)
    own = [r for r in records if key_of(r) not in others]
    assert own, f"{ex.command()} selects no (fast) test"
    for r in own:
        assert r["outcome"] == "failed" and r.get("todo") and f"NotImplementedError: exercise {name}:" in r["text"], \
            f"{r['test']} {r['outcome']} with exercise {name} stripped: it does not test the region ({r}"[:600]
    for f, fn in others:
        got = [r["outcome"] for r in records if key_of(r) == (f, fn)]
        assert got and set(got) == {"passed"}, f"{f}::{fn} {got} with exercise {name} stripped"
    assert exercises.verdict(ex, own)["status"] == "TODO"


@pytest.mark.slow
def test_every_exercise_passes_on_the_repo(stripped_runs):
    records = stripped_runs["repo"]
    assert records and [r for r in records if r["outcome"] != "passed"] == []


@pytest.mark.slow
@pytest.mark.parametrize("name", list(EXERCISES))
def test_in_a_worksheet_copy_each_exercise_solved_alone_passes_its_check(name, stripped_runs, tmp_path):
    """`strip all`, then one exercise's solution back: its check passes, tests that need a still-stripped exercise
    are skipped as blocked by it, and nothing else changed. A model exercise (stripped by name) may be blocked only
    by the model exercises before it in the worksheet (kv_cache runs the model, so it needs rope)."""
    ex, records = EXERCISES[name], stripped_runs["solved", name]
    result = exercises.verdict(ex, records)
    earlier = set(markers.ORDER[:markers.ORDER.index(name)]) if name in markers.ORDER else set()
    assert result["status"] == "PASS" or (result["status"] == "BLOCKED" and set(result["blocked_by"]) <= earlier), \
        f"{name} solved alone in a `strip {' '.join(group_of(name))}` copy: {result}"
    assert all(r["outcome"] == "passed" or r.get("blocked_by") for r in records), records


@pytest.mark.slow
@pytest.mark.parametrize("i", range(len(WRONG)), ids=[f"{w[0]}-{i}" for i, w in enumerate(WRONG)])
def test_a_wrong_answer_fails_its_check_with_the_assertion_shown(i, stripped_runs):
    name, solution, wrong, status = WRONG[i]
    ex = EXERCISES[name]
    result = exercises.verdict(ex, stripped_runs["wrong", i])
    first = result["first"]
    assert result["status"] == status and first is not None, f"{wrong!r} in exercise {name}: {result}"
    assert "\n>  " in first["text"] and first["test"] in result["summary"]  # the failing line, marked by pytest
    if status == "WRONG":  # the assertion, with its values
        assert first["error"] == "AssertionError" and "\nE  " in first["text"], first["text"]
    else:  # where in the repo's code it was raised, not in torch's: the student's own line when in their file
        assert not os.path.isabs(first["at"]) and f"raises {first['error']} at {first['at']}" in result["summary"]
        line = next(n for n, s in enumerate(open(os.path.join(ROOT, ex.path)), 1) if n > ex.body and solution in s)
        assert not first["at"].startswith(ex.path + ":") or first["at"] == f"{ex.path}:{line}", first["at"]


@pytest.mark.slow
def test_check_shows_a_wrong_answer_without_the_line_that_spells_out_the_answer(stripped_runs, capsys):
    """The reinforce test compares with -adv * logprobs, the answer itself: check shows the assertion's actual
    side and pytest's values, not that formula."""
    i = next(i for i, w in enumerate(WRONG) if w[:3] == ("reinforce", "return -advantages * logprobs",
                                                           "return advantages * logprobs"))
    result = exercises.verdict(EXERCISES["reinforce"], stripped_runs["wrong", i])
    assert "assert_close(per_token, -adv * logprobs)" in result["first"]["text"]  # what the test holds
    exercises.show(result)
    out = capsys.readouterr().out
    assert "-adv * logprobs" not in out and "assert_close(per_token, ...)" in out, out
    assert "Mismatched elements: 4 / 8" in out and out.strip().splitlines()[-1].startswith("WRONG   reinforce:")


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

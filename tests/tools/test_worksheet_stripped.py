"""Each exercise against the code it is cut from, through real pytest runs on copies of the repo: with one exercise
stripped, that exercise's tests fail with its NotImplementedError while other tests still pass; each exercise solved
alone in a worksheet copy passes its check; the wrong answers a student would plausibly write (WRONG) each fail
their check, with the failing assertion shown."""
import json
import os
import shutil
import subprocess
import sys

import pytest

import exercises
import markers
from test_worksheet import BASELINE_NEEDS, ENV, EXERCISES, ROOT

# fast tests of code no exercise touches: each stripped copy must still pass them (it imports, the rest works)
OTHERS = [("tests/test_advantage.py", "test_none_returns_rewards_unchanged"),
          ("tests/test_reward.py", "test_unknown_task_or_grader"),
          ("tests/test_evaluate.py", "test_batch_indices_shuffle_each_epoch_and_are_reproducible")]
STEP = ("tests/test_exercises.py", "test_the_baseline_trains_a_step")  # also passes unless in BASELINE_NEEDS


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

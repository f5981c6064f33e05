"""
bench.py --rewards: median microseconds per reward.score call under each grader, MATH and GSM8K, next to
math-verify's (called as verl calls it) when it is installed, and the worst time on 100 KB adversarial strings
(docs/rewards.md's table).

MATH: the cases of tests/data/math_corpus.tsv, each prediction boxed at the end of a ~500-character solution;
GSM8K: 400 endings ('#### 1,234', 'The answer is 72.', ...), right and wrong, against GSM8K-style solutions.
A case's time is its best of `repeat` calls (math-verify: one call), so a busy machine blurs less.
"""
import logging
import os
import random
import statistics
import time

import reward

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: its tests/data has the cases
SOLUTION = ("Let's think step by step. The first part gives $3 \\times 4 = 12$ and the second $12 + 7 = 19$, "
            "so what is left is $19 - 5 = 14$. ") * 4


def bench_rewards(repeat=5):
    """Print, per grader, the median time per call on each task's cases and the worst adversarial case's."""
    cases, adversarial = reward_cases(), adversarial_completions()
    graders = {g: lambda task, c, a, g=g: reward.score(task, c, a, grader=g) for g in reward.GRADERS}
    verify = math_verify_grader()
    if verify is None:
        print("(math-verify is not installed: pip install math-verify to see it here)")
    else:
        graders["math-verify"] = verify
    print(f"reward.score: median us per call over {len(cases['math'])} MATH and {len(cases['gsm8k'])} GSM8K "
          f"cases; worst ms over {len(adversarial)} adversarial completions of 100 KB")
    print(f"{'grader':<13}{'MATH':>10}{'GSM8K':>10}{'adversarial':>14}  worst case")
    for name, fn in graders.items():
        tries = 1 if name == "math-verify" else repeat
        medians = [statistics.median(best(fn, task, c, a, tries=tries) for c, a in cases[task])
                   for task in cases]
        tasks = ["math"] if name == "math-verify" else list(cases)  # math-verify grades both tasks alike
        worst = max((best(fn, task, s, "72", tries=tries), what, task)
                    for what, s in adversarial.items() for task in tasks)
        print(f"{name:<13}{medians[0] * 1e6:>10.1f}{medians[1] * 1e6:>10.1f}{worst[0] * 1e3:>14.1f}"
              f"  {worst[1]} ({worst[2]})")


def reward_cases():
    """{task: [(completion, answer)]} for "math" (the corpus) and "gsm8k" (400 seeded endings)."""
    corpus = os.path.join(ROOT, "tests", "data", "math_corpus.tsv")
    with open(corpus, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if not line.startswith("#")]
    cases = {"math": [(f"{SOLUTION}So the answer is $\\boxed{{{pred}}}$.", gold)
                      for _, _, gold, pred in rows]}
    rng, cases["gsm8k"] = random.Random(0), []
    for _ in range(400):
        gold = rng.randrange(1, 10 ** 5)
        pred = rng.choice([gold, gold + rng.randrange(1, 10)])
        ending = rng.choice(["#### {}", "#### {:,}", "####{}", "#### ${}", "The answer is {}."]).format(pred)
        answer = f"Half of it is <<{2 * gold}/2={gold}>>{gold}.\n#### {gold}"  # as GSM8K's answer field
        cases["gsm8k"].append((SOLUTION + ending, answer))
    return cases


def adversarial_completions(n=100_000):
    """{what: completion} of n characters, each shaped to make a parser backtrack or recurse."""
    return {"\\boxed{ repeated": ("\\boxed{" * n)[:n],
            "deep braces": "\\boxed{" + "{" * (n // 2) + "}" * (n // 2) + "}",
            "(1, repeated": "\\boxed{" + ("(1," * n)[:n] + "}", "digit/comma run": ("1234,5" * n)[:n],
            "#### and a digit/comma run": "#### " + ("9,99" * n)[:n],
            "nested \\frac": "\\boxed{" + "\\frac{" * (n // 12) + "1}{2}" * (n // 12) + "}"}


def math_verify_grader():
    """math-verify as verl's math_verify.compute_score calls it, the ground truth boxed: a function of (task,
    completion, answer) -> 0.0 or 1.0; None when math-verify is not installed."""
    try:
        from math_verify.metric import math_metric
        from math_verify.parser import ExprExtractionConfig, LatexExtractionConfig
    except ImportError:
        return None
    verify = math_metric(gold_extraction_target=(LatexExtractionConfig(),),
                         pred_extraction_target=(ExprExtractionConfig(), LatexExtractionConfig()))
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)  # it logs every answer it can't parse

    def math_verify(task, completion, answer):
        try:
            return verify(["\\boxed{" + answer.split("####")[-1].strip() + "}"], [completion])[0]
        except Exception:
            return 0.0
    return math_verify


def best(fn, *call, tries):
    """The shortest of `tries` timed calls fn(*call), in seconds."""
    t = float("inf")
    for _ in range(tries):
        t0 = time.perf_counter()
        fn(*call)
        t = min(t, time.perf_counter() - t0)
    return t

"""reward.py under hostile input: adversarial strings come back fast under every grader (linear scans, no regex
blowups), and fuzzed text never makes score raise or return anything but 0.0 or 1.0. The tables of known answers:
test_reward.py."""

import random
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reward import GRADERS, score

TASKS = ["arith", "gsm8k", "math"]

# -----------------------------------------------------------------------------
# adversarial inputs: each must come back fast (linear scans, no regex blowups), under every grader


def adversarial(n):
    """Strings of about n characters built to trip a grader: deep nesting, long runs, repeated openers."""
    rng, k = random.Random(0), n // 10
    return {
        "open braces": "{" * n,
        "close braces": "}" * n,
        "boxed opens": ("\\boxed{" * n)[:n],
        "boxed spaces": ("\\boxed " * n)[:n],
        "nested boxes": "\\boxed{" * k + "}" * k,
        "nested fracs": "\\boxed{" + "\\frac{" * k + "1}{2}" * k + "}",
        "fracs at the end": "\\boxed{" + "\\frac" * k + "}",
        "sqrts": "\\boxed{" + "\\sqrt" * k + "}",
        "digits and commas": ("1234,5" * n)[:n],
        "digits then junk": "9" * n + "x",
        "hashes": "####" * (n // 4),
        "hashes and numbers": "#### 1," * (n // 7),
        "huge number": "#### " + "9" * n,
        "dots": "1." * (n // 2),
        "zeros": "\\boxed{1." + "0" * n + "x}",
        "spaces": " " * n + "x",
        "spaces and words": "\\boxed{1" + " and " * (n // 5) + "}",
        "texts": ("\\text{a}" * n)[:n],
        "unit texts": "\\boxed{" + "\\text{ a}" * (n // 9) + "}",
        "unit then spaces": "\\boxed{5\\text{a}" + " " * n + "x}",
        "parens": "\\boxed{" + "(" * (n // 2) + ")" * (n // 2) + "}",
        "commas": "\\boxed{(" + "1," * (n // 2) + "1)}",
        "tuple openers": "\\boxed{" + "(1," * (n // 3) + "}",
        "list of sums": "\\boxed{" + "x+1," * (n // 4) + "}",
        "long sum": "\\boxed{" + "x-" * (n // 2) + "1}",
        "long product": "\\boxed{" + "\\sqrt{7}" * (n // 8) + "}",
        "relations": "\\boxed{" + "x\\le" * (n // 4) + "}",
        "plus-minus": "\\boxed{" + "\\pm1," * (n // 5) + "}",
        "matrix": "\\boxed{\\begin{pmatrix}" + "1&2\\\\" * (n // 6) + "\\end{pmatrix}}",
        "slash": "\\boxed{" + "1" * n + "/" + "1" * n + "x}",
        "backslashes": "\\" * n,
        "dollars": "-$" * (n // 2),
        "letters then =": "\\boxed{" + "a" * n + "=1}",
        "labels": "\\boxed{" + "x=1," * (n // 4) + "}",
        "random unicode": "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(n)),
    }


ADVERSARIAL = adversarial(100_000)


def seconds(task, completion, answer, strict, grader):
    t0 = time.perf_counter()
    r = score(task, completion, answer, strict, grader)
    assert r in (0.0, 1.0)
    return time.perf_counter() - t0


@pytest.mark.parametrize("name", list(ADVERSARIAL))
def test_adversarial_is_fast(name):
    s = ADVERSARIAL[name]
    for task in TASKS:
        for grader in GRADERS:
            for strict in (True, False):
                # the adversarial string as the completion, as the answer, and as both
                for completion, answer in ((s, "72"), ("#### 72 \\boxed{72}", s), (s, s)):
                    assert seconds(task, completion, answer, strict, grader) < 1.0


@pytest.mark.slow
def test_time_grows_linearly_with_the_length():
    # 16x the characters may take ~16x the time, never ~256x: a quadratic scan would show here even where
    # 100 KB stays under test_adversarial_is_fast's bound (the 4x margin absorbs a busy machine's noise)
    small, large = adversarial(6_250), adversarial(100_000)
    for name in small:
        for task in ("gsm8k", "math"):
            for grader in GRADERS:
                t = [min(seconds(task, x[name], "72", True, grader) for _ in range(3)) for x in (small, large)]
                assert t[1] < 64 * t[0] + 0.005, (name, task, grader, t)

# -----------------------------------------------------------------------------
# fuzzing: score never raises and always returns 0.0 or 1.0

FRAGMENTS = ["\\boxed{", "\\boxed ", "\\fbox{", "}", "{", "####", "#### ", "\\frac", "\\dfrac", "\\sqrt",
             "\\text{", "\\text{ ", "\\left(", "\\right)", "^\\circ", "\\%", "\\", "\\\\", "x=", "=", "-", "+",
             "0", "1", "2", "9", ",", ".", "$", " ", "/", "(", ")", "[", "]", "\\{", "\\}", "\n", "é", "٣",
             "\\pi", "\\pm", "\\le", "<", "\\in", "&", "\\begin{pmatrix}", "\\end{pmatrix}", " and ", "x", "^"]
latexish = st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join)
any_text = st.text(max_size=200)


def check(completion, answer, strict):
    for task in TASKS:
        for grader in GRADERS:
            assert score(task, completion, answer, strict, grader) in (0.0, 1.0)


@settings(max_examples=200, deadline=None)
@given(any_text, any_text, st.booleans())
def test_fuzz_text(completion, answer, strict):
    check(completion, answer, strict)


@settings(max_examples=200, deadline=None)
@given(latexish, latexish, st.booleans())
def test_fuzz_fragments(completion, answer, strict):
    check(completion, answer, strict)


@settings(max_examples=200, deadline=None)
@given(st.integers(-10**15, 10**15), st.integers(1, 10**6))
def test_numbers_round_trip(n, q):
    # every way of writing the same number earns the reward
    assert score("arith", str(n), str(n)) == 1.0
    assert score("gsm8k", f"#### {n:,}", str(n)) == 1.0
    assert score("gsm8k", f"So it is ${n:,}.", f"#### {n}", strict=False) == 1.0
    assert score("math", f"\\boxed{{{n:,}}}", str(n)) == 1.0
    assert score("math", f"\\boxed{{\\frac{{{n}}}{{{q}}}}}", f"{n}/{q}") == 1.0

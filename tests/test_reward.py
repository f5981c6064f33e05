"""reward.py's graders against tables of known answers: arith, gsm8k (strict and flexible), math, and the helpers
that extract and normalize an answer. Adversarial inputs and fuzzing: test_reward_adversarial.py."""

import pytest

from machinery.math_equal import math_equal, normalize_math
from reward import extract_gsm8k, last_boxed, score

# -----------------------------------------------------------------------------
# arith

ARITH = [
    ("130", "130", 1.0),
    ("  130\n", "130", 1.0),        # whitespace at the ends is fine
    ("0130", "130", 1.0),           # leading zeros: the integer value is compared
    ("-7", "-7", 1.0),
    ("0", "0", 1.0),
    ("-0", "0", 1.0),
    ("131", "130", 0.0),
    ("-130", "130", 0.0),
    ("", "130", 0.0),
    ("   ", "130", 0.0),
    ("12+3", "15", 0.0),
    ("1 2", "12", 0.0),
    ("abc", "130", 0.0),
    ("13=", "13", 0.0),
    ("+13", "13", 0.0),             # only '-' is allowed as a sign
    ("13.0", "13", 0.0),
    ("1,300", "1300", 0.0),
    ("--13", "13", 0.0),
    ("١٣", "13", 0.0),              # Arabic-Indic digits: int() would take them, we don't
    ("13", "not a number", 0.0),    # a malformed answer scores 0 rather than raising
    ("9" * 5000, "9" * 5000, 0.0),  # too long for int(): 0, no crash
]


@pytest.mark.parametrize("completion,answer,expected", ARITH)
def test_arith(completion, answer, expected):
    assert score("arith", completion, answer) == expected

# -----------------------------------------------------------------------------
# gsm8k

SOLUTION = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72"

GSM8K = [  # (completion, answer, strict, expected)
    ("#### 72", "72", True, 1.0),
    ("So she sold 72 clips.\n#### 72", "72", True, 1.0),
    ("####72", "72", True, 1.0),
    ("#### 72.", "72", True, 1.0),          # trailing period
    ("#### 72.00", "72", True, 1.0),        # compared as numbers
    ("#### 72.5", "72", True, 0.0),
    ("#### $72", "72", True, 1.0),
    ("#### $ 72", "72", True, 1.0),
    ("#### 1,000", "1000", True, 1.0),
    ("#### 1,000,000.50", "1000000.5", True, 1.0),
    ("#### -5", "-5", True, 1.0),
    ("#### -$5", "-5", True, 1.0),
    ("#### $-5", "-5", True, 1.0),
    ("#### -5", "5", True, 0.0),
    ("#### 0.5", ".5", True, 1.0),
    ("#### .5", "0.5", True, 1.0),
    ("#### 3.14159", "3.14159", True, 1.0),
    ("#### 0.1", "0.10", True, 1.0),        # exact decimals, no float rounding
    ("#### 72", SOLUTION, True, 1.0),       # the answer given as a full solution
    ("#### 71", SOLUTION, True, 0.0),
    ("The answer is 72", SOLUTION, True, 0.0),
    ("#### 10\nwait, no\n#### 72", "72", True, 1.0),  # the last #### wins
    ("#### 72\nwait, no\n#### 10", "72", True, 0.0),
    ("#### 72 ####", "72", True, 0.0),      # nothing after the last ####
    ("####", "72", True, 0.0),
    ("########", "72", True, 0.0),
    ("#### seventy-two", "72", True, 0.0),
    ("#### The answer is 72", "72", True, 0.0),  # strict: the number must follow directly
    ("The answer is 72", "72", True, 0.0),  # strict: no #### means no answer
    ("The answer is 72", "72", False, 1.0),  # flexible: the last number
    ("The answer is 72.", "72", False, 1.0),
    ("She had 5 apples and 3 pears, 8 in total", "8", False, 1.0),
    ("8 in total, from 5 + 3", "8", False, 0.0),  # flexible takes the last number, not the best
    ("It costs $1,250.", "1250", False, 1.0),
    ("We get -3.", "-3", False, 1.0),
    ("3-5 = -2", "-2", False, 1.0),
    ("step 3-5", "5", False, 1.0),         # a hyphen between numbers isn't a minus sign
    ("version 4.5.6", "4.5", False, 1.0),  # '.6' is not a new number
    ("#### 72\nthen 9", "72", False, 0.0),  # flexible ignores #### and takes 9
    ("#### 72\nthen 9", "72", True, 1.0),
    ("no numbers here", "72", False, 0.0),
    ("", "72", False, 0.0),
    ("", "72", True, 0.0),
    ("#### 72", "", True, 0.0),            # no ground truth: never rewarded
    ("#### 72", "$72", True, 1.0),         # the answer is cleaned the same way
    ("#### 72", " 72. ", True, 1.0),
    ("#### 72", "1,072", True, 0.0),
    ("#### 1,072", "1072", False, 1.0),
    ("#### 9" + "9" * 5000, "9" * 5001, True, 1.0),  # too big for Fraction: exact string match
    ("{}[]\\boxed{72}", "72", True, 0.0),
]


@pytest.mark.parametrize("completion,answer,strict,expected", GSM8K)
def test_gsm8k(completion, answer, strict, expected):
    assert score("gsm8k", completion, answer, strict=strict) == expected


@pytest.mark.parametrize("text,strict,expected", [
    ("#### 1,000.", True, "1000"),
    ("#### $ -3.50", True, "-3.50"),
    ("a 1 b 2 #### 3", True, "3"),
    ("a 1 b 2 #### x", True, None),
    ("a 1 b 2 #### x", False, "2"),
    ("nothing", True, None),
    ("nothing", False, None),
])
def test_extract_gsm8k(text, strict, expected):
    assert extract_gsm8k(text, strict) == expected

# -----------------------------------------------------------------------------
# math

MATH = [  # (completion, answer, expected)
    # fractions in all their spellings, and their decimal values
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}", 1.0),
    (r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}", 1.0),
    (r"\boxed{\tfrac12}", r"\frac{1}{2}", 1.0),
    (r"\boxed{\frac12}", r"\frac{1}{2}", 1.0),
    (r"\boxed{\frac{1}2}", r"\frac12", 1.0),
    (r"\boxed{\frac1{2}}", r"\frac12", 1.0),
    (r"\boxed{1/2}", r"\frac{1}{2}", 1.0),
    (r"\boxed{0.5}", r"\frac12", 1.0),
    (r"\boxed{.5}", "0.5", 1.0),
    (r"\boxed{-\frac{1}{2}}", "-0.5", 1.0),
    (r"\boxed{\frac{-1}{2}}", "-1/2", 1.0),
    (r"\boxed{\frac{1}{3}}", r"\frac{1}{2}", 0.0),
    (r"\boxed{0.33}", r"\frac{1}{3}", 0.0),  # exact comparison: no tolerance
    (r"\boxed{\frac{1}{0}}", r"\frac{1}{0}", 1.0),  # unparseable as a number: same string
    (r"\boxed{\frac{x}{2}}", r"\frac x2", 1.0),
    # spacing, \left \right, dollars, trailing period
    (r"\boxed{ 3 }", "3", 1.0),
    (r"\boxed{\left( 1, 2 \right)}", "(1,2)", 1.0),
    (r"\boxed{3\!}", r"3\,", 1.0),
    (r"\boxed{3.}", "3", 1.0),
    (r"$\boxed{\$5}$", "5", 1.0),
    (r"\boxed{\leftarrow}", "arrow", 0.0),  # \left is only stripped as a whole word
    # units and \text
    (r"\boxed{10 \text{ cm}}", "10", 1.0),
    (r"\boxed{10}", r"10\text{ cm}^2", 1.0),
    (r"\boxed{10\text{ cm}.}", "10", 1.0),
    (r"\boxed{10\mbox{ inches}}", "10", 1.0),
    (r"\boxed{\text{Monday}}", "Monday", 1.0),
    (r"\boxed{\textbf{Monday}}", r"\text{Monday}", 1.0),
    (r"\boxed{\text{Tuesday}}", "Monday", 0.0),
    (r"\boxed{\text{(A)}}", "(A)", 1.0),
    (r"\boxed{A}", r"\text{(A)}", 1.0),
    (r"\boxed{B}", r"\text{(A)}", 0.0),
    (r"\boxed{90^\circ}", "90", 1.0),
    (r"\boxed{90^{\circ}}", "90", 1.0),
    (r"\boxed{90\degree}", "90", 1.0),
    (r"\boxed{50\%}", "50", 1.0),
    (r"\boxed{50%}", r"50\%", 1.0),
    (r"\boxed{50\%}", "0.5", 0.0),
    # trailing zeros, variable assignment, roots
    (r"\boxed{2.50}", "2.5", 1.0),
    (r"\boxed{3.0}", "3", 1.0),
    (r"\boxed{2.50\pi}", r"2.5\pi", 1.0),
    (r"\boxed{x = 5}", "5", 1.0),
    (r"\boxed{k=5}", "5", 1.0),
    (r"\boxed{x_1=5}", "5", 1.0),
    (r"\boxed{x=1, y=2}", "1,2", 0.0),  # two assignments are left alone
    (r"\boxed{\sqrt2}", r"\sqrt{2}", 1.0),
    (r"\boxed{2\sqrt 3}", r"2\sqrt{3}", 1.0),
    (r"\boxed{\sqrt{3}}", r"\sqrt{2}", 0.0),
    # tuples, intervals, thousands separators
    (r"\boxed{(1, 2)}", "(1,2)", 1.0),
    (r"\boxed{(0.5, 2.0)}", r"(\frac12,2)", 1.0),
    (r"\boxed{(1,2)}", "(2,1)", 0.0),
    (r"\boxed{(1,2,3)}", "(1,2)", 0.0),
    (r"\boxed{[0,1)}", "[0,1)", 1.0),
    (r"\boxed{[0,1)}", "(0,1)", 0.0),  # the bracket type matters
    (r"\boxed{[0,1]}", "[0,1)", 0.0),
    (r"\boxed{(-\infty, 3]}", r"(-\infty,3]", 1.0),
    (r"\boxed{1, \frac12}", "1,0.5", 1.0),
    (r"\boxed{1,000}", "1000", 1.0),
    (r"\boxed{1,000,000}", "1000000", 1.0),
    (r"\boxed{1,00}", "100", 0.0),     # not digit groups of 3: a list, not a number
    # extraction: last box, nesting, fbox, brace-less, unbalanced
    (r"\boxed{1} then \boxed{2}", "2", 1.0),
    (r"\boxed{1} then \boxed{2}", "1", 0.0),
    (r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt3}{2}", 1.0),
    (r"\fbox{7}", "7", 1.0),
    (r"so $\boxed 7$.", "7", 1.0),
    (r"\boxed{\frac{1}{2}", r"\frac{1}{2}", 0.0),  # unbalanced: no answer
    ("The answer is 7.", "7", 0.0),  # no box, no answer
    (r"\boxed{}", "", 0.0),           # empty never scores
    # the ground truth given as a full solution (MATH-lighteval)
    (r"\boxed{\frac{1}{2}}", r"We find $x = \boxed{\frac{1}{2}}$.", 1.0),
    (r"\boxed{0.5}", r"So \boxed{1} is wrong; it is \boxed{\dfrac12}.", 1.0),
]


@pytest.mark.parametrize("completion,answer,expected", MATH)
def test_math(completion, answer, expected):
    assert score("math", completion, answer) == expected


@pytest.mark.parametrize("text,expected", [
    (r"\boxed{5}", "5"),
    (r"a \boxed{1} b \boxed{2} c", "2"),
    (r"\boxed{\frac{1}{\sqrt{2}}}", r"\frac{1}{\sqrt{2}}"),
    (r"\boxed{\boxed{3}}", "3"),  # nested boxes: the innermost starts last
    (r"\boxed {5}", "5"),
    (r"\boxed 5$", "5"),
    (r"\boxed 5 and more", "5"),
    (r"\fbox{a{b}c}", "a{b}c"),
    (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped braces don't count
    (r"\boxed{\frac{1}{2}", None),
    (r"\boxed{5} \boxed{", None),  # the last box decides, even when it's broken
    (r"\boxedfoo", None),
    (r"\boxed", None),
    ("no box", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


@pytest.mark.parametrize("raw,expected", [
    (r"\dfrac{1}{2}", r"\frac{1}{2}"),
    (r"\frac{\frac12}3", r"\frac{\frac{1}{2}}{3}"),
    (r"\left[ 0, 1 \right)", "[0,1)"),
    (r"10\text{ cm}^2", "10"),
    (r"\text{New York}", "NewYork"),
    (r"x = \sqrt2", r"\sqrt{2}"),
    ("1,234,567.80", "1234567.8"),
])
def test_normalize_math(raw, expected):
    assert normalize_math(raw) == expected


def test_math_equal_is_symmetric_on_the_table():
    for completion, answer, expected in MATH:
        pred, gt = last_boxed(completion), last_boxed(answer) or answer
        if pred is not None:
            assert math_equal(pred, gt) == math_equal(gt, pred)


def test_unknown_task_or_grader():
    with pytest.raises(ValueError):
        score("mmlu", "A", "A")
    with pytest.raises(ValueError):
        score("math", "\\boxed{1}", "1", grader="math-verify")

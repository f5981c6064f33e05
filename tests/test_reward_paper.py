"""The paper's graders (reward.score(..., grader="paper")): each rule of verl's gsm8k.py and of Hendrycks'
MATH is_equiv (verl's math_reward.py), which the paper's scripts call, pinned by hand-written cases. Every
expected value here was also checked by running the authors' code (their verl copy) on the same inputs."""
import pytest

from reward import GRADERS, score

SOLUTION = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
PAD = "x" * 300


def paper(task, completion, answer, strict=True):
    return score(task, completion, answer, strict, grader="paper")

# -----------------------------------------------------------------------------
# the format effect: the lenient forms the issue names score under nanorft only


@pytest.mark.parametrize("task,completion,answer", [
    ("gsm8k", "#### 72.", "72"),
    ("gsm8k", "####72", "72"),
    ("gsm8k", "#### $72", "72"),
    ("gsm8k", "#### 72.00", "72"),
    ("math", "\\boxed{2.50}", "2.5"),
    ("math", "\\boxed{1,000}", "1000"),
    ("math", "\\fbox{7}", "7"),
    ("math", "\\boxed{A}", "\\text{(A)}"),
    ("math", "\\boxed{50%}", "50"),
])
def test_lenient_forms_score_1_under_nanorft_and_0_under_the_paper(task, completion, answer):
    assert score(task, completion, answer) == 1.0
    assert paper(task, completion, answer) == 0.0


def test_graders_and_the_arith_task():
    assert GRADERS == ("nanorft", "paper")
    for completion, answer in (("130", "130"), ("0130", "130"), (" 130\n", "130"), ("131", "130"), ("13.0", "13")):
        assert paper("arith", completion, answer) == score("arith", completion, answer)  # the paper has no arith
    with pytest.raises(ValueError):
        score("math", "\\boxed{1}", "1", grader="verl")

# -----------------------------------------------------------------------------
# gsm8k: the last 300 characters, '#### ' + -?[0-9.,]+, the last match, ',' '$' deleted, exact string


@pytest.mark.parametrize("completion,answer,expected", [
    ("#### 72", SOLUTION, 1.0),                 # the gold: the solution's '#### <number>'
    ("#### 72", "72", 1.0),                     # or the bare answer as given
    ("She sold 72 clips.\n#### 72", "72", 1.0),
    ("#### 72 clips", "72", 1.0),               # the match stops at the number
    ("####  72", "72", 0.0),                    # exactly one space
    ("#### +72", "72", 0.0),
    ("#### -5", "-5", 1.0),
    ("#### -5", "5", 0.0),
    ("#### 1,000", "1000", 1.0),                # commas deleted
    ("#### 1,000", "some work\n#### 1,000", 1.0),  # in the gold too
    ("#### 7,2", "72", 1.0),                    # wherever they are
    ("#### 0.5", ".5", 0.0),                    # strings, not numbers
    ("#### 72", "72.0", 0.0),
    ("#### 10\n#### 72", "72", 1.0),            # the last match
    ("#### 72\n#### 10", "72", 0.0),
    ("#### 72\n#### ten", "72", 1.0),           # the last *match*, not the last '####'
    ("#### 72" + PAD, "72", 0.0),               # only the last 300 characters count
    ("#### 72" + PAD[7:], "72", 1.0),           # 300 characters exactly: still in
    ("The answer is 72", "72", 0.0),            # strict: no '#### ', no answer
    ("", "72", 0.0),
    ("#### 72", "", 0.0),
])
def test_gsm8k_strict(completion, answer, expected):
    assert paper("gsm8k", completion, answer) == expected


@pytest.mark.parametrize("completion,answer,expected", [
    ("The answer is 72", "72", 1.0),            # flexible: the last -?[0-9.,]+
    ("The answer is 72.", "72", 0.0),           # the period is part of the match
    ("It is 1,000", "1000", 0.0),               # commas kept
    ("72 then .", "72", 1.0),                   # a lone '.' is skipped
    ("no numbers", "72", 0.0),
])
def test_gsm8k_flexible_is_verls_other_mode(completion, answer, expected):
    assert paper("gsm8k", completion, answer, strict=False) == expected

# -----------------------------------------------------------------------------
# math: extraction


@pytest.mark.parametrize("completion,answer,expected", [
    ("so \\boxed{7}.", "7", 1.0),
    ("\\boxed{1} then \\boxed{7}", "7", 1.0),    # the last box
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", 1.0),  # braces counted
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}", 1.0),    # escaped braces count too (they balance)
    ("\\boxed{1", "1", 0.0),                     # unbalanced: no answer
    ("$\\boxed 7$", "7", 1.0),                   # '\boxed ' runs to the next '$'
    ("\\boxed 7", "7", 1.0),                     # or to the end
    ("\\boxed 7 then \\boxed{9}", "9", 0.0),     # '\boxed ' wins wherever it is
    ("\\boxed 7 then \\boxed{9}", "7thenboxed{9}", 0.0),
    ("\\boxed {7}", "7", 0.0),                   # '\boxed ' again: the answer is '{7}'
    ("\\fbox{7}", "7", 0.0),                     # remove_boxed asserts '\boxed{': never scores
    ("\\boxedx{7}", "7", 0.0),
    ("no box: 7", "7", 0.0),
    ("\\boxed{\\frac{1}{2}}", "We get $\\boxed{\\dfrac12}$.", 1.0),  # the gold boxed out of a solution
])
def test_math_extraction(completion, answer, expected):
    assert paper("math", completion, answer) == expected

# -----------------------------------------------------------------------------
# math: Hendrycks' strip_string, rule by rule, then exact equality


@pytest.mark.parametrize("pred,gold,expected", [
    ("1\n2", "12", 1.0),                        # newlines dropped
    ("3\\!", "3", 1.0),                         # '\!' dropped
    ("3\\,", "3", 0.0),                         # but not '\,'
    ("\\dfrac{1}{2}", "\\frac{1}{2}", 1.0),     # dfrac, tfrac -> frac
    ("\\tfrac{1}{2}", "\\frac{1}{2}", 1.0),
    ("\\left( 1,2 \\right)", "(1,2)", 1.0),     # \left \right dropped
    ("\\leftarrow", "arrow", 1.0),              # as substrings: the quirk
    ("90^\\circ", "90", 1.0),                   # degrees
    ("90^{\\circ}", "90", 1.0),
    ("90°", "90", 0.0),
    ("\\$5", "5", 1.0),                         # '\$' dropped
    ("10\\text{ cm}", "10", 1.0),               # '\text{ ' and all after it: a unit
    ("10\\text{cm}", "10", 0.0),                # only with the space
    ("50\\%", "50", 1.0),                       # '\%' dropped
    ("50%", "50", 0.0),                         # a bare '%' is not
    (".5", "0.5", 1.0),                         # a leading '.' gets its 0
    ("x .5", "x0.5", 1.0),                      # ' .' -> ' 0.'
    ("\\frac{.5}{2}", "\\frac{0.5}{2}", 1.0),   # '{.' -> '{0.'
    ("k = 5", "5", 1.0),                        # one '=', at most 2 characters before it
    ("x=5", "5", 1.0),
    ("xy = 5", "5", 0.0),                       # 3 characters before it: kept
    ("x=1,y=2", "1,2", 0.0),                    # two '=': kept
    ("\\sqrt2", "\\sqrt{2}", 1.0),              # \sqrt3 -> \sqrt{3}
    ("\\sqrt 2", "\\sqrt{2}", 0.0),             # the space becomes the argument: '\sqrt{}2'
    ("1 2", "12", 1.0),                         # spaces dropped
    ("\\frac12", "\\frac{1}{2}", 1.0),          # \frac12 -> \frac{1}{2}
    ("\\frac1{2}", "\\frac{1}{2}", 1.0),        # \frac1{2} -> \frac{1}{2}
    ("\\frac{1}2", "\\frac{1}{2}", 0.0),        # but not \frac{1}2
    ("0.5", "\\frac{1}{2}", 1.0),               # the one decimal they special-case
    ("0.25", "\\frac{1}{4}", 0.0),
    ("1/2", "\\frac{1}{2}", 1.0),               # a/b of two plain integers
    ("-1/2", "\\frac{-1}{2}", 1.0),
    ("01/2", "\\frac{1}{2}", 0.0),              # not as str(int) writes it
    ("x/2", "\\frac{x}{2}", 0.0),
    ("1/2/3", "\\frac{1}{2}/3", 0.0),
    ("2.50", "2.5", 0.0),                       # no numeric comparison at all
    ("1,000", "1000", 0.0),
    ("(A)", "A", 0.0),
    ("", "", 1.0),                              # an empty box matches an empty gold
])
def test_math_strip_string(pred, gold, expected):
    assert paper("math", "\\boxed{" + pred + "}", gold) == expected


@pytest.mark.parametrize("pred,gold,expected", [
    ("\\text{ a}\\text{ b}", "\\text{ a}\\text{ b}", 1.0),  # two '\text{ ': their assert fails, raw equality
    ("\\text{ a}\\text{ b}", "\\text{ a}\\text{ c}", 0.0),
    ("\\text{ a}\\text{ b}", "a", 0.0),
    ("2\\sqrt", "2\\sqrt", 1.0),                # '\sqrt' at the very end: IndexError, raw equality
    ("2\\sqrt", "2 \\sqrt", 0.0),
    ("\\frac", "\\frac", 1.0),                  # likewise for '\frac'
    ("\\frac1", "\\frac1", 1.0),                # '\frac' + one character: fix_fracs gives up, keeps it
    ("\\frac1", "\\frac{1}", 0.0),
])
def test_math_where_their_code_raises_the_raw_strings_are_compared(pred, gold, expected):
    assert paper("math", "\\boxed{" + pred + "}", gold) == expected


def test_math_full_uses_the_same_grader():
    assert paper("math_full", "\\boxed{\\frac12}", "\\frac{1}{2}") == 1.0
    assert paper("math_full", "\\boxed{2.50}", "2.5") == 0.0

"""
Verifiable outcome rewards: score(task, completion, answer, grader=...) is 1.0 when the
model's final answer matches the ground truth, else 0.0. Two graders per task:

nanorft (the default) reads the answer the way a careful human would:
  arith  the whole completion must be an integer (the built-in toy task)
  gsm8k  the number after the last '####' (strict) or the last number (flexible), compared
         as exact numbers: '#### $1,000.00' is 1000
  math   the last \\boxed{...}, compared by math_equal.py: normalized (spacing, \\text, units,
         degrees, percent, \\dfrac, labels like 'x=' or '(p,q)=', relation spellings, matrix environments, ...), then
         compared as containers: tuples and intervals (ordered), bare lists and sets (unordered),
         matrices; their items as exact values: products of numbers, square roots, pi and letters
         ('\\frac{1}{\\sqrt3}' = '\\sqrt3/3'), sums in any order, relations either way round.
         What needs algebra ('(x+1)^2' = 'x^2+2x+1', '2^4' = 16) is not seen.

paper reproduces the graders of the paper's code (verl's gsm8k.py and math_reward.py, which its
scripts call), rule for rule, quirks included, so a replication measures the same experiment:
  arith  the same as nanorft: the task is nanoRFT's own, the paper has no grader for it
  gsm8k  only the last 300 characters count; the last match of '#### ' (exactly one space)
         followed by -?[0-9.,]+, with ',' and '$' deleted, must equal the ground-truth string
         exactly: '#### 72.', '#### 72.00', '####72', '#### $72' all score 0 against '72'.
         The ground truth is what the paper's preprocessing kept of the GSM8K solution: the
         first '#### <number>' with ',' deleted. strict=False is verl's 'flexible' mode, unused
         by the paper: the last -?[0-9.,]+ that isn't '.', commas kept.
  math   the last '\\boxed ' (a space: then up to the next '$'; this form wins wherever it is)
         or else the last '\\boxed{...}' (braces counted, escaped or not); '\\fbox' never
         scores. Answer and ground truth (the solution's box, the paper's preprocessing) then
         go through Hendrycks' MATH strip_string, in this order: drop newlines and '\\!';
         '\\\\' -> '\\'; 'tfrac', 'dfrac' -> 'frac'; drop '\\left', '\\right', '^{\\circ}',
         '^\\circ', '\\$'; cut everything from '\\text{ ' on (a unit); drop '\\%'; ' .' -> ' 0.'
         and '{.' -> '{0.', a leading '.' gets a '0'; 'k = ...' (one '=', at most 2 characters
         before it) -> '...'; '\\sqrt3' -> '\\sqrt{3}'; drop spaces; '\\frac12' -> '\\frac{1}{2}',
         '\\frac1{2}' -> '\\frac{1}{2}'; '0.5' -> '\\frac{1}{2}'; 'a/b' of two plain integers ->
         '\\frac{a}{b}'; then exact string equality. Where their code raises (two '\\text{ ',
         or a '\\sqrt' or '\\frac' at the very end) the raw strings are compared instead.

Everything is hand-written string processing: no eval, no sympy, numbers are compared exactly
with Fraction, and every scan is linear-time, so no completion (the policy will find the weird
ones) can crash or stall a training step.
"""

import re
from itertools import accumulate, repeat

from machinery.math_equal import _ESCAPE, _to_fraction, math_equal

GRADERS = ("nanorft", "paper")


def score(task, completion, answer, strict=True, grader="nanorft"):
    """1.0 if `completion` gets `answer` right under `grader`, else 0.0. `strict` only matters for gsm8k."""
    if grader not in GRADERS:
        raise ValueError(f"unknown grader {grader!r}; expected one of {GRADERS}")
    paper = grader == "paper"
    if task == "arith":
        ok = _score_arith(completion, answer)
    elif task == "gsm8k":
        ok = (_score_gsm8k_paper if paper else _score_gsm8k)(completion, answer, strict)
    elif task in ("math", "math_full"):  # math_full only changes the test split (all 5000 MATH problems)
        ok = (_score_math_paper if paper else _score_math)(completion, answer)
    else:
        raise ValueError(f"unknown task {task!r}; expected 'arith', 'gsm8k', 'math' or 'math_full'")
    return 1.0 if ok else 0.0

# -----------------------------------------------------------------------------
# arith: the completion must be exactly an integer (both graders)


def _score_arith(completion, answer):
    s = completion.strip()
    # [0-9], not \d, so other scripts' digits (which int() would accept) don't count
    if not re.fullmatch(r"-?[0-9]+", s):
        return False
    try:
        return int(s) == int(answer)  # so leading zeros are fine: "0130" == "130"
    except ValueError:  # a malformed answer, or too many digits for int()
        return False

# -----------------------------------------------------------------------------
# gsm8k, nanorft: '#### 42' (strict) or the last number in the text (flexible), as numbers

# Optional sign and '$' (either order), then digits with thousands commas and
# an optional decimal part. The lookbehind stops '4.5.6' yielding '.6' and '3-5'
# yielding '-5'; it also means only the first digit of a run can start a match.
_GSM_NUMBER = re.compile(r"(?<![0-9.])-?(?:\$\s?)?-?(?:[0-9][0-9,]*(?:\.[0-9]+)?|\.[0-9]+)")


def extract_gsm8k(text, strict=True):
    """The answer number as a cleaned string, or None if there isn't one."""
    # EXERCISE gsm8k: return the number right after the last '####' (strict) or the last number (not strict),
    # via _GSM_NUMBER and _clean_number, or None (tests: tests/test_reward.py -k "test_gsm8k or extract_gsm8k")
    if strict:
        i = text.rfind("####")
        if i < 0:
            return None
        m = _GSM_NUMBER.match(text[i + 4:].lstrip())  # the number must come right after
    else:
        m = None
        for m in _GSM_NUMBER.finditer(text):
            pass  # keep the last one
    return _clean_number(m.group()) if m else None
    # END EXERCISE


def _score_gsm8k(completion, answer, strict):
    pred = extract_gsm8k(completion, strict)
    # The dataset's answer is either the bare number or the full solution ending in '#### 72'.
    gt = extract_gsm8k(answer) if "####" in answer else _clean_number(answer)
    if pred is None or gt is None:
        return False
    a, b = _to_fraction(pred), _to_fraction(gt)
    if a is not None and b is not None:
        return a == b  # "72.00" == "72", exactly
    return pred == gt

# -----------------------------------------------------------------------------
# gsm8k, paper: verl's gsm8k.py regexes on the last 300 characters, exact string equality

_PAPER_GSM_STRICT = re.compile(r"#### (-?[0-9.,]+)")
_PAPER_GSM_FLEXIBLE = re.compile(r"-?[0-9.,]+")


def _score_gsm8k_paper(completion, answer, strict):
    tail = completion[-300:]  # verl: "a safe approximation for 300 tokens"
    if strict:
        found = _PAPER_GSM_STRICT.findall(tail)
        pred = found[-1].replace(",", "").replace("$", "") if found else None  # ('$' can't be there: verl's no-op)
    else:
        found = _PAPER_GSM_FLEXIBLE.findall(tail)
        pred = next((x for x in reversed(found) if x != "."), found[0] if found else None)
    # the paper's preprocessing stored the solution's first '#### <number>', commas deleted, as the ground truth
    m = _PAPER_GSM_STRICT.search(answer)
    gold = m.group(1).replace(",", "") if m else answer
    return pred is not None and pred == gold

# -----------------------------------------------------------------------------
# math, nanorft: the last \boxed{...}, normalized, then compared


def _score_math(completion, answer):
    pred = last_boxed(completion)
    if pred is None:
        return False
    # MATH-500 gives the bare answer, MATH-lighteval the whole solution with a \boxed in it
    gt = last_boxed(answer)
    return math_equal(pred, answer if gt is None else gt)


# -----------------------------------------------------------------------------
# math, paper: verl's math_reward.py (Hendrycks' MATH is_equiv), rules in the module docstring


def _score_math_paper(completion, answer):
    pred = _paper_last_boxed(completion)
    gold = _paper_last_boxed(answer) if "\\boxed" in answer else answer  # the preprocessing boxed out the solution
    if pred is None or gold is None:
        return False  # their remove_boxed asserts, caught by compute_score: reward 0
    a, b = _paper_strip_string(pred), _paper_strip_string(gold)
    if a is None or b is None:
        return pred == gold  # is_equiv's except branch: the raw strings
    return a == b

# -----------------------------------------------------------------------------
# helpers: numbers

def _clean_number(s):
    """'$1,000.' -> '1000': drop the decoration around a GSM8K number."""
    return "".join(s.split()).replace(",", "").replace("$", "").rstrip(".")


# -----------------------------------------------------------------------------
# helpers: braces and boxes

_BRACE_STEP = {"{": 1, "}": -1}
_SPACES, _BARE_BOX = re.compile(r"\s*"), re.compile(r"[^\s$]*")


def _matching_brace(s, i):
    """Index of the '}' that closes the '{' at s[i], or None. The depth after each character is a running
    sum that itertools computes at C speed, and the close is where it first comes back to 0."""
    depths = accumulate(map(_BRACE_STEP.get, s[i:], repeat(0)))
    try:
        return i + list(depths).index(0)
    except ValueError:
        return None


def last_boxed(text):
    """Content of the last \\boxed{...} / \\fbox{...} / '\\boxed x', or None."""
    i_box, i_fbox = text.rfind("\\boxed"), text.rfind("\\fbox")
    if i_box < 0 and i_fbox < 0:
        return None
    i = i_box + 6 if i_box > i_fbox else i_fbox + 5
    j = _SPACES.match(text, i).end()
    if text.startswith("{", j):
        close = _matching_brace(_ESCAPE.sub("..", text[j:]), 0)  # '\{' and '\}' don't count
        return None if close is None else text[j + 1:j + close]
    if j == i:
        return None  # e.g. '\boxedfoo' is some other macro, not a box
    return _BARE_BOX.match(text, j).group() or None  # '\boxed 5$' runs up to the next space or '$'

# -----------------------------------------------------------------------------
# helpers: the paper's MATH extraction and Hendrycks' strip_string (rules in the module docstring)

_PAPER_REPLACE = (("\n", ""), ("\\!", ""), ("\\\\", "\\"), ("tfrac", "frac"), ("dfrac", "frac"), ("\\left", ""),
                  ("\\right", ""), ("^{\\circ}", ""), ("^\\circ", ""), ("\\$", ""))


def _paper_last_boxed(text):
    """The last box as verl's last_boxed_only_string + remove_boxed read it; None where they give no answer."""
    i = text.rfind("\\boxed ")
    if i >= 0:
        return text[i + 7:].partition("$")[0]
    i = text.rfind("\\boxed")
    if i < 0 or not text.startswith("\\boxed{", i):
        return None  # no box, '\fbox' or '\boxedfoo': remove_boxed's assert fails
    close = _matching_brace(text, i + 6)  # every brace counts, '\{' too
    return None if close is None else text[i + 7:close]


def _paper_strip_string(s):
    """Hendrycks' strip_string; None where their code raises."""
    for old, new in _PAPER_REPLACE:
        s = s.replace(old, new)
    if "\\text{ " in s:
        parts = s.split("\\text{ ")
        if len(parts) != 2:
            return None
        s = parts[0]
    s = s.replace("\\%", "").replace(" .", " 0.").replace("{.", "{0.")
    if s.startswith("."):
        s = "0" + s
    if s.count("=") == 1 and s.index("=") <= 2:
        s = s.split("=")[1]
    sqrts = s.split("\\sqrt")
    if "" in sqrts[1:]:
        return None
    s = sqrts[0] + "".join("\\sqrt" + (x if x[0] == "{" else "{" + x[0] + "}" + x[1:]) for x in sqrts[1:])
    s = s.replace(" ", "")
    fracs, out = s.split("\\frac"), []
    for x in fracs[1:]:
        if not x:
            return None
        if x[0] != "{" and len(x) < 2:
            out = None  # fix_fracs gives up and returns its input
            break
        out.append(x if x[0] == "{" else "{" + x[0] + "}" + (x[1:] if x[1] == "{" else "{" + x[1] + "}" + x[2:]))
    if out is not None:
        s = "\\frac".join([fracs[0]] + out)
    if s == "0.5":
        s = "\\frac{1}{2}"
    a, slash, b = s.partition("/")
    if slash and "/" not in b and _paper_int(a) and _paper_int(b):
        s = f"\\frac{{{a}}}{{{b}}}"
    return s


def _paper_int(s):
    """Whether s is an integer written the way str(int) writes it (their fix_a_slash_b's assert)."""
    try:
        return str(int(s)) == s
    except ValueError:
        return False

"""
Verifiable outcome rewards: score(task, completion, answer) is 1.0 when the
model's final answer matches the ground truth, else 0.0.

  arith  the whole completion must be an integer (the built-in toy task)
  gsm8k  the number after the last '####' (strict) or the last number (flexible)
  math   the last \\boxed{...}, compared after Hendrycks/Minerva-style normalization

Everything is hand-written string processing: no eval, no sympy, numbers are
compared exactly with Fraction, and every scan is linear-time, so no completion
(the policy will find the weird ones) can crash or stall a training step.
"""

import re
from fractions import Fraction

# -----------------------------------------------------------------------------
# shared helpers

# A plain decimal. The fractional digits hang off a literal '.', so a failed
# match backtracks in linear, not quadratic, time on a long run of digits.
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_ESCAPE = re.compile(r"\\.", re.S)  # \{ is a literal brace, not a group


def _to_fraction(s):
    """Exact value of a plain decimal like '-3', '2.50', '.5'; None for anything else."""
    if not _DECIMAL.fullmatch(s):
        return None
    try:
        return Fraction(s)
    except ValueError:  # more digits than int() will parse (sys.get_int_max_str_digits)
        return None


def _brace_pairs(s):
    """Map the index of every matched '{' to its '}', in one pass with a stack."""
    s = _ESCAPE.sub("..", s)  # blank out escapes like \{ (same length, so indices hold)
    pairs, stack = {}, []
    for i, c in enumerate(s):  # a plain loop beats finditer when braces are dense (the bad case)
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            pairs[stack.pop()] = i
    return pairs

# -----------------------------------------------------------------------------
# arith: the completion must be exactly an integer


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
# gsm8k: '#### 42' (strict) or the last number in the text (flexible)

# Optional sign and '$' (either order), then digits with thousands commas and
# an optional decimal part. The lookbehind stops '4.5.6' yielding '.6' and '3-5'
# yielding '-5'; it also means only the first digit of a run can start a match.
_GSM_NUMBER = re.compile(r"(?<![0-9.])-?(?:\$\s?)?-?(?:[0-9][0-9,]*(?:\.[0-9]+)?|\.[0-9]+)")


def _clean_number(s):
    """'$1,000.' -> '1000': drop the decoration around a GSM8K number."""
    return "".join(s.split()).replace(",", "").replace("$", "").rstrip(".")


def extract_gsm8k(text, strict=True):
    """The answer number as a cleaned string, or None if there isn't one."""
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
# math: the last \boxed{...}, normalized, then compared


def last_boxed(text):
    """Content of the last \\boxed{...} / \\fbox{...} / '\\boxed x', or None."""
    i_box, i_fbox = text.rfind("\\boxed"), text.rfind("\\fbox")
    if i_box < 0 and i_fbox < 0:
        return None
    i = i_box + 6 if i_box > i_fbox else i_fbox + 5
    j = i
    while j < len(text) and text[j].isspace():
        j += 1
    if text.startswith("{", j):
        close = _brace_pairs(text[j:]).get(0)  # linear; an unbalanced box has no close
        return None if close is None else text[j + 1:j + close]
    if j == i:
        return None  # e.g. '\boxedfoo' is some other macro, not a box
    # the brace-less form '\boxed 5$' runs up to the next space or '$'
    k = j
    while k < len(text) and not text[k].isspace() and text[k] != "$":
        k += 1
    return text[j:k] or None


_SPACING = re.compile(r"\\[!,;:]|\\\s|\\q?quad(?![a-zA-Z])")  # LaTeX spacing: \! \, \; \: "\ " \quad
_TEXT = re.compile(r"\\(?:text(?:bf|it|rm|normal)?|mbox|mathrm)\{")
_UNIT_TAIL = re.compile(r"(?:\^\{?[23]\}?)?\.?")  # after a unit: cm^2, or a final period
_DIGIT = re.compile(r"[0-9]")
_NOISE = re.compile(r"\\(?:left|right)(?![a-zA-Z])|\\displaystyle|\^\{?\\circ\}?|\\degree|°|\\?[$%]")
_SQRT = re.compile(r"\\sqrt([0-9a-zA-Z])")
_ASSIGN = re.compile(r"\\?[a-zA-Z]+(?:_\{?[a-zA-Z0-9]+\}?)?=")
_THOUSANDS = re.compile(r"-?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_DECIMAL_IN_TEXT = re.compile(r"(?<![0-9.])[0-9]+\.[0-9]+(?![0-9.])")
_FRAC_NUM = re.compile(r"\\frac\{(-?[0-9.]+)\}\{(-?[0-9.]+)\}")
_SLASH_NUM = re.compile(r"(-?[0-9.]+)/(-?[0-9.]+)")


def _splice(s, edits):
    """Apply sorted, non-overlapping edits (start, end, replacement) to s in one pass."""
    out, prev = [], 0
    for start, end, new in edits:
        out += [s[prev:start], new]
        prev = end
    out.append(s[prev:])
    return "".join(out)


def _strip_text(s):
    """Unwrap \\text{...}-style groups, but drop a trailing one after a number (a unit)."""
    if not _TEXT.search(s):
        return s  # the common case; skips the brace pass
    pairs, cuts = _brace_pairs(s), []  # spans to delete
    for m in _TEXT.finditer(s):
        close = pairs.get(m.end() - 1)
        if close is None:
            continue
        # "10\text{cm}" -> "10", but "\text{Monday}" and "\text{(A)}" are the answer itself
        if _UNIT_TAIL.fullmatch(s, close + 1) and _DIGIT.search(s, 0, m.start()):
            cuts.append((m.start(), len(s), ""))
            break
        cuts += [(m.start(), m.end(), ""), (close, close + 1, "")]
    return _splice(s, sorted(cuts))


def _fix_fracs(s):
    """Brace \\frac's arguments: '\\frac12' and '\\frac{1}2' become '\\frac{1}{2}'."""
    if "\\frac" not in s:
        return s
    pairs, inserts = _brace_pairs(s), []
    for m in re.finditer(r"\\frac", s):
        i = m.end()
        for _ in range(2):
            if i in pairs:  # already braced: skip over the group
                i = pairs[i] + 1
            elif i < len(s) and s[i].isalnum():  # a one-character argument
                inserts += [(i, i, "{"), (i + 1, i + 1, "}")]
                i += 1
            else:
                break
    # inserts come out of order when fracs nest; a stable sort keeps '}' before '{' at a tie
    return _splice(s, sorted(inserts, key=lambda x: x[0]))


def normalize_math(s):
    """Canonical string form of a MATH answer, so equal answers compare equal as strings."""
    s = _SPACING.sub("", s)
    s = "".join(s.split())  # all whitespace; done early so later patterns needn't allow for it
    s = _strip_text(s)
    s = _NOISE.sub("", s)  # \left \right, $, degrees, percent
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = _fix_fracs(s)
    s = _SQRT.sub(r"\\sqrt{\1}", s)
    s = s.rstrip(".")
    m = _ASSIGN.match(s)
    if m and s.count("=") == 1:  # "x=5" -> "5", but leave equations like "x=1,y=2" alone
        s = s[m.end():]
    if _THOUSANDS.fullmatch(s):  # "1,000" is one number only when the digit groups say so
        s = s.replace(",", "")
    s = _DECIMAL_IN_TEXT.sub(lambda m: m.group().rstrip("0").rstrip("."), s)  # 2.50 -> 2.5
    m = re.fullmatch(r"\(([A-Za-z])\)", s)  # multiple choice: "(A)" -> "A"
    return m.group(1) if m else s


def _to_number(s):
    """Exact value of a normalized simple number: 0.5, 1/2, \\frac{1}{2}, -\\frac{1}{2}."""
    sign = 1
    if s.startswith("-\\frac"):
        sign, s = -1, s[1:]
    m = _FRAC_NUM.fullmatch(s) or _SLASH_NUM.fullmatch(s)
    if m is None:
        return _to_fraction(s)
    num, den = _to_fraction(m.group(1)), _to_fraction(m.group(2))
    if num is None or den is None or den == 0:
        return None
    return sign * num / den


def _atom_equal(a, b):
    if a == b:
        return True
    x = _to_number(a)
    return x is not None and x == _to_number(b)


def _split_top_level(s):
    """Split on the commas that aren't nested inside brackets."""
    if "," not in s:
        return [s]
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _brackets(s):
    """The enclosing bracket pair of a tuple or interval like '(1,2)' or '[0,1)', else ('', '')."""
    return (s[0], s[-1]) if s[0] in "([" and s[-1] in ")]" else ("", "")


def math_equal(pred, gt):
    """Whether two MATH answers are equivalent: normalized strings, numbers, or tuples of them."""
    a, b = normalize_math(pred), normalize_math(gt)
    if not a or not b:
        return False  # an empty box is never a correct answer
    if _atom_equal(a, b):
        return True
    # tuples, intervals and lists: same brackets ("[0,1)" != "(0,1)"), item-by-item equal.
    # Items are compared flat (no recursion), so deep nesting can't overflow the stack.
    if _brackets(a) != _brackets(b):
        return False
    n = len(_brackets(a)[0])
    items_a, items_b = _split_top_level(a[n:len(a) - n]), _split_top_level(b[n:len(b) - n])
    return len(items_a) == len(items_b) and all(map(_atom_equal, items_a, items_b))


def _score_math(completion, answer):
    pred = last_boxed(completion)
    if pred is None:
        return False
    # MATH-500 gives the bare answer, MATH-lighteval the whole solution with a \boxed in it
    gt = last_boxed(answer)
    return math_equal(pred, answer if gt is None else gt)

# -----------------------------------------------------------------------------


def score(task, completion, answer, strict=True):
    """1.0 if `completion` gets `answer` right, else 0.0. `strict` only matters for gsm8k."""
    if task == "arith":
        ok = _score_arith(completion, answer)
    elif task == "gsm8k":
        ok = _score_gsm8k(completion, answer, strict)
    elif task in ("math", "math_full"):  # math_full only changes the test split (all 5000 MATH problems)
        ok = _score_math(completion, answer)
    else:
        raise ValueError(f"unknown task {task!r}; expected 'arith', 'gsm8k', 'math' or 'math_full'")
    return 1.0 if ok else 0.0

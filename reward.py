"""
Verifiable outcome rewards: score(task, completion, answer, grader=...) is 1.0 when the
model's final answer matches the ground truth, else 0.0. Two graders per task:

nanorft (the default) reads the answer the way a careful human would:
  arith  the whole completion must be an integer (the built-in toy task)
  gsm8k  the number after the last '####' (strict) or the last number (flexible), compared
         as exact numbers: '#### $1,000.00' is 1000
  math   the last \\boxed{...}, normalized (spacing, \\text, units, degrees, percent, \\dfrac,
         labels like 'x=' or '(p,q)=', relation spellings, matrix environments, ...), then
         compared as exact numbers, tuples and intervals (ordered), bare lists and sets
         (unordered), or matrices, item by item

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
from collections import Counter
from fractions import Fraction

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


def math_equal(pred, gt):
    """Whether two MATH answers are equivalent: the same normalized string, or the same kind of
    container (tuple/interval brackets, matrix shape, bare list) holding equal items."""
    a, b = normalize_math(pred), normalize_math(gt)
    if not a or not b:
        return False  # an empty box is never a correct answer
    if a == b:
        return True
    (kind_a, items_a), (kind_b, items_b) = _parts(a), _parts(b)
    if kind_a != kind_b or len(items_a) != len(items_b):
        return False
    if kind_a == "list":  # a bare list or a set, as in "all solutions": order doesn't matter
        return Counter(map(_atom_key, items_a)) == Counter(map(_atom_key, items_b))
    # tuples, intervals, matrices: item by item, flat (no recursion, so deep nesting can't overflow)
    return all(x == y or _atom_key(x) == _atom_key(y) for x, y in zip(items_a, items_b))

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

# A plain decimal. The fractional digits hang off a literal '.', so a failed
# match backtracks in linear, not quadratic, time on a long run of digits.
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_FRAC_NUM = re.compile(r"\\frac\{(-?[0-9.]+)\}\{(-?[0-9.]+)\}")
_SLASH_NUM = re.compile(r"(-?[0-9.]+)/(-?[0-9.]+)")


def _to_fraction(s):
    """Exact value of a plain decimal like '-3', '2.50', '.5'; None for anything else."""
    if not _DECIMAL.fullmatch(s):
        return None
    try:
        return Fraction(s)
    except ValueError:  # more digits than int() will parse (sys.get_int_max_str_digits)
        return None


def _clean_number(s):
    """'$1,000.' -> '1000': drop the decoration around a GSM8K number."""
    return "".join(s.split()).replace(",", "").replace("$", "").rstrip(".")


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

# -----------------------------------------------------------------------------
# helpers: braces and boxes

_ESCAPE = re.compile(r"\\.", re.S)  # \{ is a literal brace, not a group


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

# -----------------------------------------------------------------------------
# helpers: nanorft's MATH normalization, one small named rule per equivalence

_JOIN_WORDS = re.compile(r"\\(?:text|mbox|mathrm)\{\s*(?:and|or)\s*\}|(?<=\s)(?:and|or)(?=\s)")  # '6 and 8' = '6,8'
_SPACING = re.compile(r"\\[!,;:]|\\\s|~|\\q?quad(?![a-zA-Z])")  # LaTeX spacing: \! \, \; \: "\ " ~ \quad
_TEXT = re.compile(r"\\(?:text(?:bf|it|rm|normal)?|mbox|mathrm)\{")
_UNIT_TAIL = re.compile(r"(?:\^\{?[23]\}?)?\.?")  # after a unit: cm^2, or a final period
_DIGIT = re.compile(r"[0-9]")
# \left \right, $, degrees, percent (also as a word after a number): none changes the value
_NOISE = re.compile(r"\\(?:left|right)(?![a-zA-Z])|\\displaystyle|\^\{?\\circ\}?|\\degree|°|\\?[$%]"
                    r"|(?<=[0-9])(?:percent|pct)(?![a-zA-Z])")
_SQRT = re.compile(r"\\sqrt([0-9a-zA-Z])")
_ONE_CHAR_GROUP = re.compile(r"([_^])\{([0-9a-zA-Z])\}")  # x^{2} = x^2, 1011_{2} = 1011_2
_RELATION = re.compile(r"\\(?:[gl]eq?|[gl]eqslant|neq?|[gl]t)(?![a-zA-Z])|[<>!]=|[≥≤≠]")
_RELATIONS = {"\\ge": "≥", "\\geq": "≥", "\\geqslant": "≥", ">=": "≥", "≥": "≥",
              "\\le": "≤", "\\leq": "≤", "\\leqslant": "≤", "<=": "≤", "≤": "≤",
              "\\ne": "≠", "\\neq": "≠", "!=": "≠", "≠": "≠", "\\lt": "<", "\\gt": ">"}
_MATRIX = re.compile(r"\\(begin|end)\{(?:[pbB]?matrix|smallmatrix|array)\}(?:\{[lcr|]*\})?")
_NAME = r"\\?[a-zA-Z]+(?:_\{?[a-zA-Z0-9]+\}?)?'*"  # x, \theta, x_1, f'
_LABEL = re.compile(rf"(?:{_NAME}(?:\({_NAME}(?:,{_NAME})*\))?|\({_NAME}(?:,{_NAME})*\)|{_NAME}(?::{_NAME})+)"
                    r"(?:=|\\in(?![a-zA-Z]))")  # 'x=', 'f(x)=', '(p,q)=', 'A:B=', 'x\in'
_RELATION_AFTER_LABEL = re.compile(r"=|\\in(?![a-zA-Z])")
_THOUSANDS = re.compile(r"-?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_DECIMAL_IN_TEXT = re.compile(r"(?<![0-9.])[0-9]+\.[0-9]+(?![0-9.])")
_SIMPLE = r"(?:[0-9.]+|[0-9.]*(?:\\sqrt\{[0-9a-zA-Z]+\}|\\pi|[a-zA-Z])+)"  # 3, \sqrt{3}, 2\pi, x
_SLASH = re.compile(rf"(-?)({_SIMPLE})/({_SIMPLE})")
_NEG_FRAC = re.compile(r"\\frac\{-")
_ONE_RELATION = re.compile(r"[<>≤≥≠]")
_FLIP = {"<": ">", ">": "<", "≤": "≥", "≥": "≤", "≠": "≠"}


def normalize_math(s):
    """Canonical string form of a MATH answer, so equal answers compare equal as strings."""
    if s.isdigit():
        return s  # the common case, '42', has nothing to normalize
    if "and" in s or "or" in s:
        s = _JOIN_WORDS.sub(",", s)
    s = _SPACING.sub("", s)
    s = "".join(s.split())  # all whitespace; done early so later patterns needn't allow for it
    s = re.sub(",{2,}", ",", s)  # '2, 3, and 4' became '2,3,,4'
    s = _strip_text(s)
    s = _NOISE.sub("", s)
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = _fix_fracs(s)
    s = _SQRT.sub(r"\\sqrt{\1}", s)
    s = _ONE_CHAR_GROUP.sub(r"\1\2", s)
    s = _RELATION.sub(lambda m: _RELATIONS[m.group()], s)  # \lt -> <, >= -> ≥
    if "\\begin" in s:
        s = _normalize_matrix(s)
    s = s.replace("{,}", ",").rstrip(".")  # 1{,}000 is LaTeX's thousands separator
    s = _strip_labels(s)
    if _THOUSANDS.fullmatch(s):  # "1,000" is one number only when the digit groups say so
        s = s.replace(",", "")
    s = _DECIMAL_IN_TEXT.sub(lambda m: m.group().rstrip("0").rstrip("."), s)  # 2.50 -> 2.5
    if s.startswith("(") and s.endswith(")") and _split_top_level(s[1:-1]) == [s[1:-1]]:
        s = s[1:-1]  # redundant parentheses: '\left(\frac13\right)' = '\frac13', '(A)' = 'A'
    return s


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


def _splice(s, edits):
    """Apply sorted, non-overlapping edits (start, end, replacement) to s in one pass."""
    out, prev = [], 0
    for start, end, new in edits:
        out += [s[prev:start], new]
        prev = end
    out.append(s[prev:])
    return "".join(out)


def _normalize_matrix(s):
    """pmatrix, bmatrix and \\left[\\begin{array}{cc}..\\end{array}\\right] are one matrix: '\\begin{matrix}..'."""
    s = _MATRIX.sub(r"\\\1{matrix}", s)
    if s[:1] + s[-1:] in ("()", "[]") and s.startswith("\\begin{matrix}", 1) and s.count("\\begin") == 1:
        s = s[1:-1]  # the brackets of a plain matrix written around it
    return s


def _strip_labels(s):
    """'x=5' -> '5', '(p,q)=(3,2)' -> '(3,2)', 'x\\in[1,2]' -> '[1,2]', 'a=4,-8' -> '4,-8', and
    'x=1,x=2' -> '1,2'; but 'x=1,y=2' and equations like '4x-5y=-50' stay as they are."""
    m = _LABEL.match(s)
    if m is None:
        return s
    if not _RELATION_AFTER_LABEL.search(s, m.end()):
        return s[m.end():]
    label, items = m.group(), _split_top_level(s) or [s]
    if all(x.startswith(label) and not _RELATION_AFTER_LABEL.search(x, len(label)) for x in items):
        return ",".join(x[len(label):] for x in items)
    return s


def _split_top_level(s):
    """Split on the commas that aren't nested inside brackets; None if a bracket closes that s didn't open."""
    if "," not in s and ")" not in s and "]" not in s:
        return [s]
    parts, depth, start = [], 0, 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif c == "," and depth == 0:
            parts.append(s[start:i])
            start = i + 1
    parts.append(s[start:])
    return parts


def _parts(s):
    """(kind, items) of a normalized answer: kind is the bracket pair of a tuple or interval ('(]', ...),
    a matrix's row lengths, or 'list' for a bare comma list or a set (\\{..\\}), whose order doesn't matter."""
    if s.startswith("\\begin{matrix}") and s.endswith("\\end{matrix}"):
        rows = [r.split("&") for r in s[14:-12].removesuffix("\\\\").split("\\\\")]
        return tuple(map(len, rows)), [cell for row in rows for cell in row]
    if s.startswith("\\{") and s.endswith("\\}"):
        kind, inner = "list", s[2:-2]
    elif s[0] in "([" and s[-1] in ")]":
        kind, inner = s[0] + s[-1], s[1:-1]
    else:
        kind, inner = "list", s
    items = _split_top_level(inner)
    if items is None:  # '(1,2)\cup(3,4)' is no tuple: its first bracket closes early
        return "atom", [s]
    if kind == "list" and "\\pm" in inner:  # '\pm 2' = '2,-2', '1\pm\sqrt2' = '1+\sqrt2,1-\sqrt2'
        items = [y for x in items for y in ((x.replace("\\pm", "+", 1).lstrip("+"), x.replace("\\pm", "-", 1))
                                            if x.count("\\pm") == 1 else (x,))]
    return kind, items


def _atom_key(s):
    """A canonical value of one item: its exact number, else its canonical string."""
    x = _to_number(s)
    if x is not None:
        return x
    if s.count("/") == 1 and (m := _SLASH.fullmatch(s)):  # '-\pi/6' = '-\frac{\pi}{6}'
        s = f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"
    if s.startswith("\\frac{-"):  # '\frac{-\pi}{6}' = '-\frac{\pi}{6}'
        s = "-" + _NEG_FRAC.sub(r"\\frac{", s, 1)
    relations = _ONE_RELATION.findall(s)
    if len(relations) == 1:  # '5≥x' = 'x≤5': either way round, the smaller string
        left, op, right = s.partition(relations[0])
        s = min(s, right + _FLIP[op] + left)
    return s

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
    depth = 0
    for m in re.finditer(r"[{}]", text[i + 6:]):  # every brace counts, '\{' too
        depth += 1 if m.group() == "{" else -1
        if depth == 0:
            return text[i + 7:i + 6 + m.start()]
    return None


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

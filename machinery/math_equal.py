"""
nanoRFT's MATH answer equivalence: math_equal(pred, gt) says whether two final answers (the contents of
their \\boxed{}) are the same answer. reward.py's nanorft grader calls it; the paper's grader does not (it
compares Hendrycks-normalized strings: reward.py).

Two steps, each a list of small named rules:
  normalize_math   spacing, \\text, units, degrees, percent (also as a word), \\dfrac, \\frac12, labels like
                   'x=' or '(p,q)=', relation spellings, matrix environments, thousands separators, ...
  the comparison   containers first: tuples and intervals (ordered), bare lists and sets (unordered),
                   matrices; then their items as exact values: products of numbers, square roots, pi and
                   letters ('\\frac{1}{\\sqrt3}' = '\\sqrt3/3'), sums in any order, relations either way round.
What needs algebra ('(x+1)^2' = 'x^2+2x+1', '2^4' = 16) is not seen. Hand-written string processing only: no
eval, no sympy, numbers compared exactly with Fraction, every scan linear-time.
"""
import re
from collections import Counter
from fractions import Fraction

def math_equal(pred, gt):
    """Whether two MATH answers are equivalent: the same normalized string, or the same kind of
    container (tuple/interval brackets, matrix shape, bare list) holding equal items."""
    if pred.strip() == gt.strip() != "":
        return True  # a copy of the ground truth: the common right answer, no need to normalize
    if len(pred) > 1000 or len(gt) > 1000:
        return False  # MATH answers are under 200 characters: don't spend time normalizing junk
    a, b = normalize_math(pred), normalize_math(gt)
    if not a or not b:
        return False  # an empty box is never a correct answer
    if a == b:
        return True
    (kind_a, items_a), (kind_b, items_b) = _parts(a), _parts(b)
    if kind_a != kind_b or len(items_a) != len(items_b):
        return False
    if kind_a == "list" and len(items_a) > 1:  # a bare list or a set, as in "all solutions": order doesn't matter
        return Counter(map(_atom_key, items_a)) == Counter(map(_atom_key, items_b))
    # tuples, intervals, matrices: item by item, flat (no recursion, so deep nesting can't overflow)
    return all(x == y or _atom_key(x) == _atom_key(y) for x, y in zip(items_a, items_b))


# A plain decimal. The fractional digits hang off a literal '.', so a failed
# match backtracks in linear, not quadratic, time on a long run of digits.
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


def _to_fraction(s):
    """Exact value of a plain decimal like '-3', '2.50', '.5'; None for anything else."""
    if not _DECIMAL.fullmatch(s):
        return None
    whole, _, decimals = s.partition(".")
    try:  # Fraction(int, int): several times faster than Fraction's own string parsing
        return Fraction(int(whole + decimals), 10 ** len(decimals))
    except ValueError:  # more digits than int() will parse (sys.get_int_max_str_digits)
        return None


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


# -----------------------------------------------------------------------------
# helpers: nanorft's MATH normalization, one small named rule per equivalence

_JOIN_WORDS = re.compile(r"\\(?:text|mbox|mathrm)\{\s*(?:and|or)\s*\}|(?<=\s)(?:and|or)(?=\s)")  # '6 and 8' = '6,8'
_RELATION = re.compile(r"\\(?:[gl]eq?|[gl]eqslant|neq?|[gl]t)(?![a-zA-Z])|[<>!]=")
_RELATIONS = {"\\ge": "≥", "\\geq": "≥", "\\geqslant": "≥", ">=": "≥", "\\le": "≤", "\\leq": "≤",
              "\\leqslant": "≤", "<=": "≤", "\\ne": "≠", "\\neq": "≠", "!=": "≠", "\\lt": "<", "\\gt": ">"}
# LaTeX spacing: \! \, \; \: "\ " ~ \quad; a '\\' (a matrix's row break) is matched first and kept
_SPACING = re.compile(r"\\\\|\\[!,;:]|\\\s|\\q?quad(?![a-zA-Z])")
_TEXT = re.compile(r"\\(?:text(?:bf|it|rm|normal)?|mbox|mathrm)\{")
_UNIT_TAIL = re.compile(r"(?:\^\{?[23]\}?)?\.?")  # after a unit: cm^2, or a final period
_DIGIT = re.compile(r"[0-9]")
# \left \right, $, degrees, percent (also as a word after a number): none changes the value
_NOISE = re.compile(r"\\(?:left|right)(?![a-zA-Z])|\\displaystyle|\^\{?\\circ\}?|\\degree|°|\\?[$%]"
                    r"|(?<=[0-9])(?:percent|pct)(?![a-zA-Z])")
_SQRT = re.compile(r"\\sqrt([0-9a-zA-Z])")
_ONE_CHAR_GROUP = re.compile(r"([_^])\{([0-9a-zA-Z])\}")  # x^{2} = x^2, 1011_{2} = 1011_2
_MATRIX = re.compile(r"\\(begin|end)\{(?:[pbB]?matrix|smallmatrix|array)\}(?:\{[lcr|]*\})?")
_NAME = r"\\?[a-zA-Z]+(?:_\{?[a-zA-Z0-9]+\}?)?'*"  # x, \theta, x_1, f'
_LABEL = re.compile(rf"(?:{_NAME}(?:\([^()=]*\))?|\({_NAME}(?:,{_NAME})*\)|{_NAME}(?::{_NAME})+)"
                    r"(?:=|\\in(?![a-zA-Z]))")  # 'x=', 'f(3)=', '(p,q)=', 'A:B=', 'x\in'
_AFTER_LABEL = re.compile(r"=|\\in(?![a-zA-Z])")
_THOUSANDS = re.compile(r"-?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")
_DECIMAL_IN_TEXT = re.compile(r"(?<![0-9.])[0-9]+\.[0-9]+(?![0-9.])")


def normalize_math(s):
    """Canonical string form of a MATH answer, so equal answers compare equal as strings. Each rule runs
    only when its trigger is in the string: most answers are short and need two or three of them."""
    if s.isdigit():
        return s  # the common case, '42', has nothing to normalize
    if "and" in s or "or" in s:
        s = _JOIN_WORDS.sub(",", s)
    if "\\" in s or "=" in s:
        s = _RELATION.sub(lambda m: _RELATIONS[m.group()], s)  # before spaces go: '\le x' must not become '\lex'
        s = _SPACING.sub(lambda m: m.group() if m.group() == "\\\\" else "", s)
    s = "".join(s.replace("~", "").split())  # all whitespace (and ~); early, so later patterns needn't allow for it
    if ",," in s:
        s = re.sub(",{2,}", ",", s)  # '2, 3, and 4' became '2,3,,4'
    s = _NOISE.sub("", _strip_text(s))
    if "frac" in s:
        s = _fix_fracs(re.sub(r"\\[dtc]frac", r"\\frac", s))
    if "\\sqrt" in s:
        s = _SQRT.sub(r"\\sqrt{\1}", s)
    if "{" in s:
        s = _ONE_CHAR_GROUP.sub(r"\1\2", s)
    if "\\begin" in s:  # pmatrix, bmatrix, \left[\begin{array}{cc}..\end{array}\right]: one kind of matrix
        s = _MATRIX.sub(r"\\\1{matrix}", s)
        if s[:1] + s[-1:] in ("()", "[]") and s.startswith("\\begin{matrix}", 1) and s.count("\\begin") == 1:
            s = s[1:-1]  # the brackets written around it
    s = s.replace("{,}", ",").rstrip(".")  # 1{,}000 is LaTeX's thousands separator
    if "=" in s or "\\in" in s:
        s = _strip_labels(s)
    if "," in s and _THOUSANDS.fullmatch(s):  # "1,000" is one number only when the digit groups say so
        s = s.replace(",", "")
    if "." in s:
        s = _DECIMAL_IN_TEXT.sub(lambda m: m.group().rstrip("0").rstrip("."), s)  # 2.50 -> 2.5
    if s[:1] == "(" and s[-1:] == ")" and _top_level(s[1:-1], ",") == []:
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


def _strip_labels(s):
    """'x=5' -> '5', 'f(3)=1' -> '1', '(p,q)=(3,2)' -> '(3,2)', 'x\\in[1,2]' -> '[1,2]', 'a=4,-8' -> '4,-8',
    'x=1,x=2' -> '1,2'; but 'x=1,y=2' and equations like '4x-5y=-50' stay as they are."""
    m = _LABEL.match(s)
    if m is None:
        return s
    if not _AFTER_LABEL.search(s, m.end()):
        return s[m.end():]
    label, items = m.group(), _split_commas(s) or [s]
    if all(x.startswith(label) and not _AFTER_LABEL.search(x, len(label)) for x in items):
        return ",".join(x[len(label):] for x in items)
    return s

# -----------------------------------------------------------------------------
# helpers: nanorft's MATH comparison: containers, then items as exact values


def _top_level(s, seps):
    """Indices of the characters of `seps` outside brackets; None if a bracket closes that s didn't open."""
    if not any(c in s for c in seps + ")]}"):
        return []  # the common case, skips the loop
    cuts, depth = [], 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif c in seps and depth == 0:
            cuts.append(i)
    return cuts


def _split_commas(s):
    cuts = _top_level(s, ",")
    return None if cuts is None else [s[i + 1:j] for i, j in zip([-1] + cuts, cuts + [len(s)])]


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
    items = _split_commas(inner)
    if items is None:  # '(1,2)\cup(3,4)' is no tuple: its first bracket closes early
        return "atom", [s]
    if kind == "list" and "\\pm" in inner:  # '\pm 2' = '2,-2', '1\pm\sqrt2' = '1+\sqrt2,1-\sqrt2'
        items = [y for x in items for y in ((x.replace("\\pm", "+", 1).lstrip("+"), x.replace("\\pm", "-", 1))
                                            if x.count("\\pm") == 1 else (x,))]
    return kind, items


_ONE_RELATION = re.compile(r"[<>≤≥≠=]")
_NOT_A_PRODUCT = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2}|[0-9.]\.[0-9]*\.")  # two letters, not a command's
_MIXED = re.compile(r"(-?)([0-9]+)\\frac\{([0-9]+)\}\{([0-9]+)\}")
# a factor of a product: a number, \sqrt{integer}, \pi or a letter (with an integer power), \frac's braces, '/'
_FACTOR = re.compile(r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)|\\sqrt\{([0-9]+)\}|(\\pi|[a-zA-Z])(?:\^\{?(-?[0-9]+)\}?)?"
                     r"|\\frac\{|\}\{|\}|/|\\cdot|\\times|-")


def _atom_key(s):
    """A canonical, hashable value of one item: equal keys mean equal answers. Relations compare their sides
    ('5≥x' = 'x≤5'), sums their terms in any order ('2x-1' = '-1+2x'), products their exact value (_product)."""
    relation = _ONE_RELATION.findall(s)
    if len(relation) == 1:
        left, op, right = s.partition(relation[0])
        left, right = _value_key(left), _value_key(right)
        if op in "≠=":
            return op, frozenset((left, right))
        return (left, op, right) if op in "<≤" else (right, "<" if op == ">" else "≤", left)
    return _value_key(s)


def _value_key(s):
    # a mixed number: 3\frac18 = 25/8
    if "\\frac" in s and (m := _MIXED.fullmatch(s)) and (whole := _to_fraction(m.group(2))) is not None:
        part = _product(f"\\frac{{{m.group(3)}}}{{{m.group(4)}}}")
        return s if part is None else (-1 if m.group(1) else 1) * (whole + part)
    # a sum is its terms in any order: '2x-1' = '-1+2x' (a sign after an operator starts no term: 'x^-1', '2\\times-3')
    if "+" not in s and "-" not in s[1:]:
        return _value_or_string(s)
    cuts = [i for i in _top_level(s, "+-") or [] if i > 0 and (s[i - 1].isalnum() or s[i - 1] in ")]}|!'")
            and not s.endswith(("\\times", "\\cdot", "\\div"), 0, i)]
    if len(cuts) > 100:
        return s
    terms = [s[i:j] for i, j in zip([0] + cuts, cuts + [len(s)])]
    keys = [_value_or_string(t.removeprefix("+")) for t in terms]
    return keys[0] if len(keys) == 1 else frozenset(Counter(keys).items())


def _value_or_string(s):
    value = _product(s)
    return s if value is None else value


def _product(s):
    """Exact value of a product of numbers, square roots of integers, \\pi and letters, with \\frac and one
    '/': (coefficient, square-free radicand, symbol powers), or a Fraction when there's no root and no
    symbol. '\\frac{\\sqrt3}{3}' = '\\sqrt3/3' = '\\frac{1}{\\sqrt3}', '2\\sqrt2' = '\\sqrt8',
    '\\frac16\\pi' = '\\pi/6'."""
    if _DECIMAL.fullmatch(s):
        return _to_fraction(s)  # the common case
    if len(s) > 200 or _NOT_A_PRODUCT.search(s):
        return None  # too long to be an answer, a word ('no' is not 'on'), or junk like '2.5.3'
    sign, num, den, radicand, symbols = 1, 1, 1, 1, Counter()  # ints, not Fractions: one gcd at the end
    power, fracs, slash, at_group_start, i = 1, [], False, True, 0  # fracs: [outer power, in denominator]
    while i < len(s):
        m = _FACTOR.match(s, i)
        if m is None:
            return None
        i, (number, root, symbol, exponent), token = m.end(), m.groups(), m.group()
        if token == "-" and at_group_start:
            sign = -sign
        elif token == "\\frac{":
            fracs.append([power, False])
        elif token == "}{" and fracs and not fracs[-1][1]:
            fracs[-1][1], power = True, -fracs[-1][0]
        elif token == "}" and fracs and fracs[-1][1]:
            power = fracs.pop()[0]
        elif token == "/" and not fracs and not slash:
            slash, power = True, -power
        elif number:
            whole, _, decimals = number.partition(".")
            value, scale = int(whole + decimals), 10 ** len(decimals)
            if value == 0 and power < 0:
                return None  # a division by zero
            num, den = (num * value, den * scale) if power > 0 else (num * scale, den * value)
        elif root:
            if root.strip("0") == "" and power < 0:
                return None
            radicand *= int(root)
            den *= int(root) if power < 0 else 1  # 1/sqrt(r) = sqrt(r)/r
        elif symbol:
            symbols[symbol] += power * int(exponent or 1)
        elif token not in ("\\cdot", "\\times"):
            return None
        at_group_start = token in ("\\frac{", "}{")
    if fracs or radicand > 10 ** 12:
        return None
    if num == 0 or radicand == 0:
        return Fraction(0)
    d = 2
    while d * d <= radicand and d < 1000:  # take square factors out of the root: sqrt(8) = 2 sqrt(2)
        if radicand % (d * d):
            d += 1
        else:
            radicand, num = radicand // (d * d), num * d
    coef, symbols = Fraction(sign * num, den), frozenset((k, v) for k, v in symbols.items() if v)
    return coef if radicand == 1 and not symbols else (coef, radicand, symbols)

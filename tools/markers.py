"""
The exercise markers in nanoRFT's own files: their form, where they are, the raise that replaces a region, and
what else a student copy keeps from showing: a stripped solution quoted in the docs, and what a failing test's
assertion expects (often the answer, spelled out as a formula).

    # EXERCISE grpo: GRPO's group z-score advantage (tests: tests/test_advantage.py -k test_grpo)
    <the solution: whole statements>
    # END EXERCISE

A long header goes on over comment lines at the marker's indentation. exercises.py lists what find() returns,
strips regions with stripped() and checks them with each Exercise's tests; strip passes the copy's markdown
through hide_solutions(), check a failing test's report through hide_expected().
"""
import ast
import os
import re
import shlex

# the worksheet's order (EXERCISES.md): the step's core first, with the pieces train.py runs every step (loss,
# pass@k, coverage) done before the first training experiment, then the design choices, then the model's
# machinery
ORDER = ("reinforce", "pass_at_k", "coverage_regret", "grpo", "rloo", "aggregate", "gsm8k", "ppo_clip", "k3",
         "tis", "rope", "kv_cache", "top_p")
BEGIN = re.compile(r"^(\s*)# EXERCISE ([a-z0-9_]+): (.*)$")
HEADER = re.compile(r"^(.+) \(tests: (.+)\)$")  # the header's text, continued on comment lines if long
END = re.compile(r"^\s*# END EXERCISE\s*$")
FORM = "'# EXERCISE name: what to do (tests: tests/test_x.py -k EXPRESSION)' ... '# END EXERCISE'"


class Exercise:
    """One marked region: lines[begin] is its EXERCISE line, lines[end] its END line (0-based); the solution
    is lines[body:end]."""

    def __init__(self, name, what, tests, path, begin, body, end, function):
        self.name, self.what, self.tests = name, what, tests  # tests: pytest arguments [files..., "-k", expr]
        self.path, self.begin, self.body, self.end, self.function = path, begin, body, end, function

    def command(self):
        return "python -m pytest -q " + shlex.join(self.tests)


def find(root):
    """{name: Exercise} of every marked region in the repo at root, in worksheet order (unlisted ones last).
    Raises ValueError for malformed markers, a name used twice, or a test file that does not exist."""
    found = {}
    for f in source_files(root):
        with open(os.path.join(root, f), encoding="utf-8") as fh:
            for ex in parse(f, fh.read()):
                if ex.name in found:
                    raise ValueError(f"exercise {ex.name!r} is marked twice: {found[ex.name].path} and {f}; "
                                     f"if one is a copy, give it a hidden or backup name (.NAME.py, NAME.py.bak), "
                                     f"which are not read")
                for t in ex.tests[:ex.tests.index("-k")]:
                    if not os.path.isfile(os.path.join(root, t)):
                        raise ValueError(f"{f}:{ex.begin + 1}: exercise {ex.name!r} names {t}, which does "
                                         f"not exist")
                found[ex.name] = ex
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: rank.get(kv[0], len(ORDER))))


def source_files(root):
    """The repo's Python files that may hold markers: the reading path (the root) and machinery/ (tests/ and
    tools/ hold none). Hidden files and backups are not the code that runs, so a copy kept beside a file
    (.loss.py, #loss.py#, loss.py~, loss.py.bak, loss.orig) is not read as a second marking."""
    return sorted(os.path.join(d, f) if d else f for d in ("", "machinery")
                  for f in os.listdir(os.path.join(root, d)) if f.endswith(".py") and f[0] not in ".#")


def parse(path, text):
    """The exercises marked in one file's text. A malformed marker raises ValueError naming its line."""
    lines, out, i = text.splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        if END.match(line):
            raise ValueError(f"{path}:{i + 1}: END EXERCISE without an EXERCISE line before it")
        begin = BEGIN.match(line)
        if not begin:
            if "# EXERCISE" in line or "# END EXERCISE" in line:
                raise ValueError(f"{path}:{i + 1}: malformed marker, expected {FORM}: {line.strip()}")
            i += 1
            continue
        start, indent, name, header = i, begin[1], begin[2], begin[3]
        at = f"{path}:{start + 1}: exercise {name!r}"
        while not HEADER.match(header):  # a long header goes on over comment lines at the same indentation
            i += 1
            if i == len(lines) or not lines[i].startswith(indent + "# ") or BEGIN.match(lines[i]) \
                    or END.match(lines[i]):
                raise ValueError(f"{at}: the header must end with '(tests: tests/test_x.py -k EXPRESSION)', "
                                 f"as in {FORM}")
            header += " " + lines[i][len(indent) + 2:].strip()
        body = i + 1
        end = next((j for j in range(body, len(lines)) if END.match(lines[j]) or BEGIN.match(lines[j])), None)
        if end is None or not END.match(lines[end]):
            raise ValueError(f"{at} has no END EXERCISE before the next marker")
        code = [s for s in lines[body:end] if s.strip()]
        if not code or code[0][:len(code[0]) - len(code[0].lstrip())] != indent:
            raise ValueError(f"{at}: the region must hold code that starts at the marker's indentation")
        what, tests = HEADER.match(header).groups()
        args = shlex.split(tests)
        if "-k" not in args[1:-1] or len(args) != args.index("-k") + 2:
            raise ValueError(f"{at}: tests must read 'tests/test_x.py [...] -k EXPRESSION', got {tests!r}")
        out.append(Exercise(name, what, args, path, start, body, end, enclosing_function(text, body + 1)))
        i = end + 1
    return out


def enclosing_function(text, lineno):
    """Name of the innermost def around 1-based line `lineno` ('' at module level), as 'Class.method' in a
    class."""
    best, best_start = "", -1
    try:
        tree = ast.parse(text)
    except SyntaxError:  # a student's unfinished edit: check reports it where pytest meets it
        return best
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef):
                    item.qualname = f"{node.name}.{item.name}"
        if isinstance(node, ast.FunctionDef) and node.lineno <= lineno <= node.end_lineno \
                and node.lineno > best_start:
            best, best_start = getattr(node, "qualname", node.name), node.lineno
    return best


def stripped(text, exercises):
    """The file's text with each exercise's region (between its markers, which stay) replaced by a raise."""
    lines = text.splitlines(keepends=True)
    for ex in sorted(exercises, key=lambda e: -e.begin):  # bottom-up, so earlier line numbers stay valid
        first = next(s for s in lines[ex.body:ex.end] if s.strip())
        indent = first[:len(first) - len(first.lstrip())]
        head = f"{indent}raise NotImplementedError("
        message = [python_string(s) for s in (
            f"exercise {ex.name}: {ex.what}; ",
            f"check with: python tools/exercises.py check {ex.name} ({ex.command()})")]
        lines[ex.body:ex.end] = [f"{head}{message[0]}\n", " " * len(head) + f"{message[1]})\n"]
    return "".join(lines)


def python_string(s):
    """A Python literal of the one-line string s, in double quotes unless s holds one."""
    return repr(s) if '"' in s else '"' + s.replace("\\", "\\\\") + '"'


# -----------------------------------------------------------------------------
# what a student copy does not show: the answers


CODE_SPAN = re.compile(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)")  # one line, or two (wrapped in a paragraph)


def hide_solutions(markdown, solutions):
    """The markdown with every code span that quotes a stripped solution line (a piece of a statement with a
    space in it, e.g. `-advantages * logprobs` or `state["regret"] += ...`) replaced by "(exercise NAME)",
    except pieces of the exercise's own task. solutions: {name: (task, [code lines])}."""
    def hide(span):
        pieces = [p for p in (" ".join(p.split()) for p in span[1].split("...")) if p]
        for name, (task, lines) in solutions.items():
            if pieces and any(" " in p for p in pieces) and not any(p in task for p in pieces) and \
                    any(all(p in line for p in pieces) for line in lines):
                return f"(exercise {name})"
        return span[0]
    return CODE_SPAN.sub(hide, markdown)


LOCATION = re.compile(r"^([^\s:][^:]*):\d+:( |$)")  # a frame of pytest's report ends "tests/test_x.py:40: ..."
ASSERTION = re.compile(r"^>?\s+(assert\b|[\w.]*assert_\w*\()")  # assert x == y, torch.testing.assert_close(
COMPARISON = re.compile(r"\s(==|!=|<=|>=|<|>|is|in)\s")


def hide_expected(text):
    """pytest's report of a failure with the expected side of each assertion in the tests' frames cut
    (`assert x == ...`, `assert_close(x, ...)`): it is often the answer, spelled out as a formula
    (-adv * logprobs). The E lines keep the values."""
    frames = re.split(r"(\n(?:_ )+_? *\n)", text)  # the frames, and the separator lines between them
    for i in range(0, len(frames), 2):
        lines = frames[i].splitlines()
        where = next((m[1] for m in map(LOCATION.match, reversed(lines)) if m), "")
        if where.startswith("tests"):
            frames[i] = "\n".join(cut_assertions(lines))
    return "".join(frames)


def cut_assertions(lines):
    """The source lines with each assertion's expected side replaced by '...', continuation lines and all."""
    out, unclosed = [], 0
    for line in lines:
        if unclosed > 0 and re.match(r">?\s", line):  # the rest of an assertion cut above
            unclosed += balance(line)
            continue
        m, unclosed = ASSERTION.match(line), 0
        cut = m and expected_at(line, m)
        if cut:
            unclosed = balance(line)
            line = line[:cut] + ("..." if m[1] == "assert" else " ...)")
        out.append(line)
    return out


def expected_at(line, m):
    """Where the expected side of the assertion on `line` starts (ASSERTION's match m): after the first
    argument of an assert_ call, after the comparison of an assert; None if there is no such place."""
    depth = int(m[1] != "assert")  # an assert_ call's own parenthesis is open
    for j in range(m.end(), len(line)):
        depth += (line[j] in "([{") - (line[j] in ")]}")
        if m[1] != "assert" and depth == 1 and line[j] == ",":
            return j + 1
        comparison = COMPARISON.match(line, j)
        if m[1] == "assert" and depth == 0 and comparison:
            return comparison.end()
    return None


def balance(line):
    return sum(line.count(c) for c in "([{") - sum(line.count(c) for c in ")]}")

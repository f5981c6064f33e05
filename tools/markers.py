"""
The exercise markers in nanoRFT's own files: their form, where they are, and the raise that replaces a region.

    # EXERCISE grpo: GRPO's group z-score advantage (tests: tests/test_advantage.py -k test_grpo)
    <the solution: whole statements>
    # END EXERCISE

A long header goes on over comment lines at the marker's indentation. exercises.py lists what find() returns,
strips regions with stripped() and checks them with each Exercise's tests.
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
                    raise ValueError(f"exercise {ex.name!r} is marked twice: {found[ex.name].path} and {f}")
                for t in ex.tests[:ex.tests.index("-k")]:
                    if not os.path.isfile(os.path.join(root, t)):
                        raise ValueError(f"{f}:{ex.begin + 1}: exercise {ex.name!r} names {t}, which does "
                                         f"not exist")
                found[ex.name] = ex
    rank = {name: i for i, name in enumerate(ORDER)}
    return dict(sorted(found.items(), key=lambda kv: rank.get(kv[0], len(ORDER))))


def source_files(root):
    """The repo's Python files that may hold markers: the reading path (the root) and machinery/ (tests/ and
    tools/ hold none)."""
    return sorted(os.path.join(d, f) if d else f for d in ("", "machinery")
                  for f in os.listdir(os.path.join(root, d)) if f.endswith(".py"))


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

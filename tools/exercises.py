"""
Classroom exercises that reuse the real code. A region of one of nanoRFT's own files is marked

    # EXERCISE grpo: GRPO's group z-score advantage (tests: tests/test_advantage.py -k test_grpo)
    <the solution: whole statements>
    # END EXERCISE

and this tool makes a student copy of the repo with chosen regions replaced by a `raise NotImplementedError`
that says what to write and which test checks it. So there is one source of truth: the tests that check the
student are the tests that check the project (tests/tools/test_worksheet_stripped.py strips each region: they fail).

    python tools/exercises.py list                               # the worksheet's exercises, in order
    python tools/exercises.py strip all --out ../student         # a copy with every exercise stripped but the model's
    python tools/exercises.py strip grpo rloo --out ../student   # ... or with the named ones (all rope: all, and rope)
    cd ../student && python tools/exercises.py check grpo        # grpo's tests there: PASS, TODO, WRONG, RAISES, BLOCKED
    python tools/exercises.py check all                          # the copy's assigned ones: a table (--json: JSON)
    python tools/exercises.py log out/grpo zero_var_frac coverage  # a run's log keys: first, mean, min, max, last

`check NAME` runs pytest with --exercise=NAME: a test that stops at another exercise's raise is then skipped as
"blocked by exercise Y" rather than failed (tests/conftest.py), so each exercise is judged by its own code only.
A failing test is shown with what it expects left out of its assertion lines (the values are in pytest's E lines),
since that side often spells out the answer. A copy's .exercises.json names the exercises strip assigned there:
`check all` checks and scores those (a repo without one: every exercise).
EXERCISES.md is the worksheet: what to read first, what to implement, the experiment to run afterwards.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repo: the code this tool drives
sys.path.insert(0, ROOT)

from machinery.cli import die, quiet_interrupt

quiet_interrupt(__name__)  # first: a Ctrl-C during the imports below ends with one line, not a traceback

import json
import shutil
import subprocess
import tempfile

from logs import read_log
from markers import find, hide_expected, hide_solutions, stripped

# model engineering, which every experiment runs (the policy's forward, the sampler): `strip all` leaves it
# solved, so the RL exercises' experiments run as the student goes; `strip all rope` strips rope too
ON_REQUEST = ("rope", "kv_cache", "top_p")
MANIFEST = ".exercises.json"  # in a student copy: {"assigned": [the exercises strip stripped there]}
# the instructors' answers to the worksheet's Think questions: a student copy gets this note in their place
ANSWER_KEY = "docs/exercises_key.md"
KEY_NOTE = ("# Answer key\n\nThe answers to the worksheet's **Think** questions are for instructors: they are in "
            "nanoRFT's own repository, not in a student copy.\n")


# -----------------------------------------------------------------------------
# strip: the student copy


def strip(names, out, root=ROOT):
    """Copy the repo at root to `out` (a new or empty directory) with the named exercises' regions stripped,
    the solution lines that its markdown files quote hidden, the answer key left out and the assignment
    written to MANIFEST."""
    exercises = find(root)
    names = chosen(names, exercises)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        die(f"--out={out} exists and is not an empty directory; choose a new directory for the student copy")
    if os.path.abspath(out).startswith(os.path.abspath(root) + os.sep):
        die(f"--out={out} is inside the repo; put the student copy beside it, e.g. --out=../student")
    by_file, texts, solutions = {}, {}, {}
    for n in names:
        by_file.setdefault(exercises[n].path, []).append(exercises[n])
    for f, todo in by_file.items():
        with open(os.path.join(root, f), encoding="utf-8") as fh:
            text = fh.read()
        texts[f] = stripped(text, todo)
        try:
            compile(texts[f], f, "exec")
        except SyntaxError as e:  # a region that is not whole statements (e.g. inside an expression)
            die(f"{f} does not parse with {', '.join(ex.name for ex in todo)} stripped (line {e.lineno}: "
                f"{e.msg}); an exercise region must hold whole statements")
        for ex in todo:  # its code lines without their comments, spaces collapsed
            solutions[ex.name] = (ex.what, [" ".join(line.split(" # ")[0].split())
                                            for line in text.splitlines()[ex.body:ex.end]])
    existed = os.path.isdir(out)
    texts[ANSWER_KEY], texts[MANIFEST] = KEY_NOTE, json.dumps(dict(assigned=names)) + "\n"
    try:
        for f in sorted(set(repo_files(root)) | {MANIFEST}):
            dst = os.path.join(out, f)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if f.endswith(".md") and f != ANSWER_KEY:
                with open(os.path.join(root, f), encoding="utf-8") as fh:
                    texts[f] = hide_solutions(fh.read(), solutions)
            if f in texts:
                with open(dst, "w", encoding="utf-8") as fh:
                    fh.write(texts[f])
            else:
                shutil.copy2(os.path.join(root, f), dst)
    except OSError as e:  # a full disk or no permission: remove the half-written copy (it holds nothing else)
        shutil.rmtree(out, ignore_errors=True)
        if existed:
            os.makedirs(out, exist_ok=True)
        die(f"could not write the student copy to {out} ({e.strerror or e}); nothing was kept there: free "
            f"some space or choose another --out")
    return [exercises[n] for n in names]


def chosen(names, exercises):
    """The exercises that `names` asks for, in worksheet order: "all" is every one but ON_REQUEST."""
    unknown = [n for n in names if n != "all" and n not in exercises]
    if unknown:
        die(f"unknown exercise {unknown[0]!r}; `python tools/exercises.py list` shows them (or use 'all')")
    return [n for n in exercises if n in names or ("all" in names and n not in ON_REQUEST)]


def repo_files(root):
    """Files of the repo to copy: git's tracked and untracked-but-not-ignored ones (assets/ included)."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                             capture_output=True, check=True).stdout.decode()
        files = [f for f in out.split("\0") if f]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (e.g. a student copy): every file
        files = []
        skip = (".git", "out", "__pycache__", ".pytest_cache", ".hypothesis")
        for d, dirs, fs in os.walk(root):
            dirs[:] = [x for x in dirs if x not in skip]
            files += [os.path.relpath(os.path.join(d, f), root) for f in fs if not f.endswith(".pyc")]
    return sorted(f for f in files if os.path.isfile(os.path.join(root, f)))


# -----------------------------------------------------------------------------
# check: an exercise's tests, judged by its own code only


def check(names, root=ROOT, as_json=False):
    """Run each named exercise's tests in the repo at root (the student's copy) and say how it stands; with
    several exercises, a table to grade from (as_json: JSON only), scored over those the copy assigns ("all":
    those). Returns the verdicts."""
    exercises = find(root)
    todo = assigned(root, exercises)
    names = todo if names == ["all"] else names
    for n in names:
        if n not in exercises:
            die(f"unknown exercise {n!r}; `python tools/exercises.py list` shows them")
    results = []
    for n in names:
        if not as_json:
            print(f"== exercise {n}: {exercises[n].command()}", flush=True)
        results.append(verdict(exercises[n], run_tests(exercises[n], root)))
        if not as_json:
            show(results[-1])
    graded = [r for r in results if r["name"] in todo]  # an exercise the copy leaves solved is no grade
    score = sum(r["status"] == "PASS" for r in graded)
    if as_json:
        rows = [dict({k: v for k, v in r.items() if k != "first"}, assigned=r["name"] in todo,
                     first_failure=r["first"] and {k: r["first"][k] for k in ("test", "error", "at")})
                for r in results]
        print(json.dumps(dict(exercises=rows, assigned=todo, passed=score, total=len(graded)), indent=1))
    elif len(results) > 1:
        print(f"\n{'exercise':<16} {'result':<7} {'passed':>6} {'failed':>6} {'blocked':>7}  blocked by")
        for r in results:
            print(f"{r['name']:<16} {r['status']:<7} {r['passed']:>6} {r['failed']:>6} {r['blocked']:>7}  "
                  f"{', '.join(r['blocked_by'])}" + ("" if r["name"] in todo else "  (not assigned here)"))
        copy = len(todo) < len(exercises)
        print(f"{score} of {len(graded)} {'assigned ' if copy else ''}exercises pass"
              + (f" ({len(todo)} assigned in this copy: {', '.join(todo)})" if copy else ""))
    return results


def assigned(root, exercises):
    """The exercises the copy at root assigns, in worksheet order: those its MANIFEST names (strip wrote it),
    or every one where there is none (the repo itself)."""
    path = os.path.join(root, MANIFEST)
    if not os.path.exists(path):
        return list(exercises)
    try:
        with open(path, encoding="utf-8") as fh:
            names = json.load(fh)["assigned"]
        ok = isinstance(names, list) and set(names) <= set(exercises)
    except (OSError, ValueError, KeyError, TypeError):  # UnicodeDecodeError is a ValueError
        ok = False
    if not ok:
        die(f"{path} is not the list of exercises strip assigned to this copy: put back the one of the copy "
            f"handed out, or delete it to check every exercise")
    return [n for n in exercises if n in names]


def run_tests(ex, root):
    """Run ex's tests in the repo at root -> each test's record (tests/conftest.py writes them)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = os.path.join(tmp, "tests.json")
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            f"--exercise={ex.name}", f"--exercise-report={report}", *ex.tests],
                           cwd=root, capture_output=True, text=True)
        if not os.path.exists(report):  # pytest could not start (e.g. a broken tests/conftest.py)
            return [dict(test=ex.command(), outcome="failed", error="pytest's start", at=ex.tests[0],
                         text=p.stdout + p.stderr)]
        with open(report, encoding="utf-8") as fh:
            return json.load(fh)


def verdict(ex, records):
    """One exercise's result from its tests' records: dict(name, status, passed, failed, blocked, blocked_by,
    summary, first); status is PASS, TODO (its raise is still there), WRONG (an assertion disagrees), RAISES
    (another exception), BLOCKED (every test waits for other exercises) or EMPTY (no test selected)."""
    passed = [r for r in records if r["outcome"] == "passed"]
    failed = [r for r in records if r["outcome"] == "failed"]
    blocked = [r for r in records if r.get("blocked_by")]
    blocked_by = sorted({r["blocked_by"] for r in blocked})
    first = next((r for r in failed if not r.get("todo")), None)
    where = f"{ex.path}:{ex.body + 1} ({ex.function or 'module level'})"
    waits = f"exercise {', '.join(blocked_by)}" if blocked_by else ""
    counts = f"{len(passed)} of {len(records)} tests pass"
    counts += f", {len(blocked)} blocked by {waits}" if blocked else ""
    if first is not None:
        status = "WRONG" if first["error"] == "AssertionError" else "RAISES"
        what = f"your code at {where} disagrees with" if status == "WRONG" else \
            f"raises {first['error']} at {first['at']} in"
        summary = f"{what} {first['test']} (shown above); {counts}"
    elif failed:
        status = "TODO"
        summary = f"not implemented yet: replace the raise at {where} with code that does this: {ex.what}"
    elif not records:
        status, summary = "EMPTY", f"{ex.command()} selects no test"
    elif not passed:
        status, summary = "BLOCKED", f"every test needs {waits}, still stripped in this copy: do it first"
    else:
        status = "PASS"
        summary = counts + (" (check again once those are done)" if blocked else "") + \
            ". Now run its experiment (EXERCISES.md)."
    return dict(name=ex.name, status=status, passed=len(passed), failed=len(failed), blocked=len(blocked),
                blocked_by=blocked_by, summary=summary, first=first)


def show(result):
    """What a student reads: the first failing test (its cases, its source up to the failing line with its
    comments, the values, but not what its assertions expect), then a one-line summary."""
    first = result["first"]
    if first is not None:
        print(f"---- {first['test']} (what it expects is left out: the values are on the E lines)\n"
              f"{hide_expected(first['text']).rstrip()}\n----")
    print(f"{result['status']:<7} {result['name']}: {result['summary']}", flush=True)


# -----------------------------------------------------------------------------
# log: what an experiment's run logged, for the numbers the worksheet quotes


def log_summary(run, keys):
    """Each key's first, mean, min, max and last value over the lines of run's log.jsonl that hold it (train.py
    logs most keys every step, the pass@1s at each evaluation), as a table."""
    path = os.path.join(run, "log.jsonl")
    if not os.path.isfile(path):
        die(f"{path} does not exist; give the out_dir of a train.py run, e.g. out/grpo")
    lines = read_log(path)
    logged = sorted({k for line in lines for k in line})
    missing = [k for k in keys if k not in logged]
    if missing or not keys:
        die(f"{', '.join(missing) or 'no key'} not in {path}; its keys: {', '.join(logged)}")
    print(f"{'key':<16} {'lines':>5} {'first':>10} {'mean':>10} {'min':>10} {'max':>10} {'last':>10}")
    for k in keys:
        values = [line[k] for line in lines if k in line]
        summary = (values[0], sum(values) / len(values), min(values), max(values), values[-1])
        print(f"{k:<16} {len(values):>5} " + " ".join(f"{v:>10.4g}" for v in summary))


def main(argv):
    usage = ("usage: python tools/exercises.py list | strip all|NAME [NAME ...] --out DIR | "
             "check all|NAME [NAME ...] [--json] | log OUT_DIR KEY [KEY ...]")
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + usage)
        return
    try:
        exercises = find(ROOT)
    except ValueError as e:
        die(f"bad exercise marker: {e}")
    cmd, args = argv[0], argv[1:]
    if cmd == "list":
        width = max(map(len, exercises), default=0)
        for i, ex in enumerate(exercises.values(), start=1):
            extra = "  (`strip all` leaves it solved: name it to strip it)" if ex.name in ON_REQUEST else ""
            print(f"{i:2}. {ex.name:<{width}}  {ex.path}:{ex.function}  {ex.what}{extra}\n"
                  f"    {'':<{width}}  tests: {ex.command()}")
    elif cmd == "strip":
        out = [a.split("=", 1)[1] for a in args if a.startswith("--out=")]
        if "--out" in args and args.index("--out") + 1 < len(args):
            out.append(args[args.index("--out") + 1])
        names = [a for a in args if not a.startswith("--out") and a not in out]
        if not out or not names:
            die(f"strip needs exercise names and --out DIR; {usage}")
        done = strip(names, out[0])
        stripped_names = [ex.name for ex in done]
        kept = [n for n in ON_REQUEST if n in exercises and n not in stripped_names] if "all" in names else []
        print(f"wrote a student copy to {out[0]} with {len(done)} exercise(s) to do: "
              f"{', '.join(stripped_names)}"
              + (f" ({', '.join(kept)} stay solved: name them to strip them too)" if kept else "")
              + ". Start with EXERCISES.md there; `python tools/exercises.py check NAME` runs an exercise's "
                "tests.")
    elif cmd == "check":
        names = [a for a in args if a != "--json"]
        if not names:
            die(f"check needs exercise names; {usage}")
        results = check(names, as_json="--json" in args)
        sys.exit(0 if all(r["status"] == "PASS" for r in results) else 1)
    elif cmd == "log":
        if not args:
            die(f"log needs a run's out_dir and log keys; {usage}")
        log_summary(args[0], args[1:])
    else:
        die(f"unknown command {cmd!r}; {usage}")


if __name__ == "__main__":
    main(sys.argv[1:])

"""
nanoGPT-style configuration, as a function instead of an exec'd file:

    python train.py config/a.py config/b.py --key=value --other=3e-4
    python train.py --help                    # every knob with its default and comment, by section
    python train.py config/a.py --help        # ... with the values in effect after config/a.py

Config files are plain Python assignments exec'd in order (later ones win), then each
--key=value is parsed with ast.literal_eval (a bare word stays a string). Every key must be
an existing global of the calling script and keep its type; mistakes end with one line and
exit code 2, never a traceback.

A config file can start from another one: include("paper.py") execs that file (its path relative
to the including file's directory) into the same namespace, so the lines after it override it:

    include("paper.py")  # every-run settings of the paper's scripts
    task = "gsm8k"
"""
import ast
import codecs
import difflib
import itertools
import os
import sys
import tokenize
import types

from machinery.cli import die


def configure(defaults, argv, source=None, help_more=None):
    """Apply config files and --key=value overrides in argv to the dict `defaults` (a script's globals
    filtered to its config keys); return the updated values. source: the calling script's path, whose
    comments --help prints; help_more: a function of the values whose text --help prints after them."""
    out = dict(defaults)
    for arg in argv:
        if arg in ("-h", "--help"):
            print(help_text(out, source) + (help_more(out) if help_more else ""))
            sys.exit(0)
        if arg.startswith("--"):
            key, eq, text = arg[2:].partition("=")
            if not eq:
                die(f"override {arg!r} must look like --key=value")
            try:
                value = text if isinstance(defaults.get(key), str) else ast.literal_eval(text.strip())
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                value = text  # a bare word stays a string, and check() says if a string is wrong here
            out[key] = check(key, value, defaults, arg)
        elif arg.startswith("-") or ("=" in arg and not os.path.exists(arg)):
            die(f"argument {arg!r} is neither a config file nor --key=value (--help lists the keys)")
        else:
            for k, v in exec_config(arg, {}).items():
                # a config may `import math` and define helper functions
                if not k.startswith("_") and not isinstance(v, (types.ModuleType, types.FunctionType)):
                    out[k] = check(k, v, defaults, arg)
    return out


def exec_config(path, ns, including=(), read=None):
    """Exec the config file `path` into the dict ns and return ns; `including` is the chain of files
    whose include() led here, so a file that includes itself is caught instead of recursing forever.
    read: a list to which each file read is appended."""
    where = f"config file {path!r}" + (f" (included from {including[-1]!r})" if including else "")
    if os.path.realpath(path) in map(os.path.realpath, including):
        die(f"{where} includes itself: {' -> '.join(including + (path,))}")
    src = read_config(path, where)
    if read is not None:
        read.append(path)

    def include(name):
        if not isinstance(name, str):
            die(f"include() in {path!r} needs a file name string, got {name!r}")
        exec_config(os.path.join(os.path.dirname(path), name), ns, including + (path,), read)
    outer = ns.get("include")  # an including file's own include(): back in place once this file has run
    ns["include"] = include
    try:
        # exec'd in the one namespace ns, as Python runs a module (so a generator expression or a function in
        # the file sees the file's names): config files are the user's own code, like nanoGPT's, and each
        # include() resolves paths against its own file's directory
        exec(compile(src, path, "exec"), ns)
    except SyntaxError as e:
        die(f"{where} line {e.lineno}: {e.msg}")
    except Exception as e:
        die(f"{where} failed: {type(e).__name__}: {' '.join(str(e).split())}")
    ns.pop("include", None)
    if outer is not None:
        ns["include"] = outer
    return ns


def read_config(path, where, missing=""):
    """The text of the config file `path`, or one line naming `where` and what is wrong: the one reader of
    config files (train.py's configure and sweep.py's fingerprint). missing: a hint added when it is not found."""
    try:
        with open(path, "rb") as f:
            raw = f.read().removeprefix(codecs.BOM_UTF8)  # the byte-order mark some Windows editors write
        return raw.decode()
    except FileNotFoundError:
        die(f"{where} not found" + (f"; did you mean {path + '.py'!r}?" if os.path.isfile(path + ".py") else missing))
    except IsADirectoryError:
        die(f"{where} is a directory; pass a .py file of assignments")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        die(f"{where} line {line} is not UTF-8 text ({e.reason}): save it as UTF-8")
    except OSError as e:
        die(f"{where} cannot be read: {e.strerror}")


def config_files(path):
    """The config file `path` and every file it includes, in the order they are read: what a run's setting
    depends on (sweep.py fingerprints their text)."""
    read = []
    exec_config(path, {}, read=read)
    return read


def check(key, value, defaults, where):
    """The value of one key, type-checked against its default (an int may stand for a float)."""
    if key not in defaults:
        close = difflib.get_close_matches(key, defaults, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        die(f"unknown config key {key!r} (from {where}); {hint}--help lists the known keys")
    want = type(defaults[key])
    if want is float and type(value) is int:
        value = float(value)  # --learning_rate=1 means 1.0
    if type(value) is not want:
        want_text = "bool (True or False)" if want is bool else want.__name__
        die(f"config key {key!r} (from {where}) must be {want_text}, got {type(value).__name__} {value!r:.60}")
    return value


# -----------------------------------------------------------------------------
# --help

def help_text(values, source):
    """The knobs with their values and the trailing comments of their lines in `source`, grouped under
    its `# section` comment lines; knobs not found there are listed last."""
    docs = knob_docs(source, values) if source else []
    lines = [f"usage: python {os.path.basename(source or sys.argv[0])} [config.py ...] [--key=value ...]"
             "  (later ones win; see configurator.py)"]
    found = {key for _, key, _ in docs}
    docs += [("other" if docs else "", k, "") for k in values if k not in found]
    # comments line up, but a value longer than 40 characters shifts only its own
    width = min(max((len(f"{k} = {values[k]!r}") for _, k, _ in docs), default=0), 40)
    section = None
    for sec, key, comment in docs:
        if sec != section:
            lines.append(f"\n# {sec}" if sec else "")
            section = sec
        line = f"{key} = {values[key]!r}"
        lines.append(f"{line:<{width}}  # {comment}" if comment else line)
    return "\n".join(lines)


def knob_docs(source, keys):
    """[(section, key, comment)] for each top-level `key = value  # comment` line of the script `source`
    whose key is in keys, in file order. A comment line at column 0 names the section of the knobs after
    it (`# ----` rules excepted), until a line of other code."""
    try:
        with open(source, encoding="utf-8") as f:
            tokens = list(tokenize.generate_tokens(f.readline))
    except (OSError, SyntaxError, UnicodeDecodeError, tokenize.TokenError):
        return []  # help without comments beats no help
    docs, section = {}, ""  # key -> (section, comment) of its first top-level assignment
    for i, t in enumerate(tokens):
        if t.start[1] != 0 or t.type in (tokenize.NL, tokenize.NEWLINE, tokenize.DEDENT, tokenize.ENDMARKER):
            continue
        if t.type == tokenize.COMMENT:
            section = "" if t.string.startswith("# --") else t.string.lstrip("#").strip()
        elif t.type == tokenize.NAME and t.string in keys and tokens[i + 1].string == "=":
            line = itertools.takewhile(lambda u: u.start[0] == t.start[0], tokens[i:])
            comment = next((u.string.lstrip("#").strip() for u in line if u.type == tokenize.COMMENT), "")
            docs.setdefault(t.string, (section, comment))
        else:
            section = ""
    return [(section, key, comment) for key, (section, comment) in docs.items()]

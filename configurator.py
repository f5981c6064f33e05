"""
nanoGPT-style configuration, as a function instead of an exec'd file:

    python train.py config/a.py config/b.py --key=value --other=3e-4

Config files are plain Python assignments exec'd in order (later ones win), then each
--key=value is parsed with ast.literal_eval (a bare word stays a string). Every key must be
an existing global of the calling script and keep its type; mistakes end with one line and
exit code 2, never a traceback.
"""
import ast
import sys


def die(msg):
    """End the program on a user error: one clear line on stderr, exit code 2."""
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def check(key, value, defaults, where):
    if key not in defaults:
        die(f"unknown config key {key!r} (from {where}); known keys: {', '.join(sorted(defaults))}")
    want = type(defaults[key])
    if want is float and type(value) is int:
        value = float(value)  # --learning_rate=1 means 1.0
    if type(value) is not want:
        die(f"config key {key!r} (from {where}) must be {want.__name__}, got {type(value).__name__} {value!r}")
    return value


def configure(defaults, argv):
    """Apply config files and --key=value overrides in argv to the dict `defaults` (a script's globals
    filtered to its config keys); return the updated values."""
    out = dict(defaults)
    for arg in argv:
        if not arg.startswith("--"):
            try:
                with open(arg) as f:
                    src = f.read()
            except OSError:
                die(f"config file {arg!r} not found")
            ns = {}
            try:
                exec(compile(src, arg, "exec"), {}, ns)  # config files are the user's own code, like nanoGPT
            except Exception as e:
                die(f"config file {arg!r} failed: {type(e).__name__}: {e}")
            for k, v in ns.items():
                if not k.startswith("_"):
                    out[k] = check(k, v, defaults, arg)
        else:
            key, eq, text = arg[2:].partition("=")
            if not eq:
                die(f"override {arg!r} must look like --key=value")
            try:
                value = text if isinstance(defaults.get(key), str) else ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text  # a bare word stays a string, and check() says if a string is wrong here
            out[key] = check(key, value, defaults, arg)
    return out

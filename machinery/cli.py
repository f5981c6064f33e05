"""
How a nanoRFT program ends when something is wrong: a user's mistake is one line `error: ...` and exit code 2
(die), a Ctrl-C is one line (quiet_interrupt), and a progress bar being drawn is closed first so the line is the
last thing shown. Every entry point (train, evaluate, the tools) and every module that checks a user's input use
these, so the configurator stays configuration only.
"""
import os
import sys


def die(msg, code=2):
    """End the program on a user error: one clear line on stderr, exit code 2. A progress bar being drawn is
    closed first (it ends its line), so the error starts a line of its own and is the last thing shown."""
    close_bars()
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(code)


def close_bars():
    tqdm = sys.modules.get("tqdm")  # only if the program uses tqdm: never imported just for this
    if tqdm is not None:
        for bar in list(getattr(tqdm.tqdm, "_instances", ())):
            bar.close()


def quiet_interrupt(name):
    """An entry point calls this first thing with its __name__ (imported, it does nothing): from that instant a
    Ctrl-C that the program does not handle itself ends it with one line instead of a traceback of whichever
    import (torch takes seconds) or loop it hit. Python still exits as killed by SIGINT (status 130 in a shell),
    and handlers of KeyboardInterrupt (train.py's resume hint, sweep.py's stop) run as before. Two more uncaught
    exceptions are a user's situation, not a bug: a region of a student copy still to write (exercises.py) is its
    one `error:` line, exit 2; a reader that closed the output pipe (`| head`) ends the program quietly."""
    if name != "__main__":
        return
    report = sys.excepthook

    def hook(kind, value, tb):  # what Python calls with an exception nothing caught, just before it exits
        if issubclass(kind, BrokenPipeError):
            os._exit(1)  # nobody reads any more; exiting now skips Python's flush of stdout into the closed pipe
        if issubclass(kind, NotImplementedError) and str(value).startswith("exercise "):
            close_bars()
            print(f"error: {value}", file=sys.stderr, flush=True)
            os._exit(2)  # Python's own exit after an uncaught exception is always status 1
        if not issubclass(kind, KeyboardInterrupt):
            return report(kind, value, tb)
        close_bars()
        print("error: interrupted", file=sys.stderr)
    sys.excepthook = hook


def first_line(e):
    """An exception's message on one line, short enough for an `error:` line."""
    return (str(e).strip().splitlines() or [""])[0][:200]

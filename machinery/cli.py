"""
How a nanoRFT program ends when something is wrong: a user's mistake is one line `error: ...` and exit code 2
(die), a Ctrl-C is one line (quiet_interrupt), and a progress bar being drawn is closed first so the line is the
last thing shown. Every entry point (train, evaluate, the tools) and every module that checks a user's input use
these, so the configurator stays configuration only. The console matters less than a run's files: a console that
fails (a full disk, a reader gone, a closed descriptor) never stops a program (Console).
"""
import os
import sys

STREAMS = ("stdin", "stdout", "stderr")  # descriptors 0, 1, 2


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
    and handlers of KeyboardInterrupt (train.py's resume hint, sweep.py's stop) run as before. A region of a
    student copy still to write (exercises.py) is its one `error:` line, exit 2. And the console can no longer
    stop the program (guard_console)."""
    if name != "__main__":
        return
    guard_console()
    report = sys.excepthook

    def hook(kind, value, tb):  # what Python calls with an exception nothing caught, just before it exits
        if issubclass(kind, NotImplementedError) and str(value).startswith("exercise "):
            close_bars()
            print(f"error: {value}", file=sys.stderr, flush=True)
            os._exit(2)  # Python's own exit after an uncaught exception is always status 1
        if not issubclass(kind, KeyboardInterrupt):
            return report(kind, value, tb)
        close_bars()
        print("error: interrupted", file=sys.stderr)
    sys.excepthook = hook


def guard_console():
    """stdout and stderr as Consoles. A descriptor 0-2 that was closed (`>&-`) is first pointed at /dev/null:
    Python leaves sys.stdout None then, and the next file opened (log.jsonl) would take the free descriptor and
    receive whatever anything writes to "stdout"."""
    for fd, name in enumerate(STREAMS):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            if fd:
                setattr(sys, name, open(fd, "w", closefd=False))
    sys.stdout, sys.stderr = Console(sys.stdout, "stdout"), Console(sys.stderr, "stderr")


class Console:
    """sys.stdout or sys.stderr that never raises: the first write or flush that fails (`>/dev/full`, a closed
    pipe: `| head`) points its descriptor at /dev/null, so neither a later line nor Python's flush at exit fails
    again, and says so once on the other stream, if that one still works; the program goes on. A character the
    locale cannot encode is written as an escape (\\u904b)."""

    def __init__(self, stream, name):
        self.stream, self.name, self.fd, self.lost = stream, name, stream.fileno(), False

    def write(self, text):
        try:
            try:
                return self.stream.write(text)
            except UnicodeEncodeError:  # a character the locale's encoding lacks (C, Latin-1): as an escape
                code = self.stream.encoding
                return self.stream.write(text.encode(code, "backslashreplace").decode(code))
        except (OSError, ValueError) as e:  # ValueError: the stream object itself was closed
            self.drop(e)
            return len(text)

    def flush(self):
        try:
            self.stream.flush()
        except (OSError, ValueError) as e:
            self.drop(e)

    def drop(self, e):
        if self.lost:
            return
        self.lost = True
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, self.fd)  # what the old stream still buffers is flushed there, at exit
        os.close(null)
        self.stream = open(os.devnull, "w")
        other = sys.stderr if self.name == "stdout" else sys.stdout
        other.write(f"warning: cannot write to {self.name} ({getattr(e, 'strerror', None) or e}): going on "
                    f"without it\n")
        other.flush()

    def __getattr__(self, name):  # fileno, isatty, encoding, ...: the stream's own
        return getattr(self.stream, name)


def first_line(e):
    """An exception's message on one line, short enough for an `error:` line."""
    return (str(e).strip().splitlines() or [""])[0][:200]


def portable_path(what, path):
    """path, or one line when the libraries that take file names as UTF-8 text (tokenizers, safetensors, torch,
    pyarrow) would miss it: a non-ASCII name under a locale whose encoding is not UTF-8 (LC_ALL=C with
    PYTHONUTF8=0, Latin-1), whose bytes on disk are not the UTF-8 of its text. They fail with a
    UnicodeEncodeError (at a run's first checkpoint) or use another name. what: the knob that names it."""
    try:
        same = os.fsencode(path) == os.fspath(path).encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes, held as surrogates
        same = False
    if not same:
        die(f"{what} {os.fspath(path)!r} is not ASCII and this locale's encoding ({sys.getfilesystemencoding()}) "
            f"is not UTF-8: the tokenizer and weight libraries take file names as UTF-8 and would miss it; run with "
            f"PYTHONUTF8=1 (or a UTF-8 locale: LC_ALL=C.UTF-8), or use an ASCII name")
    return path

"""Run a script or module as `__main__`, the way `python script.py` would."""

from __future__ import annotations

import builtins
import io
import os
import runpy
import signal
import sys
import types
from importlib.machinery import SourceFileLoader

_OWN_DIRS = (os.path.dirname(os.path.abspath(__file__)),)


def _ours(filename: str) -> bool:
    return (filename.startswith(_OWN_DIRS) or filename == runpy.__file__
            or filename == "<frozen runpy>")


def _report_uncaught(exc: BaseException) -> None:
    """Hand the exception to sys.excepthook with failcore's frames cut off."""
    tb = exc.__traceback__
    while tb is not None and _ours(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    exc.__traceback__ = tb  # the default hook prints this, not its third argument
    sys.excepthook(type(exc), exc, tb)


def load_script(path: str) -> types.CodeType:
    """Read and compile the script, as Python does before running any of it
    (so before the guard is on: reading the script is the interpreter's own read)."""
    filename = os.path.abspath(path)  # as Python 3.9+ sets __file__ for a script
    with io.open_code(filename) as f:
        source = f.read()
    return compile(source, filename, "exec", dont_inherit=True)


def run_script(path: str, code: types.CodeType, args: list[str]) -> int:
    """Execute `code`, loaded from `path`, as `__main__` with `sys.argv = [path, *args]`;
    return its exit code.

    `SystemExit` propagates untouched, so `sys.exit("message")` behaves as
    usual. An uncaught exception is printed by `sys.excepthook` without
    failcore's frames and gives exit code 1, as in Python.
    """
    filename = code.co_filename
    module = types.ModuleType("__main__")
    module.__dict__.update(__file__=filename, __builtins__=builtins, __cached__=None,
                           __loader__=SourceFileLoader("__main__", filename))
    sys.modules["__main__"] = module
    sys.argv = [path, *args]
    if not getattr(sys.flags, "safe_path", False):
        sys.path[0] = os.path.dirname(os.path.realpath(path))
    return _execute(lambda: exec(code, module.__dict__))


def run_module(name: str, args: list[str]) -> int:
    """Execute module `name` as `__main__` (`python -m name args`): it stays the
    real `__main__` afterwards too (threads, atexit and pickling rely on that)."""
    sys.argv = [name, *args]  # runpy replaces argv[0] with the module's path
    if not getattr(sys.flags, "safe_path", False):
        sys.path[0] = os.getcwd()
    main = types.ModuleType("__main__")
    main.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = main
    return _execute(lambda: runpy._run_module_as_main(name, alter_argv=True))


def _execute(body) -> int:
    try:
        body()
    except SystemExit:
        raise
    except KeyboardInterrupt as exc:
        _report_uncaught(exc)
        # Die of SIGINT as Python does, so the parent sees the real cause; and as
        # Python does, after the atexit handlers (the trace's run.end among them).
        import atexit

        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
        return 130
    except BaseException as exc:
        _report_uncaught(exc)
        return 1
    return 0

"""Activation from the environment, before the program's first line.

`failcore.pth` (installed into site-packages) and `sitecustomize_example/`
call `activate()` at interpreter start-up when `FAILCORE_POLICY` is set.
A configuration that cannot be honoured stops the program with a message
on stderr: it must never run unguarded by mistake.
"""

from __future__ import annotations

import os
import sys

EXIT_CONFIG = 78  # sysexits EX_CONFIG: the policy or a FAILCORE_* variable is bad
EXIT_SOFTWARE = 70  # EX_SOFTWARE: failcore itself could not start

_activated = False


def activate() -> None:
    """Install the guard from `FAILCORE_*`; once per process, however often called."""
    global _activated
    if _activated:
        return
    _activated = True
    if not os.environ.get("FAILCORE_POLICY"):
        return
    try:
        from ._errors import PolicyError
        from ._guard import install
    except BaseException as exc:
        stop(f"FAILCORE_POLICY is set, but failcore cannot be imported "
             f"({type(exc).__name__}: {exc})", EXIT_SOFTWARE)
    try:
        install()
    except PolicyError as exc:  # it names a FAILCORE_* variable, or else the policy
        named = (exc.key or "").startswith("FAILCORE_")
        stop(str(exc) if named else f"FAILCORE_POLICY: {exc}", EXIT_CONFIG)
    except BaseException as exc:
        stop(f"the guard could not be installed ({type(exc).__name__}: {exc})", EXIT_SOFTWARE)


def stop(message: str, code: int) -> None:
    """End the process before the program runs. (SystemExit raised inside
    `site` is a fatal interpreter error with a core-dump message and exit 1.)"""
    try:
        sys.stderr.write(f"failcore: {message}; the program was not started.\n")
        sys.stderr.flush()
    finally:
        os._exit(code)

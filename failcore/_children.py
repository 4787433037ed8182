"""Children inherit the guard: every launch carries the policy in its environment.

A Python child comes up guarded by the start-up hook (`failcore.pth`), which
reads `FAILCORE_POLICY`. The parent's policy travels as inline JSON with the
parent's own places written out (`{cwd}`, `{tmp}`, `{home}`, `~`), so a child
started in another directory, or with another HOME or TMPDIR, guards the same
files. `{python}` stays as it is: it names the child interpreter's own files.
The caller's `env=` is kept, except that it cannot switch the guard off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ._files import expand
from ._policy import Policy
from ._types import Mode

POLICY, MODE, DISABLE = "FAILCORE_POLICY", "FAILCORE_MODE", "FAILCORE_DISABLE"
TRACE = "FAILCORE_TRACE"
_KEYS = (POLICY, MODE, DISABLE, TRACE)
_KEYS_BYTES = tuple(key.encode() for key in _KEYS)
_ENTRY_PREFIXES = tuple(key + b"=" for key in _KEYS_BYTES)

# What these variables were before failcore first set them: uninstall() puts it back.
_saved: dict[str, str | None] | None = None
# Whether this interpreter's site-packages hold failcore.pth (None: not looked yet).
_has_start_hook: bool | None = None


def portable_config(policy: Policy) -> dict:
    """`policy`'s rules with this process's places written out (see the module doc)."""
    config = policy.config
    files = config.get("filesystem", {})
    for key in ("read", "write", "deny"):
        if key in files:
            files[key] = [path for entry in files[key]
                          for path in ([entry] if "{python}" in entry else expand(entry))]
    return config


def variables(policy: Policy, mode: Mode) -> dict[str, str]:
    """The environment a child needs to run under `policy` in `mode`. Its
    FAILCORE_TRACE is empty: opening the parent's trace would truncate it."""
    import json  # here, not at start-up: only a launch needs it

    text = json.dumps(portable_config(policy), sort_keys=True, separators=(",", ":"))
    return {POLICY: text, MODE: mode.value, TRACE: ""}


def _pythonpath_for_children() -> str | None:
    """This process's PYTHONPATH when this interpreter has no `failcore.pth`
    (failcore came through `sitecustomize_example/` on PYTHONPATH): a child
    given an environment without PYTHONPATH gets it, or nothing would start
    its guard. (A child run with -E or -I ignores it: README.)"""
    global _has_start_hook
    if _has_start_hook is None:  # site-packages do not change: look once
        import site

        dirs = [*getattr(site, "getsitepackages", list)(), getattr(site, "USER_SITE", None)]
        _has_start_hook = any(os.path.exists(os.path.join(d, "failcore.pth"))
                              for d in dirs if d)
    return None if _has_start_hook else os.environ.get("PYTHONPATH") or None


def guarded_env(env: object, ours: dict[str, str]) -> object:
    """`env` as a launch takes it (None: this process's environment; a mapping;
    or fork_exec's `b"KEY=value"` list), carrying `ours` and no FAILCORE_DISABLE."""
    if env is None:
        _assert_environ(ours)
        return None
    pythonpath = _pythonpath_for_children()
    if isinstance(env, (list, tuple)):
        kept = [entry for entry in env if not bytes(entry).startswith(_ENTRY_PREFIXES)]
        if pythonpath and not any(bytes(e).startswith(b"PYTHONPATH=") for e in kept):
            kept.append(os.fsencode(f"PYTHONPATH={pythonpath}"))
        return kept + [os.fsencode(f"{key}={value}") for key, value in ours.items()]
    kept = {key: value for key, value in env.items() if os.fsencode(key) not in _KEYS_BYTES}
    if pythonpath and not any(os.fsencode(key) == b"PYTHONPATH" for key in kept):
        kept["PYTHONPATH"] = pythonpath
    kept.update(ours)
    return kept


def carries(env: object, ours: dict[str, str]) -> bool:
    """Whether a launch's own `env` brings the guard to the child."""
    if not isinstance(env, Mapping):
        return False
    seen = {os.fsencode(key): value for key, value in env.items()
            if isinstance(key, (str, bytes)) and os.fsencode(key) in _KEYS_BYTES}
    if seen.get(DISABLE.encode()) not in (None, "", b"", "0", b"0"):
        return False
    return all(os.fsdecode(seen.get(key.encode(), b"")) == value for key, value in ours.items())


def _assert_environ(ours: dict[str, str]) -> None:
    """Put `ours` into this process's environment (again: the program may have
    changed it), which children started without `env` inherit."""
    global _saved
    if _saved is None:
        _saved = {key: os.environ.get(key) for key in _KEYS}
    for key, value in ours.items():
        os.environ[key] = value
    os.environ.pop(DISABLE, None)
    os.unsetenv(DISABLE)


def restore_environ() -> None:
    """Undo `_assert_environ` (uninstall)."""
    global _saved
    if _saved is None:
        return
    for key, value in _saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    _saved = None

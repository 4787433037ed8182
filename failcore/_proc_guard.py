"""Interception of process launches: `subprocess`, `os.system`, `os.exec*`,
`os.posix_spawn(p)`, `os.spawnv*`, `pty.spawn`, `_posixsubprocess.fork_exec`,
and their audit events.

Each launch is judged by the policy's `[process]` rules before the child
exists. A Popen'd program is started from the PATH location that was judged,
so a different `PATH` lookup in the child cannot swap it.
"""

from __future__ import annotations

import os
from contextvars import ContextVar

from . import _children
from . import _guard as core
from ._processes import locate
from ._types import Action, Decision

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

# Where a bare name was found on a PATH: checked again (one access call) before
# each use, so a launch costs no PATH walk; the child runs the file judged.
_found_on_path: dict[tuple[str, str | None], str] = {}



def _text(value: Any) -> str:
    return os.fsdecode(value) if isinstance(value, (str, bytes, os.PathLike)) else str(value)


def _argv(args: Any) -> list[str]:
    if isinstance(args, (str, bytes, os.PathLike)):
        return [_text(args)]
    return [_text(a) for a in args]


def _locator(state: core._Active, search_path: str | None, cwd: Any = None):
    """`locate` with the child's PATH, relative paths taken from its cwd, and
    each name looked up once per launch (the judgement and the pin agree)."""
    full = bool(state.policy.process.allow_paths or state.policy.process.deny_paths)
    seen: dict[str, tuple[str | None, str | None]] = {}

    def find(name: str) -> tuple[str | None, str | None]:
        if name not in seen:
            path = name
            if "/" in name and not os.path.isabs(name) and cwd is not None:
                path = os.path.join(_text(cwd), name)
            known = _found_on_path.get((name, search_path)) if "/" not in name else None
            if known is not None and os.access(known, os.X_OK):
                path = known
            seen[name] = found = locate(path, search_path, full)
            if "/" not in name and found[0] is not None:
                if len(_found_on_path) > 1024:
                    _found_on_path.clear()
                _found_on_path[(name, search_path)] = found[0]
        return seen[name]

    return find


def _judge(state: core._Active, argv: list[str], *, shell: bool = False,
           search_path: str | None = None, cwd: Any = None, find: Any = None) -> Decision:
    try:
        find = find or _locator(state, search_path, cwd)
        decision = state.policy.check_exec(argv, find, shell=shell)
    except Exception as exc:
        return core._guard_error("proc.exec", exc)
    if state.trace is not None:  # what the trace needs to judge it again
        state.exec_subject = (decision, argv, shell)
    return decision


def _exec_path(path: Any) -> str:
    """exec and posix_spawn take a path literally: a bare name is in the cwd."""
    text = _text(path)
    return text if "/" in text else "./" + text


# The one launch a patched Popen judged: (program path, argv). Its own
# fork_exec and subprocess.Popen event match it exactly and are not judged
# twice; any other launch made meanwhile (by a profile function, say) is,
# as are the lower layers of every other patched launch: no blanket skip.
_popen_judged: ContextVar[tuple[str, tuple[str, ...]] | None] = ContextVar(
    "failcore_popen_judged", default=None)


def _is_popen_judged(program: str, argv: list[str]) -> bool:
    return _popen_judged.get() == (program, tuple(argv))


def _active() -> core._Active | None:
    """The state in force when launches must be judged (not only carry the guard)."""
    state = core._current()
    if state is None or not state.judges_launches:
        return None
    return state


def _child_variables(state: core._Active) -> dict[str, str]:
    """The environment that brings the guard to a child (made on the first launch)."""
    ours = state.child_env
    if ours is None:
        ours = state.child_env = _children.variables(state.policy, state.mode)
    return ours


def _with_guard(args: tuple, kwargs: dict, index: int | None) -> tuple[tuple, dict]:
    """`args`/`kwargs` with the child's environment (argument `index`, or `env=`;
    None: the call takes none, the child gets this process's) made to carry the guard."""
    state = core._state
    if state is None:
        return args, kwargs
    ours = _child_variables(state)
    if "env" in kwargs:
        kwargs = {**kwargs, "env": _children.guarded_env(kwargs["env"], ours)}
    elif index is not None and len(args) > index:
        args = (*args[:index], _children.guarded_env(args[index], ours), *args[index + 1:])
    else:
        _children.guarded_env(None, ours)
    return args, kwargs


# -- patches -------------------------------------------------------------------


def _guard_execute_child(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Popen._execute_child(args, executable, preexec_fn, close_fds, pass_fds, cwd,
    env, startupinfo, creationflags, shell, ...): the same first ten on 3.10-3.13.
    With no env of its own, fork_exec or posix_spawn below brings the guard."""
    if kwargs.get("env", args[6] if len(args) > 6 else None) is not None:
        args, kwargs = _with_guard(args, kwargs, 6)
    state = _active()
    if state is None or len(args) < 10:
        return wrapped(*args, **kwargs)
    popen_args, executable, cwd, env, shell = args[0], args[1], args[5], args[6], args[9]
    argv = _argv(popen_args)
    search_path = os.environ.get("PATH", os.defpath) if env is None else \
        os.pathsep.join(os.get_exec_path(env))
    if shell:
        decision = _judge(state, argv[:1], shell=True)
    else:
        program = [_text(executable)] if executable is not None else argv[:1]
        find = _locator(state, search_path, cwd)
        decision = _judge(state, program + argv[1:], find=find)
        if decision.allowed and executable is None and argv and "/" not in argv[0]:
            found, _ = find(argv[0])
            if found is not None:  # run what was judged, not a later PATH lookup
                args = (args[0], found, *args[2:])
    core._enforce(state, decision)
    if shell:
        launch = ("/bin/sh", ("/bin/sh", "-c", *argv))
    else:
        program = _text(args[1]) if args[1] is not None else (argv[0] if argv else "")
        launch = (program, tuple(argv))
    token = _popen_judged.set(launch)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _popen_judged.reset(token)


def _guard_system(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    args, kwargs = _with_guard(args, kwargs, None)
    state = _active()
    if state is not None and len(args) == 1:
        core._enforce(state, _judge(state, [_text(args[0])], shell=True))
    return wrapped(*args, **kwargs)


def _guard_exec(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """os.execv(path, argv) and os.execve(path, argv, env); every exec* ends here."""
    args, kwargs = _with_guard(args, kwargs, 2)
    state = _active()
    if state is None or len(args) < 2:
        return wrapped(*args, **kwargs)
    argv = _argv(args[1])
    core._enforce(state, _judge(state, [_exec_path(args[0]), *argv[1:]]))
    return core._call_judged("os.exec", args[0], wrapped, args, kwargs)


def _guard_posix_spawn(search: bool):
    def guard(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        args, kwargs = _with_guard(args, kwargs, 2)
        state = _active()
        if state is None or len(args) < 2:
            return wrapped(*args, **kwargs)
        argv = _argv(args[1])
        if not _is_popen_judged(_text(args[0]), argv):  # Popen's own spawn: judged above it
            program = _text(args[0]) if search else _exec_path(args[0])
            core._enforce(state, _judge(state, [program, *argv[1:]]))
        return core._call_judged("os.posix_spawn", args[0], wrapped, args, kwargs)

    return guard


def _pty_spawn_argv(args: tuple, kwargs: dict) -> tuple[list[str], str | None] | None:
    """pty.spawn(argv, ...) runs os.execlp(argv[0], *argv): a search of this PATH."""
    argv = args[0] if args else kwargs.get("argv")
    return None if argv is None else (_argv(argv), None)


def _spawnv_argv(search: bool, with_env: bool):
    """os.spawnv*(mode, file, args[, env]) runs exec(v|vp)(file, args) in the fork;
    spawnvpe searches the PATH of its `env`."""

    def argv_of(args: tuple, kwargs: dict) -> tuple[list[str], str | None] | None:
        if len(args) < (4 if with_env else 3):
            return None
        program = _text(args[1])
        search_path = os.pathsep.join(os.get_exec_path(args[3])) if search and with_env \
            else None
        return [program if search else _exec_path(program), *_argv(args[2])[1:]], search_path

    return argv_of


def _guard_fork_then_exec(argv_of):
    """pty.spawn and os.spawnv*: they fork, then exec in the child. Judged here,
    in the caller, so a deny raises to it, not in a forked copy of it (which
    pty.spawn lets run on, and os.spawn* hides as exit code 127). The child's
    exec is judged again."""

    def guard(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        state = _active()
        if state is not None:
            launch = argv_of(args, kwargs)
            if launch is not None:
                core._enforce(state, _judge(state, launch[0], search_path=launch[1]))
        return wrapped(*args, **kwargs)

    return guard


def _guard_fork_exec(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """_posixsubprocess.fork_exec(args, executable_list, close_fds, pass_fds, cwd, ...):
    every candidate path it may exec is judged."""
    args, kwargs = _with_guard(args, kwargs, 5)
    state = _active()
    if state is not None and len(args) >= 5:
        argv = _argv(args[0] or [])
        candidates = [_text(c) for c in args[1] or ()]
        if len(candidates) == 1 and _is_popen_judged(candidates[0], argv):
            return wrapped(*args, **kwargs)
        for path in candidates:
            if os.path.exists(path if os.path.isabs(path) or args[4] is None
                              else os.path.join(_text(args[4]), path)):
                core._enforce(state, _judge(state, [path, *argv[1:]], cwd=args[4]))
    return wrapped(*args, **kwargs)


def targets(imported: Callable[[str], Any]) -> list[tuple[Any, str, Any]]:
    """What to patch, of the modules `imported(name)` says are there."""
    found = [
        (os, "system", _guard_system),
        (os, "execv", _guard_exec),
        (os, "execve", _guard_exec),
    ]
    for name, search in (("posix_spawn", False), ("posix_spawnp", True)):
        if hasattr(os, name):
            found.append((os, name, _guard_posix_spawn(search)))
    # spawnl* and spawnle* call these; pty.spawn searches PATH (execlp).
    for name in ("spawnv", "spawnve", "spawnvp", "spawnvpe"):
        if hasattr(os, name):
            argv_of = _spawnv_argv(name.startswith("spawnvp"), name.endswith("e"))
            found.append((os, name, _guard_fork_then_exec(argv_of)))
    posixsubprocess = imported("_posixsubprocess")
    if posixsubprocess is not None:
        found.append((posixsubprocess, "fork_exec", _guard_fork_exec))
    subprocess = imported("subprocess")
    if subprocess is not None:
        found.append((subprocess.Popen, "_execute_child", _guard_execute_child))
        if hasattr(subprocess, "_fork_exec"):  # 3.11+: a reference taken at import
            found.append((subprocess, "_fork_exec", _guard_fork_exec))
    pty = imported("pty")
    if pty is not None:
        found.append((pty, "spawn", _guard_fork_then_exec(_pty_spawn_argv)))
    return found


# -- the audit-hook backstop -------------------------------------------------------


def _hook(build):
    """A hook for a launch event; `build(args)` gives the argvs that may run, whether
    it is a shell line, and the child's working directory."""

    def check(state: core._Active, args: tuple) -> None:
        if not state.judges_launches:
            return
        try:
            candidates, shell, cwd = build(args)
            if not candidates:  # the very launch a patch judged
                return
            decisions = [_judge(state, argv, shell=shell, cwd=cwd) for argv in candidates]
            decision = next((d for d in decisions if not d.allowed), decisions[0])
        except Exception as exc:
            decision = core._guard_error("proc.exec", exc)
        core._enforce(state, decision)

    return check


def _popen_event(args: tuple) -> tuple[list[list[str]], bool, Any]:
    """subprocess.Popen(executable, args, cwd, env), raised inside _execute_child."""
    executable, popen_args, cwd = args[0], args[1], args[2]
    argv = _argv(popen_args)
    if executable is not None and _is_popen_judged(_text(executable), argv):
        return [], False, cwd
    return [[_text(executable), *argv[1:]] if executable is not None else argv], False, cwd


def _exec_event(event: str):
    """Build the argvs of an `os.exec` or `os.posix_spawn` event."""

    def build(args: tuple) -> tuple[list[list[str]], bool, Any]:
        if core._is_judged(event, None, args[0]) or _is_popen_judged(_text(args[0]),
                                                                      _argv(args[1])):
            return [], False, None  # the very launch a patch judged
        return _exec_candidates(args)

    return build


def _exec_candidates(args: tuple) -> tuple[list[list[str]], bool, Any]:
    """The event does not say whether a bare name is searched on PATH
    (posix_spawnp) or taken from the cwd: judge both."""
    path, rest = _text(args[0]), _argv(args[1])[1:]
    candidates = [[_exec_path(path), *rest]]
    if "/" not in path:
        candidates.append([path, *rest])
        runnable = [c for c in candidates if locate(c[0])[0] is not None]
        candidates = runnable or candidates  # one that cannot be found cannot run
    return candidates, False, None


def _carrying(env_at: int | None, check, lower_layer_brings_environ: bool = False):
    """`check`, then make sure the launch brings the guard to the child: with no
    environment of its own, this process's gets the variables again (unless a
    patched lower layer will, as under Popen); an env without them (a
    reference captured before install()) is denied."""

    def hook(state: core._Active, args: tuple) -> None:
        check(state, args)
        installed = core._state  # children carry the global guard, not a session's
        if installed is None:
            return
        ours = _child_variables(installed)
        env = args[env_at] if env_at is not None and len(args) > env_at else None
        if env is None:
            if not lower_layer_brings_environ:
                _children.guarded_env(None, ours)
        elif not _children.carries(env, ours):
            target = _text(args[0]) if args else "(unknown)"
            core._enforce(state, Decision(
                Action.DENY, "proc.exec", target, "guard.child-unguarded",
                "The child's environment does not carry the failcore guard, and failcore "
                "cannot add it on this path (a reference captured before install()), "
                "so the launch was blocked."))

    return hook


HOOKS = {
    "subprocess.Popen": _carrying(3, _hook(_popen_event), lower_layer_brings_environ=True),
    "os.system": _carrying(None, _hook(lambda args: ([[_text(args[0])]], True, None))),
    "os.exec": _carrying(2, _hook(_exec_event("os.exec"))),
    "os.posix_spawn": _carrying(2, _hook(_exec_event("os.posix_spawn"))),
}

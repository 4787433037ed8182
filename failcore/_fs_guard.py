"""Interception of file operations: `open`, `io.open`, `os.open`, the `os`
mutators and listers (on `os` and on `posix`, which the import system uses),
and the `open`, `os.*` and `shutil.*` audit events behind them.

A path is judged as the real path it leads to: made absolute (from the
working directory, or from the directory a `dir_fd` refers to) with symlinks
resolved, the last one too unless the call acts on the link itself. An open
is judged on what it really opened (`/proc/self/fd/N`) before the file is
handed back, so a path swapped after a check cannot smuggle out a read; a
write is judged before it happens as well. The original always gets the one
exact copy of each path that was judged.
"""

from __future__ import annotations

import builtins
import errno
import fcntl
import io
import operator
import os
import posix
import re
import sys

from . import _guard as core
from ._types import Action, Decision, Mode

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at interpreter start-up
    from typing import Any

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_AT_FDCWD = -100  # Linux's AT_FDCWD; the audit events say -1 for "no dir_fd"
_PROC_FD = os.path.isdir("/proc/self/fd")
# Not a file on disk: a /proc/<pid>/fd link to pipe:[..] or socket:[..], a memfd.
_NOT_A_FILE = re.compile(r"/proc/[^/]+/fd/[^/]*:|/memfd:")
_OPEN_OPS = {"r": "fs.read", "rb": "fs.read", "rt": "fs.read", "w": "fs.write",
             "wb": "fs.write", "a": "fs.write", "ab": "fs.write"}
_close = posix.close
_fstat = posix.fstat
_UNSEEN = object()
_ALLOW = Action.ALLOW
_readlink = posix.readlink
_judged = core._judged


class _Unpinned(Exception):
    """An audit event named a path through an object that could answer differently
    to the C code than to us."""


def _exact(path: Any, allow_fd: bool) -> str | bytes | int:
    """A path as the C code reads it: an exact str or bytes, or an int fd.
    A PathLike is asked once; the answer is what gets judged and used."""
    kind = type(path)
    if kind is str or kind is bytes or (kind is int and allow_fd):
        return path
    if isinstance(path, str):
        return str.__str__(path)
    if isinstance(path, bytes):
        return bytes.__getitem__(path, slice(None))
    if allow_fd and hasattr(kind, "__index__"):
        return operator.index(path)
    fspath = getattr(kind, "__fspath__", None)
    if fspath is not None:
        value = fspath(path)
        if isinstance(value, (str, bytes)):
            return _exact(value, False)
    accepted = "str, bytes, os.PathLike" + (" or an integer file descriptor" if allow_fd else "")
    raise TypeError(f"failcore: a path must be {accepted}, not {kind.__name__}")


def _text(path: str | bytes) -> str:
    return path if type(path) is str else os.fsdecode(path)


def _fd_target(fd: int) -> str | None:
    """The real path an open fd refers to; None when it is not a file on disk."""
    try:
        target = _readlink(f"/proc/self/fd/{fd}")
    except FileNotFoundError:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF)) from None
    if not target.startswith("/") or _NOT_A_FILE.match(target):
        return None
    return target.removesuffix(" (deleted)")


def _real(path: str | bytes | int | None, dir_fd: Any, follow: bool) -> str | None:
    """The real path a call on `path` acts on (None: not a file on disk). `follow`
    False: a last component that is a symlink is the link itself."""
    if type(path) is int:
        return _fd_target(path)
    text = "." if path is None else _text(path)
    if not text.startswith("/"):
        if dir_fd is None or dir_fd == _AT_FDCWD:
            base = os.getcwd()
        else:
            base = _fd_target(dir_fd)
            if base is None:
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        text = os.path.join(base, text)
    if not follow:
        head, tail = os.path.split(text)
        if tail not in ("", ".", ".."):
            return os.path.join(os.path.realpath(head), tail)
    real = os.path.realpath(text)
    return None if _NOT_A_FILE.match(real) else real


def _judge(state: core._Active, op: str, path: Any, dir_fd: Any = None,
           follow: bool = True) -> Decision | None:
    """The decision for `op` on `path` (None: not a file, nothing to judge)."""
    try:
        real = _real(path, dir_fd, follow)
        return None if real is None else state.policy.filesystem.check(op, real)
    except OSError as exc:
        if exc.errno in (errno.EBADF, errno.ENOTDIR):  # as the call itself would fail
            raise
        return core._guard_error(op, exc)
    except Exception as exc:
        return core._guard_error(op, exc)


def _enforce(state: core._Active, decision: Decision | None) -> bool:
    """Enforce a decision; True if it was a deny (in audit mode it passes)."""
    if decision is None:
        return False
    if decision.action is _ALLOW:
        if state.trace is not None:
            core._enforce(state, decision)  # records it
        return False
    core._enforce(state, decision)
    return True


def _active() -> core._Active | None:
    state = core._current()
    if state is None or not state.judges_files:
        return None
    return state


def _judge_opened(state: core._Active, op: str, fd: int, opened: Any) -> None:
    """Judge what an open really opened; a denied file is closed unused.

    The real path comes from /proc/self/fd/N once per file: the decision for
    a file with one name is remembered by its identity (device, inode,
    ctime), and the cheaper fstat finds it again. A rename or a new hard link
    changes the ctime; a freed inode number reused within one ctime tick by a
    file another process creates is the remaining (theoretical) confusion.
    """
    try:
        st = _fstat(fd)
        key = (op, st.st_dev, st.st_ino, st.st_ctime_ns)
        # A file with several names is judged by the name it was opened by.
        decision = state.opened.get(key, _UNSEEN) if st.st_nlink == 1 else _UNSEEN
        if decision is _UNSEEN:
            target = _fd_target(fd)
            decision = None if target is None else state.policy.filesystem.check(op, target)
            if len(state.opened) > 4096:
                state.opened.clear()
            state.opened[key] = decision
        if decision is None:
            return
        if decision.action is _ALLOW:
            if state.trace is not None and op != "fs.write":  # a write was recorded before
                core._enforce(state, decision)  # records it
            return
    except Exception as exc:
        decision = core._guard_error(op, exc)
    if state.mode is Mode.ENFORCE:
        opened.close() if hasattr(opened, "close") else _close(opened)
    core._enforce(state, decision)


def _fd_grants(fd: int, op: str) -> bool:
    """Is `fd` already open for what `op` needs?"""
    try:
        access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError:
        return False
    return access == os.O_RDWR or access == (os.O_WRONLY if op == "fs.write" else os.O_RDONLY)


def _judge_failed_read(state: core._Active, op: str, path: Any, dir_fd: Any = None) -> None:
    """A read that failed (no such file, say) is judged by its path, so a denied
    place answers SecurityError whether or not the file exists."""
    _enforce(state, _judge(state, op, path, dir_fd))


# -- patches -------------------------------------------------------------------


def _guard_open(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """open(file, mode='r', buffering=-1, encoding=None, errors=None, newline=None,
    closefd=True, opener=None): `builtins.open` and `io.open`."""
    state = core._current()
    if state is None or not state.judges_files:
        return wrapped(*args, **kwargs)
    if args:
        file = args[0]
        if type(file) is not str:
            file = _exact(file, True)
            args = (file, *args[1:])
    elif "file" in kwargs:
        file = kwargs["file"] = _exact(kwargs["file"], True)
    else:
        return wrapped(*args, **kwargs)  # open's own TypeError
    mode = args[1] if len(args) > 1 else kwargs.get("mode", "r")
    if type(mode) is not str:
        if not isinstance(mode, str):
            return wrapped(*args, **kwargs)  # open raises its TypeError before opening
        mode = str.__str__(mode)
        if len(args) > 1:
            args = (file, mode, *args[2:])
        else:
            kwargs["mode"] = mode
    op = _OPEN_OPS.get(mode) or ("fs.write" if any(c in mode for c in "wax+") else "fs.read")
    if type(file) is int:
        # Wrapping an fd for what it already allows grants nothing os.read and
        # os.write on it do not (stdout redirected to a log outside, say).
        if not _fd_grants(file, op):
            _enforce(state, _judge(state, op, file))
        return core._call_judged("open", file, wrapped, args, kwargs)
    if op == "fs.write" or not _PROC_FD:  # without /proc, reads are judged before only
        if _enforce(state, _judge(state, op, file)) or not _PROC_FD:
            return core._call_judged("open", file, wrapped, args, kwargs)
    try:
        opened = core._call_judged("open", file, wrapped, args, kwargs)
    except OSError:
        _judge_failed_read(state, op, file)
        raise
    _judge_opened(state, op, opened.fileno(), opened)
    return opened


def _guard_os_open(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """os.open(path, flags, mode=0o777, *, dir_fd=None)."""
    state = _active()
    if state is None:
        return wrapped(*args, **kwargs)
    named = dict(zip(("path", "flags", "mode"), args), **kwargs)
    if "path" not in named or "flags" not in named:
        return wrapped(*args, **kwargs)  # os.open's own TypeError
    path, flags = _exact(named.pop("path"), False), operator.index(named.pop("flags"))
    dir_fd = named.get("dir_fd")
    if dir_fd is not None:
        dir_fd = named["dir_fd"] = operator.index(dir_fd)
    args, kwargs = (path, flags), named
    op = "fs.write" if flags & _WRITE_FLAGS else "fs.read"
    if op == "fs.write" or not _PROC_FD:
        if _enforce(state, _judge(state, op, path, dir_fd)) or not _PROC_FD:
            return core._call_judged("open", path, wrapped, args, kwargs)
    try:
        fd = core._call_judged("open", path, wrapped, args, kwargs)
    except OSError:
        _judge_failed_read(state, op, path, dir_fd)
        raise
    _judge_opened(state, op, fd, fd)
    return fd


# How each os function names its paths: (position, keyword, op, follow, dir_fd
# keyword). follow: True, False, or _UNLESS_SAID (unless follow_symlinks=False).
_UNLESS_SAID = None
_FUNCTIONS: dict[str, tuple[str | None, bool, tuple[tuple[int, str, str, Any, Any], ...]]] = {
    "remove": ("os.remove", False, ((0, "path", "fs.delete", False, "dir_fd"),)),
    "unlink": ("os.remove", False, ((0, "path", "fs.delete", False, "dir_fd"),)),
    "rmdir": ("os.rmdir", False, ((0, "path", "fs.delete", False, "dir_fd"),)),
    "mkdir": ("os.mkdir", False, ((0, "path", "fs.create", False, "dir_fd"),)),
    "mkfifo": (None, False, ((0, "path", "fs.create", False, "dir_fd"),)),
    "mknod": (None, False, ((0, "path", "fs.create", False, "dir_fd"),)),
    "rename": ("os.rename", False, ((0, "src", "fs.rename", False, "src_dir_fd"),
                                    (1, "dst", "fs.rename", False, "dst_dir_fd"))),
    "replace": ("os.rename", False, ((0, "src", "fs.rename", False, "src_dir_fd"),
                                     (1, "dst", "fs.rename", False, "dst_dir_fd"))),
    "link": ("os.link", False, ((0, "src", "fs.link", _UNLESS_SAID, "src_dir_fd"),
                                (1, "dst", "fs.link", False, "dst_dir_fd"))),
    "chmod": ("os.chmod", True, ((0, "path", "fs.metadata", _UNLESS_SAID, "dir_fd"),)),
    "lchmod": ("os.chmod", False, ((0, "path", "fs.metadata", False, None),)),
    "chown": ("os.chown", True, ((0, "path", "fs.metadata", _UNLESS_SAID, "dir_fd"),)),
    "lchown": ("os.chown", False, ((0, "path", "fs.metadata", False, None),)),
    "utime": ("os.utime", True, ((0, "path", "fs.metadata", _UNLESS_SAID, "dir_fd"),)),
    "setxattr": ("os.setxattr", True, ((0, "path", "fs.metadata", _UNLESS_SAID, None),)),
    "removexattr": ("os.removexattr", True, ((0, "path", "fs.metadata", _UNLESS_SAID, None),)),
    "truncate": ("os.truncate", True, ((0, "path", "fs.write", True, None),)),
    "listdir": ("os.listdir", True, ((0, "path", "fs.list", True, None),)),
    "scandir": ("os.scandir", True, ((0, "path", "fs.list", True, None),)),
}


def _guard_paths(event: str | None, allow_fd: bool,
                 params: tuple[tuple[int, str, str, Any, Any], ...]):
    """A guard for an os function that names one or two paths."""

    def guard(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        state = _active()
        if state is None:
            return wrapped(*args, **kwargs)
        args = list(args)
        follow_symlinks = True
        if "follow_symlinks" in kwargs:
            follow_symlinks = kwargs["follow_symlinks"] = bool(kwargs["follow_symlinks"])
        subject = None
        for position, keyword, op, follow, dir_fd_keyword in params:
            if position < len(args):
                path = args[position] = _exact(args[position], allow_fd)
            elif kwargs.get(keyword) is not None:
                path = kwargs[keyword] = _exact(kwargs[keyword], allow_fd)
            else:
                path = None  # listdir() and scandir(): the working directory
            dir_fd = kwargs.get(dir_fd_keyword) if dir_fd_keyword else None
            if dir_fd is not None:
                dir_fd = kwargs[dir_fd_keyword] = operator.index(dir_fd)
            if position == 0:
                subject = path
            _enforce(state, _judge(state, op, path, dir_fd,
                                   follow_symlinks if follow is None else follow))
        if event is None:  # mkfifo, mknod: no audit event to mark
            return wrapped(*args, **kwargs)
        return core._call_judged(event, subject, wrapped, args, kwargs)

    return guard


def _guard_symlink(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """os.symlink(src, dst, target_is_directory=False, *, dir_fd=None): judged
    where the link lands (a write) and where it points (a read)."""
    state = _active()
    if state is None or len(args) < 2:
        return wrapped(*args, **kwargs)
    src, dst = _exact(args[0], False), _exact(args[1], False)
    dir_fd = kwargs.get("dir_fd")
    if dir_fd is not None:
        dir_fd = kwargs["dir_fd"] = operator.index(dir_fd)
    _judge_symlink(state, src, dst, dir_fd)
    return core._call_judged("os.symlink", src, wrapped, (src, dst, *args[2:]), kwargs)


def _judge_symlink(state: core._Active, src: Any, dst: Any, dir_fd: Any) -> None:
    _enforce(state, _judge(state, "fs.symlink", dst, dir_fd, False))
    try:
        landing = _real(dst, dir_fd, False)
        text = _text(src)
        if landing is not None and not text.startswith("/"):
            text = os.path.join(os.path.dirname(landing), text)
    except Exception as exc:
        _enforce(state, core._guard_error("fs.symlink", exc))
        return
    _enforce(state, _judge(state, "fs.symlink-target", text))


def targets() -> list[tuple[Any, str, Any]]:
    found: list[tuple[Any, str, Any]] = [(builtins, "open", _guard_open), (io, "open", _guard_open)]
    for module in (os, posix):
        found.append((module, "open", _guard_os_open))
        if hasattr(module, "symlink"):
            found.append((module, "symlink", _guard_symlink))
        for name, (event, allow_fd, params) in _FUNCTIONS.items():
            if hasattr(module, name):
                found.append((module, name, _guard_paths(event, allow_fd, params)))
    return found


# -- the audit-hook backstop -------------------------------------------------------


def _event_path(value: Any) -> Any:
    """A path named in an audit event, as a value nothing can change any more."""
    if value is None or type(value) in (str, bytes, int):
        return value
    if isinstance(value, (str, bytes)):
        return _exact(value, False)
    if type(value) is os.DirEntry:
        return value.path
    kind = type(value)
    pathlib = sys.modules.get("pathlib")  # not imported: no such path can exist
    if pathlib is not None and kind in (pathlib.PurePosixPath, pathlib.PosixPath):
        return str(value)  # not a subclass: one of those could answer twice
    raise _Unpinned(kind.__name__)


def _event_dir_fd(value: Any) -> int | None:
    return None if type(value) is not int or value in (-1, _AT_FDCWD) else value


def _hook_open(state: core._Active, args: tuple) -> None:
    """open(path, mode, flags): `_io.open`, `io.FileIO`, `os.open`, `io.open_code`."""
    path, flags = args[0], args[2]
    token = _judged.get()  # core._is_judged inlined: every guarded open passes here
    if token is not None and token[0] == "open" and token[2] is path:
        _judged.set(None)
        return
    if not state.judges_files:
        return
    op = "fs.write" if type(flags) is not int or flags & _WRITE_FLAGS else "fs.read"
    if args[1] is None and isinstance(path, (str, bytes)) and not os.fsdecode(path).startswith("/"):
        # os.open's event leaves out dir_fd: where a relative path starts is unknown.
        core._enforce(state, core._unpinned(op, os.fsdecode(path),
                                            "which directory this relative path starts from"))
        return
    _judge_event(state, op, ((path, None, True),))


def _judge_event(state: core._Active, op: str, paths: tuple, strict: bool = True) -> None:
    """Judge each (path, dir_fd, follow) of an event; follow None: both ways.
    Not `strict` (the early shutil checks): a path that cannot be pinned is
    left to the calls below it."""
    for path, dir_fd, follow in paths:
        try:
            path = _event_path(path)
        except _Unpinned as exc:
            if strict:
                core._enforce(state, core._unpinned(op, f"a {exc} object", "which file this is"))
            continue
        for how in ((True, False) if follow is None else (follow,)):
            _enforce(state, _judge(state, op, path, _event_dir_fd(dir_fd), how))


def _hook(event: str, op: str, *paths: tuple[int, int | None, Any], op2: str | None = None):
    """A hook for an event naming paths at (index, dir_fd index, follow); `op2`
    is the op for the second path when it differs."""

    def check(state: core._Active, args: tuple) -> None:
        if not state.judges_files:
            return
        if event.startswith("os.") and core._is_judged(event, None, args[0]):
            return
        for n, (index, dir_fd_index, follow) in enumerate(paths):
            if index >= len(args) or (args[index] is None and n > 0):
                continue
            dir_fd = args[dir_fd_index] if dir_fd_index is not None and \
                dir_fd_index < len(args) else None
            _judge_event(state, op2 if n and op2 else op, ((args[index], dir_fd, follow),),
                         strict=event.startswith("os."))

    return check


def _hook_symlink(state: core._Active, args: tuple) -> None:
    """os.symlink(src, dst, dir_fd)."""
    if not state.judges_files or core._is_judged("os.symlink", None, args[0]):
        return
    try:
        src, dst = _event_path(args[0]), _event_path(args[1])
    except _Unpinned as exc:
        core._enforce(state, core._unpinned("fs.symlink", f"a {exc} object", "which file this is"))
        return
    _judge_symlink(state, src, dst, _event_dir_fd(args[2]))


def _hook_sqlite(state: core._Active, args: tuple) -> None:
    """sqlite3.connect(database): a database file is created and written. A
    `file:` name is judged as the URI's path too (with uri=True it is one)."""
    database = args[0] if args else None
    if not state.judges_files or database in (None, "", ":memory:", b"",
                                                             b":memory:"):
        return
    paths = [(database, None, True)]
    text = os.fsdecode(database) if isinstance(database, (str, bytes)) else ""
    if text.startswith("file:"):
        import urllib.parse

        uri = urllib.parse.urlsplit(text)
        if uri.path and not uri.path.startswith(":memory:"):
            paths.append((urllib.parse.unquote(uri.path), None, True))
    _judge_event(state, "fs.write", tuple(paths))


HOOKS = {
    "sqlite3.connect": _hook_sqlite,
    "open": _hook_open,
    "os.remove": _hook("os.remove", "fs.delete", (0, 1, False)),
    "os.rmdir": _hook("os.rmdir", "fs.delete", (0, 1, False)),
    "os.mkdir": _hook("os.mkdir", "fs.create", (0, 2, False)),
    "os.rename": _hook("os.rename", "fs.rename", (0, 2, False), (1, 3, False)),
    "os.link": _hook("os.link", "fs.link", (0, 2, None), (1, 3, False)),
    "os.symlink": _hook_symlink,
    "os.chmod": _hook("os.chmod", "fs.metadata", (0, 2, None)),
    "os.chown": _hook("os.chown", "fs.metadata", (0, 3, None)),
    "os.utime": _hook("os.utime", "fs.metadata", (0, 3, None)),
    "os.setxattr": _hook("os.setxattr", "fs.metadata", (0, None, None)),
    "os.removexattr": _hook("os.removexattr", "fs.metadata", (0, None, None)),
    "os.truncate": _hook("os.truncate", "fs.write", (0, None, True)),
    "os.listdir": _hook("os.listdir", "fs.list", (0, None, True)),
    "os.scandir": _hook("os.scandir", "fs.list", (0, None, True)),
    # shutil: early checks, so a tree operation aimed outside stops before its
    # first step; every step is still judged by the events above.
    "shutil.rmtree": _hook("shutil.rmtree", "fs.delete", (0, 1, False)),
    "shutil.move": _hook("shutil.move", "fs.rename", (0, None, False), (1, None, False)),
    "shutil.copyfile": _hook("shutil.copyfile", "fs.read", (0, None, True), (1, None, True),
                             op2="fs.write"),
    "shutil.copytree": _hook("shutil.copytree", "fs.read", (0, None, True), (1, None, True),
                             op2="fs.create"),
    "shutil.chown": _hook("shutil.chown", "fs.metadata", (0, None, True)),
    "shutil.unpack_archive": _hook("shutil.unpack_archive", "fs.read", (0, None, True),
                                   (1, None, True), op2="fs.create"),
    "shutil.make_archive": _hook("shutil.make_archive", "fs.create", (0, None, True)),
}

"""The trace: JSON Lines, one event per line, each line chained to the one
before it by SHA-256 (format in `trace.schema.json`, SPEC §7).

A line is written with one `os.write` on a descriptor failcore opened itself,
so the guard never sees the trace's own I/O and a crash leaves only whole
lines behind it. What varies between two runs of the same program (times,
the run id) is kept apart, under `"t"` and in `run_id`, so the rest can be
compared. Secrets are redacted before anything is written.
"""

from __future__ import annotations

import _thread
import atexit
import hashlib
import json
import os
import re
import sys
import time

from . import _originals
from ._types import Decision

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

FORMAT = 1
REDACTED = "[REDACTED]"

# Keys whose values are secrets, wherever they appear (arguments, results,
# headers, query strings): matched on whole words of the key, lower case, with
# camelCase and dashes made snake_case (`access_token`, `X-Api-Key`, `apiKey`;
# not `max_tokens` or `author`).
_SECRET_WORDS = re.compile(
    r"(?:^|_)(?:\w*(?:password|passwd|passphrase|secret)\w*|pass|pwd|\w*token|\w*api_?key|"
    r"auth|authorization|cookie|credentials?|private_key|session_?id|signature|sig|key|"
    r"access_key)(?:_|$)")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Secrets inside free text.
_SECRET_TEXT = [
    # URL userinfo: scheme://user:pass@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@"), rf"\g<1>{REDACTED}@"),
    # query or form parameters named like a secret: ?token=...&api_key=...
    (re.compile(r"(?i)([?&;](?:[\w.-]*(?:token|secret|passw|api[-_]?key|apikey|auth|"
                r"signature|sig|credential|session[-_]?id|key)[\w.-]*)=)[^&#\s\"']*"),
     rf"\g<1>{REDACTED}"),
    # Authorization: Bearer ..., Basic ...
    (re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\g<1> {REDACTED}"),
    # --password=..., --token ..., password: ..., PGPASSWORD=..., AWS_SECRET_ACCESS_KEY=...
    (re.compile(r"(?i)((?:--?|\b|_)(?:password|passwd|passphrase|secret|token|api[-_]?key|"
                r"apikey|access[-_]?key)[\w-]*(?:=|:\s*|\s+)[\"']?)(?!\[REDACTED\])"
                r"[^\s\"',;&]+"), rf"\g<1>{REDACTED}"),
    # environment assignments: PGPASSWORD=..., GITHUB_TOKEN=...
    (re.compile(r"\b([A-Z][A-Z0-9_]*(?:PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_KEY|"
                r"PRIVATE_KEY|CREDENTIALS?)[A-Z0-9_]*=)(?!\[REDACTED\])[^\s\"';&]+"),
     rf"\g<1>{REDACTED}"),
    # "password": "...", 'api_key': '...' (JSON, dict reprs)
    (re.compile(r"""(?i)(["'][\w-]*(?:passw|passphrase|secret|token|api[-_]?key|apikey|auth|"""
                r"""cookie|credential|private[-_]?key|session[-_]?id)[\w-]*["']\s*[:=,]\s*)"""
                r"""(?:"[^"]*"|'[^']*'|[^\s,}\]]+)"""), rf'\g<1>"{REDACTED}"'),
    # Cookie: a=b; c=d
    (re.compile(r"(?i)\b((?:set-)?cookie:\s*)[^\r\n]+"), rf"\g<1>{REDACTED}"),
    # well-known credential formats
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|"
                r"sk-[A-Za-z0-9_-]{20,}|[rsp]k_(?:live|test)_[A-Za-z0-9]{10,}|"
                r"hf_[A-Za-z0-9]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}|AKIA[0-9A-Z]{16}|"
                r"AIza[0-9A-Za-z_-]{35}|eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\."
                r"[A-Za-z0-9_-]+)"), REDACTED),
    (re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
                re.S), REDACTED),
]


# Cheap test first: most strings hold nothing any pattern above could match.
# (Substring tests on the lowered text: a case-insensitive alternation costs
# microseconds per line.)
_HINTS = ("@", "=", ":", "bearer", "basic", "token", "passw", "passphrase", "secret", "api",
          "key", "gh", "sk-", "k_live_", "k_test_", "hf_", "xox", "akia", "aiza", "eyj",
          "private", "access")


def redact_text(text: str) -> str:
    """`text` with the secrets failcore recognises in free text replaced."""
    if len(text) < 20 and text.isalnum():  # too short for a bare key, no separators
        return text
    lowered = text.lower()
    for hint in _HINTS:
        if hint in lowered:
            break
    else:
        return text
    original = text
    for pattern, replacement in _SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return original if text == original else text


class _Unrecordable(Exception):
    pass


def type_name(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


def recordable(value: Any, strict: bool) -> tuple[Any, bool]:
    """`value` as JSON with secrets redacted, and whether anything was redacted.

    `strict` (results): only JSON values themselves; anything else raises
    `_Unrecordable`, because replay must give back exactly what the tool
    returned. Not strict (arguments): never raises; tuples become lists, a
    path its text, and any other object a marker naming its type.
    """
    redacted: list[bool] = []
    try:
        return _walk(value, strict, redacted, 0), bool(redacted)
    except Exception as exc:  # also a value that breaks when looked at (__eq__, __fspath__)
        if not strict:
            return {"unrecordable": type_name(value)}, bool(redacted)
        if isinstance(exc, _Unrecordable):
            raise
        raise _Unrecordable(type_name(value)) from exc


_secret_keys: dict[str, bool] = {}  # key -> whether it names a secret (keys repeat)


def is_secret_key(key: str) -> bool:
    """Does `key` name a secret (see _SECRET_WORDS)?"""
    found = _secret_keys.get(key)
    if found is None:
        if len(_secret_keys) > 4096:
            _secret_keys.clear()
        words = _CAMEL.sub("_", key).lower().replace("-", "_").replace(".", "_")
        found = _secret_keys[key] = _SECRET_WORDS.search(words) is not None
    return found


def _secret_value(value: Any) -> bool:
    """Worth redacting: anything but nothing."""
    return value is not None and not (type(value) is str and value in ("", REDACTED))


def _secret_pair(item: Any) -> bool:
    """("Authorization", "...") in a header list, or ("--password", ...) in an argv."""
    return (len(item) == 2 and type(item[0]) is str
            and is_secret_key(item[0].lstrip("-")) and _secret_value(item[1]))


def _walk(item: Any, strict: bool, redacted: list[bool], depth: int) -> Any:
    kind = type(item)
    if item is None or kind is bool or kind is int:
        return item
    if kind is str:
        clean = redact_text(item)
        if clean is not item:
            redacted.append(True)
        return clean
    if kind is float:
        if item == item and item not in (float("inf"), float("-inf")):
            return item
        if strict:
            raise _Unrecordable(repr(item))
        return {"unrecordable": "builtins.float"}
    if depth > 64:
        raise _Unrecordable("nested too deep")
    if kind is dict:
        out = {}
        for key, sub in item.items():
            if type(key) is not str:
                if strict:
                    raise _Unrecordable(f"a {type_name(key)} key")
                if isinstance(key, (bytes, bytearray)):
                    key = bytes(key).decode("utf-8", "replace")
                elif type(key) in (int, float, bool):
                    key = repr(key)
                else:
                    key = f"{type_name(key)} key {len(out)}"
            if is_secret_key(key) and _secret_value(sub):
                redacted.append(True)
                out[key] = REDACTED
            else:
                out[key] = _walk(sub, strict, redacted, depth + 1)
        return out
    if kind is list or (kind is tuple and not strict):
        if _secret_pair(item):
            redacted.append(True)
            return [item[0], REDACTED]
        out_list = []
        secret_next = False
        for sub in item:
            if secret_next and _secret_value(sub):  # ["--password", "hunter2"]
                redacted.append(True)
                out_list.append(REDACTED)
            else:
                out_list.append(_walk(sub, strict, redacted, depth + 1))
            secret_next = type(sub) is str and sub.startswith("-") and "=" not in sub \
                and is_secret_key(sub.lstrip("-"))
        return out_list
    if strict:
        raise _Unrecordable(type_name(item))
    if isinstance(item, os.PathLike):
        return _walk(os.fsdecode(os.fspath(item)), strict, redacted, depth + 1)
    return {"unrecordable": type_name(item)}


def line_digest(line: bytes) -> str:
    """What the next line's `prev` holds: SHA-256 of this line, without its newline."""
    return hashlib.sha256(line).hexdigest()


_second: list = [None, ""]  # the last whole second formatted, and its text


def _wall() -> str:
    """Now, UTC, ISO 8601 with microseconds (the date part made once a second)."""
    now = time.time()
    whole = int(now)
    if whole != _second[0]:
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    return f"{_second[1]}.{int((now - whole) * 1e6):06d}Z"


def _line_encoder() -> Callable[[Any], str]:
    """Compact JSON, no NaN; one encoder for every line (json.dumps with options,
    and JSONEncoder.encode, build a new one per call)."""
    plain = json.JSONEncoder(separators=(",", ":"), allow_nan=False, check_circular=False)
    from json import encoder

    if encoder.c_make_encoder is None:
        return plain.encode
    make = encoder.c_make_encoder(None, plain.default, encoder.encode_basestring_ascii, None,
                                  ":", ",", False, False, False)
    return lambda value: "".join(make(value, 0))


_encode = _line_encoder()


class TraceWriter:
    """One trace file. Thread-safe; every event is flushed as one whole line.

    `run.start` is written when it is opened, `run.end` when it is closed
    (explicitly, or at interpreter exit).
    """

    def __init__(self, path: str, start: dict[str, Any],
                 start_t: dict[str, Any] | None = None) -> None:
        self.path = path
        # Reentrant: a signal handler or a finaliser the garbage collector runs
        # while a line is written may make an event of its own (see emit).
        self._lock = _thread.RLock()
        self._writing = False
        self._pending: list[tuple] = []
        self._seq = 0
        self._prev: str | None = None
        self._started = time.perf_counter()
        self._counts = {"calls": 0, "denied": 0, "errors": 0}
        self._next_call = 0
        self.users = 1  # a session and the global guard may share one file
        # Opening it is judged like any write (a trace named inside a tool call
        # is that tool's write); the lines after that are failcore's own.
        self._fd: int | None = _originals.os_open(
            path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        import uuid

        self.emit("run.start", {"format": FORMAT, "run_id": uuid.uuid4().hex, **start}, start_t)

    def new_call_id(self) -> str:
        with self._lock:
            self._next_call += 1
            return f"c{self._next_call}"

    def emit(self, event: str, fields: dict[str, Any], t: dict[str, Any] | None = None) -> None:
        """Write one event. A trace that cannot be written is reported once on
        stderr and closed; it never breaks the program it records. An event made
        while this thread is writing one (a signal handler, a finaliser run by
        the garbage collector) is written right after it."""
        with self._lock:
            if self._writing:
                self._pending.append((event, fields, t))
                return
            self._writing = True
            try:
                self._write(event, fields, t)
                while self._pending:
                    self._write(*self._pending.pop(0))
            finally:
                self._writing = False

    def _write(self, event: str, fields: dict[str, Any], t: dict[str, Any] | None) -> None:
        if self._fd is None:
            return
        try:
            line = _encode({"seq": self._seq, "event": event, "prev": self._prev, **fields,
                            "t": {"wall": _wall(), **(t or {})}}).encode()
        except Exception as exc:
            self._fail(exc)
            return
        # The chain moves on before the write: an interruption after it cannot
        # leave the next line pointing at the wrong one.
        self._prev, self._seq = line_digest(line), self._seq + 1
        if event == "tool.call":
            self._counts["calls"] += 1
        elif event == "tool.error":
            self._counts["errors"] += 1
        elif event == "guard.decision" and fields.get("outcome") != "allow":
            self._counts["denied"] += 1
        try:
            view = memoryview(line + b"\n")
            while view:
                view = view[os.write(self._fd, view):]
        except BaseException as exc:  # a line not (wholly) written ends the trace
            self._fail(exc)
            if not isinstance(exc, Exception):
                raise

    def _fail(self, exc: BaseException) -> None:
        print(f"failcore: the trace {self.path} cannot be written ({type(exc).__name__}: "
              f"{exc}); it is closed, incomplete", file=sys.stderr)
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def close(self, force: bool = False) -> None:
        """Write `run.end` and close the file, once its last user closes it (or
        at interpreter exit, `force`); idempotent."""
        with _registry_lock:
            self.users -= 1
            if self.users > 0 and not force:
                return
        if self._fd is None:
            return
        self.emit("run.end", dict(self._counts),
                  {"elapsed_ms": round((time.perf_counter() - self._started) * 1000, 3)})
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
        _open.pop(self.path, None)

    @property
    def closed(self) -> bool:
        return self._fd is None


# Open traces by real path: a session and the global guard naming one file share it.
_open: dict[str, TraceWriter] = {}
_registry_lock = _thread.allocate_lock()


def open_trace(path: str | os.PathLike[str], policy: Any, mode: str,
               replay: dict[str, str] | None = None) -> TraceWriter:
    """The writer for `path`, opened (and `run.start` written) if it is not open yet.
    `replay` names the recording a replay is served from; it goes under "t", with
    what differs between runs, so a replay's trace compares equal to its recording."""
    real = os.path.realpath(os.fspath(path))
    with _registry_lock:
        writer = _open.get(real)
        if writer is not None and not writer.closed:
            writer.users += 1
        else:
            from . import __version__

            start = {"failcore": __version__,
                     "python": ".".join(map(str, sys.version_info[:3])),
                     "policy": {"source": redact_text(policy.source), "digest": policy.digest},
                     "mode": mode, "argv": recordable(list(sys.argv), strict=False)[0]}
            writer = _open[real] = TraceWriter(real, start,
                                               {"replay": replay} if replay else None)
    return writer


def decision_fields(decision: Decision, outcome: str | None = None) -> dict[str, Any]:
    """A decision as the trace records it (target and reason redacted), with
    what happened (`outcome`) in a guard.decision event."""
    fields = {"op": decision.op, "target": redact_text(decision.target),
              "action": decision.action.value, "rule": decision.rule,
              "reason": redact_text(decision.reason)}
    if outcome is not None:
        fields["outcome"] = outcome
    return fields


def _silence_after_fork() -> None:
    """A forked child writes nothing to its parent's traces (nor ends them)."""
    global _registry_lock
    _registry_lock = _thread.allocate_lock()
    for writer in list(_open.values()):
        writer._fd = None
        writer._lock = _thread.RLock()  # another thread may have held it
    _open.clear()


os.register_at_fork(after_in_child=_silence_after_fork)


@atexit.register
def _close_all() -> None:
    for writer in list(_open.values()):
        writer.close(force=True)

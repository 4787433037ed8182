"""Sessions: tools called under a policy, recorded in a trace, replayable.

`Session.call` runs a tool with the call's scope (`_scope.Call`) set in a
context variable, which the guard reads; threads the tool starts, executor
jobs it submits and asyncio tasks it creates carry the scope along. Whatever
the guard denied during the call is raised from `call`, whatever the tool
did with the error.
"""

from __future__ import annotations

import _thread
import inspect
import json
import os
import sys
import time

from . import _guard as core
from . import _trace
from ._errors import ReplayMismatch, SecurityError, ToolError
from ._policy import Policy
from ._scope import Call
from ._tools import ToolMetadata
from ._types import Action, Decision

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

_DEFAULT_METADATA = ToolMetadata()


class _Tool:
    """A registered tool and what its signature accepts (worked out once)."""

    __slots__ = ("name", "fn", "metadata", "is_async", "accepted", "required", "any_keyword",
                 "declared")

    def __init__(self, name: str, fn: Callable[..., Any], metadata: ToolMetadata) -> None:
        self.name, self.fn, self.metadata = name, fn, metadata
        # What every tool.call event says about the tool.
        self.declared = {"side_effect": metadata.side_effect.names(),
                         "default_policy": metadata.default_policy.value}
        self.is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None))
        try:
            parameters = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):  # no signature to read: the call itself checks
            self.accepted, self.required, self.any_keyword = frozenset(), frozenset(), True
            return
        kinds = inspect.Parameter
        named = [p for p in parameters if p.kind in (kinds.POSITIONAL_OR_KEYWORD,
                                                     kinds.KEYWORD_ONLY)]
        self.accepted = frozenset(p.name for p in named)
        self.required = frozenset(p.name for p in named if p.default is kinds.empty) | \
            frozenset(p.name for p in parameters if p.kind is kinds.POSITIONAL_ONLY
                      and p.default is kinds.empty)
        self.any_keyword = any(p.kind is kinds.VAR_KEYWORD for p in parameters)

    def check_arguments(self, kwargs: dict[str, Any]) -> None:
        keys = kwargs.keys()
        unknown = () if self.any_keyword else keys - self.accepted
        missing = self.required - keys
        if unknown or missing:
            problems = []
            if unknown:
                problems.append(f"unknown argument{'s' * (len(unknown) > 1)} "
                                f"{', '.join(sorted(unknown))}")
            if missing:
                problems.append(f"missing argument{'s' * (len(missing) > 1)} "
                                f"{', '.join(sorted(missing))}")
            expected = ", ".join(sorted(self.accepted)) or "no arguments"
            raise ToolError(f"tool {self.name!r}: {'; '.join(problems)} (it takes "
                            f"{expected}, by keyword)")


class Session:
    """Tools called under a policy, each call recorded and replayable.

    `validator` (the seed's name) or `policy`: a `Policy`, a preset name, a
    TOML path or a mapping; neither means the `agent_safe` preset. It is in
    force only inside `call`/`acall`; where `install()` guards the process as
    well, both must allow. `trace`: a file to record the session in (else
    the global trace, if `install()` has one). `replay`: a trace to serve
    every call from, without running any tool. `approver(request) -> bool`
    decides undeclared side effects of tools whose default policy is ASK.
    """

    def __init__(self, validator: Policy | str | os.PathLike[str] | Any = None, *,
                 policy: Policy | str | os.PathLike[str] | Any = None,
                 trace: str | os.PathLike[str] | None = None,
                 replay: str | os.PathLike[str] | None = None,
                 approver: Callable[[Any], bool] | None = None) -> None:
        if validator is not None and policy is not None:
            raise TypeError("Session: give validator= or policy=, not both (they are one thing)")
        if approver is not None and not callable(approver):
            raise TypeError(f"Session: approver must be callable, got {type(approver).__name__}")
        spec = validator if validator is not None else policy
        self.policy = Policy.load(spec if spec is not None else "agent_safe")
        self.approver = approver
        self._tools: dict[str, _Tool] = {}
        self._replay = _Recording(os.fspath(replay)) if replay is not None else None
        self._trace = _trace.open_trace(trace, self.policy, "enforce",
                                        replay=self._replay and self._replay.source) \
            if trace is not None else None
        self._lock = _thread.allocate_lock()
        self._closed = False
        # FAILCORE_DISABLE=1 switches everything off: tools run unjudged.
        self._judged = not core._disabled()
        _carry_calls_into_threads()

    def __repr__(self) -> str:
        return f"<Session {self.policy.source} tools={sorted(self._tools)}>"

    # -- tools --------------------------------------------------------------

    def register(self, name: str, fn: Callable[..., Any],
                 metadata: ToolMetadata | None = None) -> None:
        """Make `fn` callable as `name`. Without `metadata`, the tool declares no
        side effects and blocks undeclared ones (`ToolMetadata()`)."""
        if not isinstance(name, str) or not name:
            raise ToolError(f"a tool name must be a non-empty str, got {name!r}")
        if not callable(fn):
            raise ToolError(f"tool {name!r}: {type(fn).__name__} is not callable")
        if metadata is None:
            metadata = _DEFAULT_METADATA
        elif not isinstance(metadata, ToolMetadata):
            raise ToolError(f"tool {name!r}: metadata must be a ToolMetadata, got "
                            f"{type(metadata).__name__}")
        with self._lock:
            if name in self._tools:
                raise ToolError(f"tool {name!r} is already registered in this session")
            self._tools[name] = _Tool(name, fn, metadata)

    def tool(self, fn: Callable[..., Any] | None = None, *, name: str | None = None,
             metadata: ToolMetadata | None = None) -> Any:
        """Decorator form of `register`: `@session.tool` or
        `@session.tool(name=..., metadata=...)`; the function is returned unchanged."""
        def register(function: Callable[..., Any]) -> Callable[..., Any]:
            self.register(name or function.__name__, function, metadata)
            return function

        return register(fn) if fn is not None else register

    @property
    def tools(self) -> dict[str, ToolMetadata]:
        """The registered tools and their metadata."""
        return {name: tool.metadata for name, tool in self._tools.items()}

    # -- calls ----------------------------------------------------------------

    def call(self, name: str, /, **kwargs: Any) -> Any:
        """Run tool `name` with `kwargs` under the session's policy; return what
        it returns. Raises `SecurityError` if the guard denied anything during
        the call (also when the tool caught it), the tool's own error otherwise."""
        tool = self._tool(name, kwargs)
        if tool.is_async:
            raise ToolError(f"tool {name!r} is async: use 'await session.acall(...)'")
        if self._replay is not None:
            return self._replayed(tool, kwargs)
        call, token, started = self._begin(tool, kwargs)
        try:
            result = tool.fn(**kwargs)
        except BaseException as exc:
            error = self._failed(call, token, exc, started)
            if error is exc:
                raise
            raise error from exc
        return self._finished(call, token, result, started)

    async def acall(self, name: str, /, **kwargs: Any) -> Any:
        """`call` for async code: an async tool is awaited, a sync one runs in a
        worker thread (which the call's policy follows)."""
        tool = self._tool(name, kwargs)
        if self._replay is not None:
            return self._replayed(tool, kwargs)
        call, token, started = self._begin(tool, kwargs)
        try:
            if tool.is_async:
                result = await tool.fn(**kwargs)
            else:
                import asyncio

                result = await asyncio.to_thread(tool.fn, **kwargs)
            if inspect.iscoroutine(result):  # an async function behind a sync wrapper
                result = await result
        except BaseException as exc:
            error = self._failed(call, token, exc, started)
            if error is exc:
                raise
            raise error from exc
        return self._finished(call, token, result, started)

    def _tool(self, name: str, kwargs: dict[str, Any]) -> _Tool:
        if self._closed:
            raise ToolError(f"this session is closed: tool {name!r} was not called")
        tool = self._tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self._tools)) or "none"
            raise ToolError(f"unknown tool {name!r} (registered: {known})")
        tool.check_arguments(kwargs)
        return tool

    def _current_trace(self) -> Any:
        if self._trace is not None:
            return self._trace
        state = core._state
        return state.trace if state is not None else None

    def _begin(self, tool: _Tool, kwargs: dict[str, Any]) -> tuple[Call, Any, float]:
        """The call made, recorded, and set in force (with the token that ends it)."""
        if not (core._engaged and core._sessions_used) and self._judged:
            core.engage_for_sessions()
        trace = self._current_trace()
        parent = core._call_scope.get()
        call = Call(self.policy if self._judged else None, tool.metadata, tool.name,
                    trace.new_call_id() if trace is not None else "", parent, trace,
                    self.approver)
        if trace is not None:
            _emit_call(trace, call, tool, kwargs, parent)
        return call, core._call_scope.set(call), time.perf_counter()

    def _failed(self, call: Call, token: Any, exc: BaseException,
                started: float) -> BaseException:
        """The call is over: what it raises is the denial, if there was one, else
        the tool's error."""
        core._call_scope.reset(token)
        error = exc
        denied = call.denied
        # The denial wins over the tool's error, and over its sys.exit(); not
        # over the user's Ctrl-C.
        if denied is not None and not isinstance(exc, KeyboardInterrupt) and not (
                isinstance(exc, SecurityError) and exc.decision == denied):
            error = SecurityError(denied)
        if call.trace is not None:
            _emit_error(call, error, started)
        return error

    def _finished(self, call: Call, token: Any, result: Any, started: float) -> Any:
        """The call is over: the tool's result, unless the guard denied something."""
        core._call_scope.reset(token)
        if call.denied is None and _runs_later(result):
            call.denied = Decision(Action.DENY, "tool.result", _trace.type_name(result),
                                   "tool.deferred",
                                   f"The tool {call.tool} returned a {_trace.type_name(result)}, "
                                   f"whose code would run after the call, outside its policy; "
                                   f"return its values instead.")
            getattr(result, "close", lambda: None)()
        if call.denied is not None:  # the tool swallowed the denial
            error = SecurityError(call.denied)
            if call.trace is not None:
                _emit_error(call, error, started)
            raise error
        if call.trace is not None:
            _emit_result(call.trace, call.trace_fields, result, started)
        return result

    # -- replay ---------------------------------------------------------------

    def _replayed(self, tool: _Tool, kwargs: dict[str, Any]) -> Any:
        """The recorded outcome of the next call, if it is this call; the tool never runs."""
        recorded = self._replay.next_call(tool.name, kwargs)
        trace = self._current_trace()
        if trace is not None:
            for event in recorded.events:
                fields = {k: v for k, v in event.items()
                          if k not in ("seq", "event", "prev", "t")}
                if "call_id" in fields:
                    fields["call_id"] = _renumbered(fields["call_id"], recorded, trace)
                if "parent_call_id" in fields:
                    fields["parent_call_id"] = _renumbered(fields["parent_call_id"], recorded,
                                                           trace)
                trace.emit(event["event"], fields, {k: v for k, v in event["t"].items()
                                                    if k != "wall"})
        return recorded.outcome()

    # -- lifetime -------------------------------------------------------------

    def close(self) -> None:
        """End the session: no more calls, and its trace ends (`run.end`; it also
        ends at interpreter exit). Idempotent."""
        if not self._closed:
            self._closed = True
            if self._trace is not None:
                self._trace.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def _renumbered(call_id: str, recorded: _RecordedCall, trace: Any) -> str:
    """Call ids in a replay's own trace continue its own numbering."""
    ids = recorded.new_ids
    if call_id not in ids:
        ids[call_id] = trace.new_call_id()
    return ids[call_id]


# -- trace events ----------------------------------------------------------------


def _emit_call(trace: Any, call: Call, tool: _Tool, kwargs: dict[str, Any],
               parent: Call | None) -> None:
    args, _ = _trace.recordable(kwargs, strict=False)
    fields = {**call.trace_fields, "args": args, **tool.declared}
    if parent is not None and parent.trace is trace:
        fields["parent_call_id"] = parent.call_id
    trace.emit("tool.call", fields)


def _emit_result(trace: Any, call_fields: dict[str, Any], result: Any, started: float) -> None:
    fields = dict(call_fields)
    try:
        fields["result"], redacted = _trace.recordable(result, strict=True)
        if redacted:
            fields["redacted"] = True
    except _trace._Unrecordable:
        fields["unrecordable"] = _trace.type_name(result)
    trace.emit("tool.result", fields, _duration(started))


def _runs_later(result: Any) -> bool:
    """A generator, coroutine or async generator: code the caller runs later."""
    return inspect.isgenerator(result) or inspect.iscoroutine(result) or \
        inspect.isasyncgen(result)


def _message(error: BaseException) -> str:
    try:
        return _trace.redact_text(str(error))
    except Exception:  # an exception whose __str__ breaks
        return f"<{_trace.type_name(error)}: its message cannot be read>"


def _emit_error(call: Call, error: BaseException, started: float) -> None:
    described: dict[str, Any] = {"type": _trace.type_name(error), "message": _message(error)}
    try:  # what rebuilds it on replay: its arguments (and an OSError's file names)
        args, redacted = _trace.recordable(list(error.args), strict=True)
        if not redacted:
            described["args"] = args
            for name in ("filename", "filename2"):
                if isinstance(error, OSError) and getattr(error, name, None) is not None:
                    described[name] = _trace.recordable(getattr(error, name), strict=True)[0]
    except Exception:
        pass
    if isinstance(error, SecurityError):
        described["decision"] = _trace.decision_fields(error.decision)
    call.trace.emit("tool.error", {**call.trace_fields, "error": described},
                    _duration(started))


def _duration(started: float) -> dict[str, float]:
    return {"duration_ms": round((time.perf_counter() - started) * 1000, 3)}


# -- replay ----------------------------------------------------------------------


class _RecordedCall:
    """One top-level call in a recording: its events, and how it ended."""

    def __init__(self, call: dict[str, Any]) -> None:
        self.call = call
        self.events: list[dict[str, Any]] = [call]
        self.end: dict[str, Any] | None = None
        self.new_ids: dict[str, str] = {}

    def outcome(self) -> Any:
        """The recorded result, or the recorded error raised."""
        end, name = self.end, self.call["tool"]
        where = f"call {self.call['call_id']} ({name})"
        if end is None:
            raise ReplayMismatch(f"{where} has no recorded result or error (the recorded "
                                 f"run ended during it)")
        if end["event"] == "tool.error":
            raise _rebuilt_error(end["error"], where)
        if "unrecordable" in end:
            raise ReplayMismatch(f"{where} returned a {end['unrecordable']}, which the trace "
                                 f"cannot hold; replay cannot give it back")
        if end.get("redacted"):
            raise ReplayMismatch(f"{where} returned secrets, which the trace does not keep; "
                                 f"replay cannot give the result back")
        return json.loads(json.dumps(end["result"]))  # a fresh copy each time


def _rebuilt_error(error: dict[str, Any], where: str) -> BaseException:
    """The recorded exception, as its own class when that class is loaded and
    can be built from the message; a ReplayMismatch otherwise."""
    if "decision" in error:
        d = error["decision"]
        return SecurityError(Decision(Action(d["action"]), d["op"], d["target"], d["rule"],
                                      d["reason"]))
    module_name, _, qualname = error["type"].rpartition(".")
    found: Any = sys.modules.get(module_name)
    for part in qualname.split("."):
        found = getattr(found, part, None)
    if isinstance(found, type) and issubclass(found, Exception):
        try:
            if "args" not in error:
                return found(error["message"])
            args = list(error["args"])
            if issubclass(found, OSError) and len(args) == 2 and "filename" in error:
                args += [error["filename"], *([0, error["filename2"]]
                                              if "filename2" in error else [])]
            return found(*args)
        except Exception:
            pass
    return ReplayMismatch(f"{where} raised {error['type']}: {error['message']} (replay "
                          f"cannot rebuild that exception class)")


class _Recording:
    """A trace to replay: its top-level calls, in order, each served once."""

    def __init__(self, path: str) -> None:
        self.path = path
        from . import _trace_read

        try:
            events = _trace_read.read(path)
        except (OSError, ValueError) as exc:
            raise ReplayMismatch(f"{path}: cannot replay it: {exc}") from None
        problems = _trace_read.verify(events)
        if problems:
            raise ReplayMismatch(f"{path}: cannot replay a trace that fails verification: "
                                 f"{problems[0]}")
        # What a replay's own trace says it was served from.
        self.source = {"file": os.path.basename(path), "run_id": events[0].get("run_id", "")}
        self.calls: list[_RecordedCall] = []
        parents = {e["call_id"]: e.get("parent_call_id") for e in events
                   if e["event"] == "tool.call" and "call_id" in e}
        by_id: dict[str, _RecordedCall] = {}
        for event in events:
            call_id = event.get("call_id")
            if call_id is None:
                continue
            if event["event"] == "tool.call" and parents.get(call_id) is None:
                by_id[call_id] = recorded = _RecordedCall(event)
                self.calls.append(recorded)
                continue
            top, seen = call_id, {call_id}
            while parents.get(top) is not None:  # a nested call belongs to its top call
                top = parents[top]
                if top in seen:
                    raise ReplayMismatch(f"{path}: call {call_id} is its own parent")
                seen.add(top)
            owner = by_id.get(top)
            if owner is None:
                continue
            owner.events.append(event)
            if event["event"] in ("tool.result", "tool.error") and call_id == top:
                owner.end = event
        self._next = 0
        self._lock = _thread.allocate_lock()

    def next_call(self, tool: str, kwargs: dict[str, Any]) -> _RecordedCall:
        args, _ = _trace.recordable(kwargs, strict=False)
        with self._lock:
            index = self._next
            if index >= len(self.calls):
                raise ReplayMismatch(f"{self.path}: call {index + 1} ({tool}) was not "
                                     f"recorded: the recording has {len(self.calls)} calls")
            recorded = self.calls[index]
            if recorded.call["tool"] != tool or _canonical(recorded.call["args"]) != \
                    _canonical(args):
                raise ReplayMismatch(
                    f"{self.path}: call {index + 1} does not match the recording: recorded "
                    f"{_shown(recorded.call['tool'], recorded.call['args'])}, called "
                    f"{_shown(tool, args)}")
            self._next += 1
        return recorded


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _shown(tool: str, args: dict[str, Any]) -> str:
    text = ", ".join(f"{k}={json.dumps(v)}" for k, v in args.items())
    return f"{tool}({text[:300]})"


# -- the call's scope in threads ---------------------------------------------------

_threads_carry_calls = False


def _carry_calls_into_threads() -> None:
    """Threads started and executor jobs submitted inside a call run in it.
    (Threads do not copy the context they are started from; asyncio tasks do.)"""
    global _threads_carry_calls
    if _threads_carry_calls:
        return
    import threading
    from concurrent.futures import thread as futures_thread

    wrapper = core._function_wrapper()
    threading.Thread.start = wrapper(threading.Thread.start, _start_in_call)
    executor = futures_thread.ThreadPoolExecutor
    executor.submit = wrapper(executor.submit, _submit_in_call)
    future = futures_thread._base.Future
    future.add_done_callback = wrapper(future.add_done_callback, _callback_in_call)
    _threads_carry_calls = True


def _start_in_call(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    call = core._call_scope.get()
    if call is not None:
        instance.run = _in_call(call, instance.run)
    return wrapped(*args, **kwargs)


def _in_call(call: Call, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, run in `call` whichever thread runs it."""
    def in_call(*fn_args: Any, **fn_kwargs: Any) -> Any:
        token = core._call_scope.set(call)
        try:
            return fn(*fn_args, **fn_kwargs)
        finally:
            core._call_scope.reset(token)

    return in_call


def _submit_in_call(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """The job runs in the call; a worker thread the pool starts for it is the
    pool's, and serves later jobs outside the call."""
    call = core._call_scope.get()
    if call is None or not args:
        return wrapped(*args, **kwargs)
    token = core._call_scope.set(None)
    try:
        return wrapped(_in_call(call, args[0]), *args[1:], **kwargs)
    finally:
        core._call_scope.reset(token)


def _callback_in_call(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """A future's done-callback added in a call runs in it (the pool's thread
    runs it after the job's own wrapper has returned)."""
    call = core._call_scope.get()
    if call is not None and args:
        args = (_in_call(call, args[0]), *args[1:])
    return wrapped(*args, **kwargs)

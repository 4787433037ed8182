"""Interception: the patches on `socket`, and the audit-hook backstop behind them.

The wrappers take an exact copy of what a call names (str, bytes, int and
tuple, never a subclass that could answer differently twice), ask the
installed policy, and either raise `SecurityError` before the original runs
or call the original with that same copy. A hostname is resolved once, here,
and the judged number is what gets connected; an AF_UNIX path is pinned to
the inode that was judged. The audit hook sees what the patches cannot
(`_socket`, references captured before `install()`, `importlib.reload`);
what it cannot pin down there, it denies.
"""

from __future__ import annotations

import _socket
import _thread
import operator
import os
import sys
from collections import OrderedDict
from contextvars import ContextVar
from functools import lru_cache

from . import _addresses as addr
from . import _originals
from ._errors import PolicyError, SecurityError
from ._log import log_decision
from ._policy import Policy, split_target
from ._types import Action, Decision, Mode

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at interpreter start-up
    from typing import Any, Callable

_INET_FAMILIES = (_socket.AF_INET, _socket.AF_INET6)
_AF_UNIX = getattr(_socket, "AF_UNIX", None)
# The C-level members: a subclass can override the `family` and `type`
# properties to lie, and the properties rebuild an enum on every read.
_family_of = _socket.socket.__dict__["family"].__get__
_type_of = _socket.socket.__dict__["type"].__get__
_CONNECTING = ("net.connect", "net.send")


class _Active:
    """What is in force: read once per intercepted call, replaced whole."""

    __slots__ = ("policy", "mode", "decided", "opened", "child_env", "trace", "call",
                 "exec_subject", "judges_files", "judges_launches")

    def __init__(self, policy: Policy, mode: Mode, trace: Any = None) -> None:
        self.policy, self.mode = policy, mode
        # Which areas are intercepted: what the policy restricts, and everything
        # when there is a trace (it records every decision, allows included).
        self.judges_files = trace is not None or policy.filesystem.restricts
        self.judges_launches = trace is not None or policy.process.restricts
        # (op, family, exact address) -> (names version, decision): the hot path
        # for repeated connects to the same literal address.
        self.decided: dict[tuple, tuple[int, Decision]] = {}
        # (op, st_dev, st_ino, st_ctime_ns) of an opened file -> its decision
        # (None: not a file on disk); see _fs_guard._judge_opened.
        self.opened: dict[tuple, Decision | None] = {}
        # FAILCORE_* for children, made on the first launch (see _children).
        self.child_env: dict[str, str] | None = None
        self.trace = trace  # the TraceWriter decisions are recorded in, if any
        self.call: Any = None  # inside a tool call: its _scope.Call
        # (decision, argv, shell) of the last launch judged, for the trace.
        self.exec_subject: tuple | None = None


# Per thread, asyncio task and greenlet alike (contextvars follow all three).
# (audit event, socket or None, object): the one call a patch judged and is running.
_judged: ContextVar[tuple | None] = ContextVar("failcore_judged", default=None)
# The hostname create_connection was given, and the addresses it resolved to:
# only those addresses are reached "through" that name.
_connect_host: ContextVar[tuple[str, set] | None] = ContextVar("failcore_connect_host",
                                                              default=None)


# The tool call running in this thread or task (a _scope.Call), if any.
_call_scope: ContextVar[Any] = ContextVar("failcore_call", default=None)


class _Reporting(_thread._local):
    """Set while failcore logs, per thread: copied contexts (tasks a log handler
    schedules) must not inherit it, or their denies would go unlogged."""

    active = False


_reporting = _Reporting()

_state: _Active | None = None  # what install() put in force, process-wide
_engaged = False  # patches and hooks in place (install(), or a session's call)
# A session has made a call: sends on open connections are judged inside calls.
_sessions_used = False
_lock = _thread.RLock()
_patches: list[tuple[Any, str, Any, bool, Any]] = []
_hook_added = False

# Addresses this process resolved, and the names they were resolved from:
# hostname rules apply to them at connect time.
_resolved: OrderedDict[tuple[int, int], tuple[str, ...]] = OrderedDict()
_RESOLVED_MAX = 4096
_names_version = 0  # bumped whenever an address gains a name: remembered decisions expire


def _current() -> _Active | None:
    """The state in force for this thread or task: a tool call's, or the global one."""
    call = _call_scope.get()
    return _state if call is None else call.state(_state)


def _remember(name: str, ips: list[tuple[int, int]]) -> None:
    global _names_version
    with _lock:
        for ip in ips:
            names = _resolved.pop(ip, ())
            if name not in names:
                names = (*names, name)
                _names_version += 1
            _resolved[ip] = names
        while len(_resolved) > _RESOLVED_MAX:
            _resolved.popitem(last=False)


def _names_for(ip: tuple[int, int]) -> tuple[str, ...]:
    context = _connect_host.get()
    if context is not None and ip in context[1]:
        return (context[0],)
    return _resolved.get(ip, ())


def _call_judged(event: str, subject: Any, wrapped: Any, args: Any,
                 kwargs: Any = None) -> Any:
    """Run `wrapped(*args, **kwargs)` with its audit event `event` naming `subject`
    marked as the one a patch judged (the hook skips it, once)."""
    token = _judged.set((event, None, subject))
    try:
        return wrapped(*args, **(kwargs or {}))
    finally:
        _judged.reset(token)


def _resolve(host: str, *args: Any) -> list:
    """failcore's own lookup: the C resolver, its audit event skipped exactly once."""
    return _call_judged("socket.getaddrinfo", host, _socket.getaddrinfo, (host, *args))


# -- verdicts ----------------------------------------------------------------


def _report(state: _Active, decision: Decision) -> None:
    """Log and record a deny (a would-deny in audit mode). Calls a log handler
    makes are still judged, but their own denies are not reported (no recursion)."""
    if _reporting.active:
        return
    _reporting.active = True
    try:
        outcome = "deny" if state.mode is Mode.ENFORCE else "would-deny"
        log_decision(decision, outcome, state.mode.value)
        if state.trace is not None:
            _record(state, decision, outcome)
    finally:
        _reporting.active = False


def _enforce(state: _Active, decision: Decision) -> None:
    """Report a deny, and raise it in enforce mode. An allow is only recorded,
    when there is a trace."""
    if decision.action is Action.ALLOW:
        if state.trace is not None and not _reporting.active:
            _record(state, decision, "allow")
        return
    _report(state, decision)
    if state.mode is Mode.ENFORCE:
        if state.call is not None:
            from ._scope import by_import_system

            if not by_import_system():  # the import system copes with its own denials
                state.call.deny(decision)
        raise SecurityError(decision)


def _record(state: _Active, decision: Decision, outcome: str) -> None:
    """A `guard.decision` event. The import system's own reads and bytecode
    writes are left out: they differ between a first and a second run."""
    from . import _scope, _trace

    try:
        if _scope.by_import_system():
            return
        call = state.call
        fields = dict(call.trace_fields) if call is not None else {}
        fields.update(_trace.decision_fields(decision, outcome))
        if decision.op.startswith("net.") and not decision.rule.startswith(
                ("network.unix", "network.family")):
            address = split_target(decision.target)
            ip = addr.parse_ip(address[0]) if address is not None else None
            names = _names_for(ip) if ip is not None else ()
            if names:
                fields["names"] = list(names)
        subject = state.exec_subject
        if subject is not None and subject[0] is decision:
            fields["argv"] = _trace.recordable(list(subject[1]), strict=False)[0]
            fields["shell"] = subject[2]
        if decision.rule in ("tool.approved", "tool.undeclared") and call is not None \
                and call.metadata.default_policy.value == "ask":
            fields["approved"] = decision.action is Action.ALLOW
        state.trace.emit("guard.decision", fields)
    except Exception:  # tracing never changes the verdict
        pass


def _guard_error(op: str, exc: BaseException) -> Decision:
    return Decision(Action.DENY, op, "(unknown)", "guard.error",
                    f"failcore could not check this call ({type(exc).__name__}: {exc}), "
                    f"so it was blocked.")


def _unpinned(op: str, target: str, why: str) -> Decision:
    return Decision(Action.DENY, op, target, "guard.unpinned",
                    f"failcore cannot tell {why} on this path (a low-level module such as "
                    f"_socket or posix, a reference captured before install() or a reloaded "
                    f"module), so the call was blocked.")


# -- exact copies of what a call names ---------------------------------------------


def _exact_host(host: Any) -> str | bytes | None:
    """A host as the C code reads it: exact str or bytes (None stays None)."""
    if host is None or type(host) in (str, bytes):
        return host
    if isinstance(host, str):
        return str.__str__(host)
    if isinstance(host, (bytes, bytearray)):
        return bytes(host)
    raise TypeError(f"a host must be str or bytes, not {type(host).__name__}")


def _host_text(host: str | bytes) -> str:
    """Text to judge; undecodable bytes stay visible (and fail hostname checks)."""
    return host if type(host) is str else host.decode("ascii", "surrogateescape")


def _exact_port(port: Any) -> Any:
    """A getaddrinfo port: None, an exact int, or an exact str/bytes service name."""
    if port is None or type(port) in (int, str, bytes):
        return port
    if isinstance(port, (str, bytes)):
        return _exact_host(port)
    return operator.index(port)


def _exact_inet(address: Any, op: str) -> tuple:
    """(host, port[, flowinfo, scope_id]) rebuilt from exact str and ints."""
    if not isinstance(address, tuple) or not 2 <= len(address) <= 4:
        raise TypeError(f"failcore: {op} needs a (host, port) tuple, got {address!r:.80}")
    host, port, *rest = tuple.__getitem__(address, slice(None))
    host = _exact_host(host)
    return (_host_text(host), operator.index(port), *map(operator.index, rest))


def _is_exact_inet(address: Any) -> bool:
    if type(address) is not tuple:
        return False
    if len(address) == 2:  # the common case, checked without a loop
        return type(address[0]) is str and type(address[1]) is int
    return (2 < len(address) <= 4 and type(address[0]) in (str, bytes)
            and all(type(x) is int for x in address[1:]))


def _exact_path(address: Any) -> str | bytes:
    """An AF_UNIX address as the C code reads it: a str, or a buffer's bytes."""
    if type(address) in (str, bytes):
        return address
    if isinstance(address, str):
        return str.__str__(address)
    return bytes(memoryview(address))  # TypeError for anything that is not a buffer


@lru_cache(maxsize=4096)
def _strict_ip(host: str) -> tuple[int, int] | None:
    """An address the C socket code takes literally, without resolving it."""
    try:
        if ":" in host:
            return addr.parse_ip(host)  # zone ids are resolved locally, never via DNS
        _socket.inet_pton(_socket.AF_INET, host)
    except OSError:
        return None
    return addr.parse_ip(host)


def _numeric_ip(host: str, family: int) -> tuple[int, int] | None:
    """What the C library reads a numeric spelling (`127.1`, `0x7f.1`) as; None for a name."""
    try:
        infos = _resolve(host, None, family, 0, 0, _socket.AI_NUMERICHOST)
    except (OSError, UnicodeError):
        return None
    return addr.parse_ip(infos[0][4][0]) if infos else None


# -- judging an address --------------------------------------------------------


def _judge(state: _Active, sock: Any, address: Any, op: str,
           pin: bool) -> tuple[Decision | None, Any, Any]:
    """The decision for `address` on `sock`, the address to really use, and a pin
    to check after the call (or None).

    With `pin` (the patches), a hostname is resolved here and replaced by the
    judged number, and an AF_UNIX path by `/proc/self/fd/N` of the judged
    inode. Without it (the audit hook, after the C code has already read the
    address), what cannot be pinned is denied. `None` means: nothing to judge.
    """
    policy = state.policy
    family = _family_of(sock)
    if family in _INET_FAMILIES:
        if op == "net.bind":  # listening on an IP reaches nobody; naming a host is a lookup
            host = address[0] if isinstance(address, tuple) and address else None
            text = _host_text(host) if type(host) in (str, bytes) else ""
            if text not in ("", "<broadcast>") and addr.parse_ip(text) is None:
                return policy.check_resolve(text), address, None
            return None, address, None
        if _type_of(sock) == _socket.SOCK_RAW:
            return policy.check_family(family, raw=True, op=op), address, None
        exact = _is_exact_inet(address)  # nothing in it can answer differently later
        remembered = exact and _connect_host.get() is None
        if remembered:
            hit = state.decided.get((op, family, address))
            if hit is not None and hit[0] == _names_version:
                return hit[1], address, None
        if not exact:
            if not pin:
                return _unpinned(op, repr(type(address)), "what this address says"), \
                    address, None
            address = _exact_inet(address, op)
        host = address[0] if type(address[0]) is str else _host_text(address[0])
        port = address[1]
        if host in ("", "<broadcast>"):
            ip = (addr.V4, 0xFFFFFFFF) if host else (
                (addr.V4, 0) if family == _socket.AF_INET else (addr.V6, 0))
        else:
            ip = _strict_ip(host)
            if ip is None and not pin:
                ip = _numeric_ip(host, family)
        if ip is not None:
            version = _names_version
            decision = policy.check_ip(ip, port, _names_for(ip), op=op)
            if remembered:
                if len(state.decided) > 4096:
                    state.decided.clear()
                state.decided[(op, family, address)] = (version, decision)
            return decision, address, None
        resolve = policy.check_resolve(host)
        if not resolve.allowed or not pin:
            return resolve if not resolve.allowed else _unpinned(
                op, f"{host}:{port}", f"which address {host} resolved to"), address, None
        decision, address = _judge_hostname(policy, sock, host, port, address, op)
        return decision, address, None
    if family == _AF_UNIX:
        if pin:
            path = _exact_path(address)
        elif type(address) in (str, bytes):
            path = address
        else:
            return _unpinned(op, repr(type(address)), "which path this address names"), \
                address, None
        abstract = path[:1] in ("\0", b"\0")
        if policy.network.unix != "deny-system" or abstract:
            return policy.check_unix(path, op=op), path, None
        if op not in _CONNECTING:  # bind: the file does not exist yet
            return policy.check_unix(os.path.realpath(path), op=op), path, None
        if not pin:
            return _unpinned(op, os.fsdecode(path), "which socket this path leads to"), path, None
        return _pin_unix(policy, path, op)
    return policy.check_family(family, op=op), address, None


def _pin_unix(policy: Policy, path: str | bytes, op: str) -> tuple[Decision, Any, Any]:
    """Judge the socket inode `path` leads to now, and connect to that inode.

    A symlink swapped between the check and the connect cannot redirect it; a
    hard link cannot give a system socket an innocent name. Errors opening the
    path are the caller's, as connect would raise them. Returns the pin
    `(fd, st_dev, st_ino)`, checked again after the call.
    """
    # A socket, judged by the network rules, not as a file.
    fd = _call_judged("open", path, _originals.os_open, (path, os.O_PATH | os.O_CLOEXEC))
    pinned = f"/proc/self/fd/{fd}"
    try:
        real = os.readlink(pinned)
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return Decision(Action.DENY, op, os.fsdecode(path), "network.unix.unpinnable",
                        "/proc/self/fd is not available, so failcore cannot tell which socket "
                        "this path leads to; it was blocked."), path, None
    pin = (fd, st.st_dev, st.st_ino)
    agent = policy.network.agent_socket
    same_as_agent = False
    if agent:
        try:
            agent_st = os.stat(agent)
            same_as_agent = (agent_st.st_dev, agent_st.st_ino) == pin[1:]
        except OSError:
            pass
    if same_as_agent or st.st_nlink > 1:
        why = "the SSH agent's socket" if same_as_agent else "a socket with several names"
        return Decision(Action.DENY, op, real, "network.unix.system",
                        f"Access to {real} is blocked: it is {why}, which may be a system "
                        f"socket under another name."), pinned, pin
    return policy.check_unix(real, op=op), pinned, pin


def _check_pin(instance: Any, pin: Any, op: str) -> None:
    """After the call: the pinned fd must still be the inode that was judged."""
    try:
        st = os.fstat(pin[0])
        swapped = (st.st_dev, st.st_ino) != pin[1:]
    finally:
        os.close(pin[0])
    if swapped:  # caller code dup2()ed something else onto the pin mid-call
        try:
            _socket.socket.shutdown(instance, _socket.SHUT_RDWR)
        except OSError:
            pass
        raise SecurityError(Decision(Action.DENY, op, f"fd {pin[0]}", "guard.unpinned",
                                     "The socket path was swapped during the call; the "
                                     "connection was shut down."))


def _judge_hostname(policy: Policy, sock: Any, host: str, port: int, address: tuple,
                    op: str) -> tuple[Decision, tuple]:
    """Resolve `host` once; return the first allowed address, or the first deny."""
    name = addr.normalise_hostname(host)
    infos = _resolve(host, port, _family_of(sock), _type_of(sock))
    ips = [addr.parse_ip(info[4][0]) for info in infos]
    _remember(name, [ip for ip in ips if ip is not None])
    first_denied: Decision | None = None
    for info, ip in zip(infos, ips):
        if ip is None:
            continue
        decision = policy.check_ip(ip, port, (name,), op=op)
        if decision.allowed:
            return decision, (info[4][0], *address[1:])
        first_denied = first_denied or decision
    return first_denied or Decision(
        Action.DENY, op, f"{name}:{port}", "network.invalid",
        f"{name} resolved to no address failcore could judge; it was blocked."), address


# -- socket method wrappers ----------------------------------------------------


def _guarded_call(op: str, event: str, locate: Callable[[tuple], int | None],
                  exact_args: Callable[[tuple], tuple] = lambda args: args,
                  returns_errno: bool = False) -> Callable[..., Any]:
    """A wrapper for a socket method that raises audit `event`: `locate(args)`
    says where the address is, `exact_args` makes the other arguments exact."""

    def guard(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        state = _current()
        if state is None or kwargs or instance is None:
            return wrapped(*args, **kwargs)
        index = locate(args)
        if index is None or args[index] is None:  # malformed, or sendmsg on a connected socket
            return wrapped(*args)
        if len(args) > 1:
            args = exact_args(args)  # caller code runs now, before the check and the pin
        pin = None
        try:
            decision, address, pin = _judge(state, instance, args[index], op, True)
        except OSError as exc:
            if returns_errno and exc.errno and not isinstance(exc, _socket.gaierror):
                return exc.errno  # connect_ex reports, as it would have
            raise  # the error the real call would give
        except (TypeError, ValueError):
            raise  # a bad address
        except Exception as exc:
            decision, address = _guard_error(op, exc), args[index]
        try:
            if decision is not None and (decision.action is not Action.ALLOW
                                         or state.trace is not None):
                _enforce(state, decision)  # a deny; an allow only to record it
            args = (address,) if len(args) == 1 else (*args[:index], address, *args[index + 1:])
            token = _judged.set((event, instance, address))
            try:
                return wrapped(*args)
            finally:
                _judged.reset(token)
        finally:
            if pin is not None:
                _check_pin(instance, pin, op)

    guard.__name__ = f"guard_{op.replace('.', '_')}"
    return guard


def _guard_send(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """send/sendall inside a tool call, on a connection made before it (a
    keep-alive pool shared by tools): judged once per call and socket, by the
    address it is connected to, under the call's policy."""
    call = _call_scope.get()
    if call is None or instance is None or id(instance) in call.sent:
        return wrapped(*args, **kwargs)
    state = call.state(_state)
    if state is not None and _family_of(instance) in _INET_FAMILIES:
        try:
            peer = _socket.socket.getpeername(instance)
        except OSError:
            peer = None  # not connected: the send fails as it would have
        if peer is not None:
            try:
                decision = _judge(state, instance, peer, "net.send", False)[0]
            except Exception as exc:
                decision = _guard_error("net.send", exc)
            if decision is not None and decision.action is not Action.ALLOW:
                _enforce(state, decision)
    call.sent.add(id(instance))
    return wrapped(*args, **kwargs)


def _at_0(args: tuple) -> int | None:
    return 0 if len(args) == 1 else None


def _sendto_address(args: tuple) -> int | None:
    return len(args) - 1 if len(args) in (2, 3) else None  # sendto(data[, flags], address)


def _sendto_exact(args: tuple) -> tuple:
    data = memoryview(args[0])  # runs any __buffer__ now, before the check
    return (data, operator.index(args[1]), args[2]) if len(args) == 3 else (data, args[1])


def _sendmsg_address(args: tuple) -> int | None:
    return 3 if len(args) >= 4 else None  # sendmsg(buffers, ancdata, flags, address)


def _sendmsg_exact(args: tuple) -> tuple:
    buffers = [memoryview(b) for b in args[0]]  # generators and __buffer__ run now
    ancdata = [(operator.index(level), operator.index(kind), memoryview(data))
               for level, kind, data in args[1]]
    return (buffers, ancdata, operator.index(args[2]), *args[3:])


def _guard_create_connection(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Keep the hostname the caller asked for, so hostname rules see it."""
    state = _current()
    address = args[0] if args else kwargs.get("address")
    if state is None or not isinstance(address, tuple) or len(address) != 2:
        return wrapped(*args, **kwargs)
    address = (_exact_host(address[0]), _exact_port(address[1]))
    args, kwargs = ((address, *args[1:]), kwargs) if args else (args, {**kwargs, "address": address})
    text = _host_text(address[0]) if address[0] is not None else ""
    host = None
    if text and addr.parse_ip(text) is None:
        try:
            host = addr.normalise_hostname(text)
        except ValueError:
            pass  # getaddrinfo judges and denies it
    token = _connect_host.set((host, set()) if host else None)
    try:
        return wrapped(*args, **kwargs)
    finally:
        _connect_host.reset(token)


# -- resolver wrappers -------------------------------------------------------


def _filter_records(state: _Active, name: str | None, records: list, port_known: bool,
                    sockaddr_of: Callable[[Any], Any], raise_if_none: bool) -> list:
    """Drop resolved addresses the policy denies, so callers use an allowed one.

    When every address is denied: raise (enforce mode, `raise_if_none`), or
    return them all and let the connect decide. Audit mode changes nothing.
    """
    policy = state.policy
    names = (name,) if name else ()
    kept, denials, ips = [], [], []
    for record in records:
        sockaddr = sockaddr_of(record)
        ip = addr.parse_ip(sockaddr[0]) if type(sockaddr[0]) is str else None
        if ip is None:
            kept.append(record)
            continue
        ips.append(ip)
        decision = policy.check_ip(ip, sockaddr[1] if port_known else None, names,
                                   op="net.connect")
        if decision.allowed:
            kept.append(record)
        else:
            denials.append(decision)
    if name:
        _remember(name, ips)
        context = _connect_host.get()
        if context is not None and context[0] == name:
            context[1].update(ips)
    if not denials:
        return records
    if state.mode is not Mode.ENFORCE:
        for decision in denials:
            _report(state, decision)
        return records
    if not kept:
        if raise_if_none:
            for decision in denials[1:]:
                _report(state, decision)
            _enforce(state, denials[0])
        return records  # the connect will judge (and report) the address it uses
    for decision in denials:
        _report(state, decision)
    return kept


def _judge_name(state: _Active, host: str | bytes | None) -> str | None:
    """Judge the name itself; return it normalised, or None (an IP, or no usable name)."""
    if host is None:
        return None
    text = _host_text(host)
    if addr.parse_ip(text) is not None:
        return None
    decision = state.policy.check_resolve(text)
    _enforce(state, decision)
    return addr.normalise_hostname(text) if decision.allowed else None


def _resolver(judge_and_call: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a resolver: pass through when idle; internal errors deny."""

    def guard(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        state = _current()
        if state is None:
            return wrapped(*args, **kwargs)
        try:
            return judge_and_call(state, wrapped, *args, **kwargs)
        except (SecurityError, OSError, TypeError, ValueError):
            raise
        except Exception as exc:
            _enforce(state, _guard_error("net.resolve", exc))
            raise

    guard.__name__ = f"guard{judge_and_call.__name__}"
    return guard


@_resolver
def _getaddrinfo(state: _Active, wrapped: Any, host: Any, port: Any, family: Any = 0,
                type: Any = 0, proto: Any = 0, flags: Any = 0) -> Any:
    host = _exact_host(host)
    port = _exact_port(port)
    family, type, proto, flags = map(operator.index, (family, type, proto, flags))
    name = _judge_name(state, host)
    records = _call_judged("socket.getaddrinfo", host, wrapped,
                           (host, port, family, type, proto, flags))
    if host is None or flags & _socket.AI_PASSIVE:  # addresses to listen on reach nobody
        return records
    return _filter_records(state, name, records, port not in (None, 0, "0", b"0"),
                           lambda record: record[4], raise_if_none=True)


@_resolver
def _gethostbyname(state: _Active, wrapped: Any, host: Any) -> Any:
    host = _exact_host(host)
    name = _judge_name(state, host)
    if name is None:
        return _call_judged("socket.gethostbyname", host, wrapped, (host,))
    # The C call returns a name's first record only; take them all, so a
    # name with a denied and an allowed record gives the allowed one.
    records = _call_judged("socket.gethostbyname", host, _originals.gethostbyname_ex, (host,))[2]
    return _filter_records(state, name, records, False, lambda ip: (ip, 0), False)[0]


@_resolver
def _gethostbyname_ex(state: _Active, wrapped: Any, host: Any) -> Any:
    host = _exact_host(host)
    name = _judge_name(state, host)
    hostname, aliases, ips = _call_judged("socket.gethostbyname", host, wrapped, (host,))
    return hostname, aliases, _filter_records(state, name, ips, False, lambda ip: (ip, 0), False)


@_resolver
def _gethostbyaddr(state: _Active, wrapped: Any, host: Any) -> Any:
    """A name given here is looked up forwards first: judge it like any lookup."""
    host = _exact_host(host)
    _judge_name(state, host)
    return _call_judged("socket.gethostbyaddr", host, wrapped, (host,))


# -- the audit-hook backstop -------------------------------------------------


def _is_judged(event: str, sock: Any, subject: Any) -> bool:
    """Is this the very call a patch judged? Then skip it, once."""
    token = _judged.get()
    if token is not None and token[0] == event and token[1] is sock and token[2] is subject:
        _judged.set(None)
        return True
    return False


def _hook_address(op: str, event: str) -> Callable[[_Active, tuple], None]:
    def check(state: _Active, args: tuple) -> None:
        sock, address = args[0], args[1]
        if address is None or _is_judged(event, sock, address):
            return
        try:
            decision, _, _ = _judge(state, sock, address, op, False)
        except Exception as exc:
            decision = _guard_error(op, exc)
        if decision is not None:
            _enforce(state, decision)

    return check


def _hook_resolve(event: str) -> Callable[[_Active, tuple], None]:
    def check(state: _Active, args: tuple) -> None:
        host = args[0]
        if host is None or _is_judged(event, None, host):
            return
        if type(host) not in (str, bytes):
            _enforce(state, _unpinned("net.resolve", repr(type(host)), "which name this is"))
            return
        text = _host_text(host)
        if addr.parse_ip(text) is None:
            _enforce(state, state.policy.check_resolve(text))

    return check


# Subinterpreters have their own modules and no audit hook of ours: under a
# policy that restricts anything, they cannot be created or imported.
SUBINTERPRETER_MODULES = frozenset({
    "_interpreters", "_xxsubinterpreters", "interpreters", "concurrent.interpreters",
    "_interpqueues", "_interpchannels", "_xxinterpchannels", "_xxinterpqueues",
})


def _subinterpreter_denied(what: str) -> Decision:
    return Decision(Action.DENY, "proc.interpreter", what, "process.subinterpreter",
                    f"{what} is blocked: a subinterpreter escapes every failcore check.")


def _hook_new_interpreter(state: _Active, args: tuple) -> None:
    if state.policy.restricts:
        _enforce(state, _subinterpreter_denied("Creating a subinterpreter"))


# Patched when they are imported, not before: importing them at interpreter
# start-up would cost more than the whole start-up budget (SPEC §9). Until
# then nothing can call them but through the C modules the audit hook sees.
_PATCHED_ON_IMPORT = frozenset({"socket", "subprocess", "_posixsubprocess", "pty", "wrapt",
                                "ssl"})


class _ImportGate:
    """First on sys.meta_path while installed: denies importing the
    subinterpreter modules, and patches a module of `_PATCHED_ON_IMPORT` the
    moment it has been executed, before its importer gets it."""

    @classmethod
    def find_spec(cls, name: str, path: Any = None, target: Any = None) -> Any:
        if name in SUBINTERPRETER_MODULES:
            state = _current()
            if state is not None and state.policy.restricts:
                _enforce(state, _subinterpreter_denied(f"Importing {name}"))
            return None
        if name not in _PATCHED_ON_IMPORT:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(name, path, target) if finder is not cls and find else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _PatchAfterExec(spec.loader)
                return spec
        return None


class _PatchAfterExec:
    """A loader that runs the real one, then patches what it made (and leaves
    the real loader on the module, as if it had never been there)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__spec__.loader = module.__loader__ = self.loader
        self.loader.exec_module(module)
        if module.__name__ == "wrapt":  # see _function_wrapper: its early submodules
            for name in ("exceptions", "_wrappers"):
                if f"wrapt.{name}" in sys.modules and not hasattr(module, name):
                    setattr(module, name, sys.modules[f"wrapt.{name}"])
        with _lock:
            if _engaged:
                _patch(ready=module.__name__)


def _hook_new_socket(state: _Active, args: tuple) -> None:
    """socket.__new__(sock, family, type, proto): a raw or unknown-family socket
    is refused before it exists (a later fromfd could lie about its type)."""
    family, kind = args[1], args[2]
    if type(family) is not int or type(kind) is not int or family == -1:
        return
    if family in _INET_FAMILIES:
        if kind & 0xF == _socket.SOCK_RAW:
            _enforce(state, state.policy.check_family(family, raw=True, op="net.socket"))
    elif family != _AF_UNIX:
        _enforce(state, state.policy.check_family(family, op="net.socket"))


_HOOKS: dict[str, Callable[[_Active, tuple], None]] = {
    "socket.__new__": _hook_new_socket,
    "socket.connect": _hook_address("net.connect", "socket.connect"),
    "socket.sendto": _hook_address("net.send", "socket.sendto"),
    "socket.sendmsg": _hook_address("net.send", "socket.sendmsg"),
    "socket.bind": _hook_address("net.bind", "socket.bind"),
    "socket.getaddrinfo": _hook_resolve("socket.getaddrinfo"),
    "socket.gethostbyname": _hook_resolve("socket.gethostbyname"),
    "socket.gethostbyaddr": _hook_resolve("socket.gethostbyaddr"),
}
if sys.version_info < (3, 12):
    # Refusing this event makes 3.12's interpreter creation crash the process,
    # and 3.13 does not raise it: there, the import blocker is the guard.
    _HOOKS["cpython.PyInterpreterState_New"] = _hook_new_interpreter
_active_hooks: dict[str, Callable[[_Active, tuple], None]] = {}


def _audit(event: str, args: tuple) -> None:
    """Runs on every audit event in the process: one dict lookup when idle."""
    hook = _active_hooks.get(event)
    if hook is not None:
        state = _current()
        if state is not None:
            hook(state, args)


# -- install / uninstall -------------------------------------------------------


def _imported(name: str, ready: str | None) -> Any:
    """Module `name` if it has been imported (`ready` names one that has just
    been executed and is still marked as initialising)."""
    module = sys.modules.get(name)
    if module is None or (name != ready and getattr(module.__spec__, "_initializing", False)):
        return None
    return module


def _targets(ready: str | None = None) -> list[tuple[Any, str, Callable[..., Any]]]:
    from . import _fs_guard, _proc_guard

    targets = _proc_guard.targets(lambda name: _imported(name, ready)) + _fs_guard.targets()
    socket = _imported("socket", ready)
    if socket is None:
        return targets
    _originals.save_socket(socket)
    targets += [
        (socket, "getaddrinfo", _getaddrinfo),
        (socket, "gethostbyname", _gethostbyname),
        (socket, "gethostbyname_ex", _gethostbyname_ex),
        (socket, "gethostbyaddr", _gethostbyaddr),
        (socket, "create_connection", _guard_create_connection),
    ]
    # The class saved when failcore first saw the module (ssl.SSLSocket and early
    # imports use it) and, after an importlib.reload(socket), the new class
    # socket.socket now is.
    classes = [_originals.socket_class]
    live = socket.socket
    if isinstance(live, type) and not issubclass(live, _originals.socket_class):
        classes.append(live)
    for sock in classes:
        targets += [
            (sock, "connect", _guarded_call("net.connect", "socket.connect", _at_0)),
            (sock, "connect_ex", _guarded_call("net.connect", "socket.connect", _at_0,
                                               returns_errno=True)),
            (sock, "sendto", _guarded_call("net.send", "socket.sendto", _sendto_address,
                                           _sendto_exact)),
            (sock, "sendmsg", _guarded_call("net.send", "socket.sendmsg", _sendmsg_address,
                                            _sendmsg_exact)),
            (sock, "bind", _guarded_call("net.bind", "socket.bind", _at_0)),
        ]
        if _sessions_used:
            targets += [(sock, "send", _guard_send), (sock, "sendall", _guard_send)]
    ssl = _imported("ssl", ready)
    if _sessions_used and ssl is not None:  # SSLSocket's own send, over its fd
        targets += [(ssl.SSLSocket, "send", _guard_send), (ssl.SSLSocket, "sendall", _guard_send)]
    return targets


def _patch(ready: str | None = None) -> None:
    """Patch every target that is not already ours (a reload brings new ones)."""
    ours = {id(patch[4]) for patch in _patches}
    wrapper_type = None
    for owner, name, guard in _targets(ready):
        if id(vars(owner).get(name)) in ours:
            continue
        wrapper_type = wrapper_type or _function_wrapper()
        original = getattr(owner, name)
        wrapper = wrapper_type(original, guard)
        _patches.append((owner, name, original, name in vars(owner), wrapper))
        setattr(owner, name, wrapper)


def _function_wrapper() -> type:
    """wrapt's FunctionWrapper, without `import wrapt` when it is not imported yet.

    The package imports asyncio, inspect and importlib.metadata: tens of
    milliseconds, more than the start-up budget. The C type is in
    `wrapt._wrappers`, which needs only `wrapt.exceptions`; those two are
    loaded under a bare parent, with the import lock held, and stay in
    sys.modules, so a later `import wrapt` reuses them and the type is
    wrapt's own. Anything unexpected falls back to the plain import.
    """
    if "wrapt" not in sys.modules and not os.environ.get("WRAPT_DISABLE_EXTENSIONS"):
        import _imp
        import importlib
        from importlib.machinery import PathFinder

        _imp.acquire_lock()
        try:
            spec = PathFinder.find_spec("wrapt")
            if spec is not None and spec.submodule_search_locations:
                parent = type(sys)("wrapt")
                parent.__path__ = list(spec.submodule_search_locations)
                sys.modules["wrapt"] = parent
                try:
                    importlib.import_module("wrapt.exceptions")
                    return importlib.import_module("wrapt._wrappers").FunctionWrapper
                except Exception:
                    sys.modules.pop("wrapt.exceptions", None)
                    sys.modules.pop("wrapt._wrappers", None)
                finally:
                    del sys.modules["wrapt"]
        finally:
            _imp.release_lock()
    import wrapt

    return wrapt.FunctionWrapper


def _unpatch() -> None:
    while _patches:
        owner, name, original, own, wrapper = _patches.pop()
        if vars(owner).get(name) is wrapper:  # only undo what is still ours
            if own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)


def _parse_mode(value: Mode | str, key: str = "mode") -> Mode:
    """`value` as a Mode; a bad one is a PolicyError naming `key`, where it came from."""
    try:
        return Mode(value)
    except ValueError:
        raise PolicyError(f"{key}: got {value!r}, expected one of enforce, audit, off",
                          key=key) from None


def _disabled() -> bool:
    """FAILCORE_DISABLE: 1 switches failcore off; unset, empty or 0 do not."""
    value = os.environ.get("FAILCORE_DISABLE", "")
    if value not in ("", "0", "1"):
        raise PolicyError(f"FAILCORE_DISABLE: got {value!r}, expected 1 (off) or 0",
                          key="FAILCORE_DISABLE")
    return value == "1"


def install(policy: Policy | str | os.PathLike[str] | Any = None, *,
            mode: Mode | str | None = None,
            trace: str | os.PathLike[str] | None = None) -> Policy:
    """Guard this process with `policy`; return the compiled policy.

    `policy` is a `Policy`, a preset name, a TOML path, a mapping or inline
    JSON; `None` means `$FAILCORE_POLICY`, else the `agent_safe` preset.
    `mode` is `enforce` (default, or `$FAILCORE_MODE`), `audit` or `off`.
    `trace` is a file to record every decision in (default `$FAILCORE_TRACE`;
    a second call without one keeps the trace already open). Calling it again
    swaps the policy atomically. `FAILCORE_DISABLE=1` turns it off. Child
    processes come up guarded by the same policy and mode.
    """
    global _state
    if policy is None:
        policy = os.environ.get("FAILCORE_POLICY") or "agent_safe"
    compiled = Policy.load(policy)
    if mode is None:
        chosen = _parse_mode(os.environ.get("FAILCORE_MODE") or Mode.ENFORCE, "FAILCORE_MODE")
    else:
        chosen = _parse_mode(mode)
    trace_key = "trace"
    if trace is None:
        trace, trace_key = os.environ.get("FAILCORE_TRACE") or None, "FAILCORE_TRACE"
    if _disabled():
        chosen = Mode.OFF
    with _lock:
        if chosen is Mode.OFF:
            _deactivate()
            return compiled
        previous = _state.trace if _state is not None else None
        writer = previous
        if trace is not None:
            from . import _trace

            try:
                writer = _trace.open_trace(trace, compiled, chosen.value)
            except OSError as exc:
                raise PolicyError(f"{trace_key}: cannot write the trace {os.fspath(trace)}: "
                                  f"{exc.strerror}", key=trace_key) from None
        state = _Active(compiled, chosen, writer)
        _engage(compiled.restricts)
        _state = state
        if previous is not None and trace is not None:
            previous.close()  # released: ends it, unless it is the same file, still in use
    return compiled


def _engage(restricts: bool) -> None:
    """Put the patches, the audit hook and the import gate in place (with
    `_lock` held): for install(), and for a session's first call."""
    global _hook_added, _engaged
    if not _hook_added:
        sys.addaudithook(_audit)
        os.register_at_fork(after_in_child=_after_fork)
        _hook_added = True
    _patch()
    from . import _fs_guard, _proc_guard

    _active_hooks.update(_HOOKS)
    _active_hooks.update(_proc_guard.HOOKS)
    _active_hooks.update(_fs_guard.HOOKS)
    if _ImportGate not in sys.meta_path:
        sys.meta_path.insert(0, _ImportGate)
    if restricts:  # loaded ones must be imported again, past the blocker
        for name in SUBINTERPRETER_MODULES & set(sys.modules):
            del sys.modules[name]
    _engaged = True


def engage_for_sessions() -> None:
    """Make sure a session's calls are intercepted, with or without install()."""
    global _sessions_used
    if not _engaged or not _sessions_used:
        with _lock:
            _sessions_used = True
            if not _engaged:
                _engage(True)
            else:
                _patch()  # the sends judged inside calls


def _after_fork() -> None:
    """A forked child is guarded as its parent was; only a lock another thread
    held at the fork must not stay held forever."""
    global _lock
    _lock = _thread.RLock()


def _deactivate() -> None:
    global _state, _engaged
    trace = _state.trace if _state is not None else None
    _state = None
    _engaged = False
    _active_hooks.clear()
    if _ImportGate in sys.meta_path:
        sys.meta_path.remove(_ImportGate)
    _unpatch()
    _resolved.clear()
    from . import _children

    _children.restore_environ()
    if trace is not None:
        trace.close()


def uninstall() -> None:
    """Remove every patch and stop checking; idempotent. (The audit hook stays, idle.)"""
    with _lock:
        _deactivate()


def installed_policy() -> Policy | None:
    """The policy in force, or None when the guard is not installed."""
    state = _state
    return state.policy if state is not None else None


def installed_mode() -> Mode:
    """The mode in force (`off` when not installed)."""
    state = _state
    return state.mode if state is not None else Mode.OFF

"""Interception: the patches on `socket`, and the audit-hook backstop behind them.

The wrappers extract the subject of a call, ask the installed policy, and
either raise `SecurityError` before the original runs or call it. The audit
hook sees what the patches cannot (`_socket`, references captured before
`install()`, `importlib.reload(socket)`) and skips calls a patch already
judged.
"""

from __future__ import annotations

import _socket
import operator
import os
import socket
import sys
import threading
import warnings
from collections import OrderedDict
from functools import lru_cache
from typing import Any, Callable

import wrapt

from . import _addresses as addr
from . import _originals
from ._errors import PolicyError, SecurityError
from ._log import log_decision
from ._policy import Policy
from ._types import Action, Decision, Mode

_INET_FAMILIES = (socket.AF_INET, socket.AF_INET6)
# The C-level members: a subclass can override the `family` and `type`
# properties to lie, and the properties rebuild an enum on every read.
_family_of = _socket.socket.__dict__["family"].__get__
_type_of = _socket.socket.__dict__["type"].__get__
_AF_UNIX = getattr(socket, "AF_UNIX", None)


class _Active:
    """What is in force: read once per intercepted call, replaced whole."""

    __slots__ = ("policy", "mode")

    def __init__(self, policy: Policy, mode: Mode) -> None:
        self.policy, self.mode = policy, mode


class _Local(threading.local):
    busy = False          # inside failcore's own work: pass everything through
    expect: Any = None    # the call a patch has judged and is now running
    connect_host: str | None = None  # hostname given to create_connection


_state: _Active | None = None
_local = _Local()
_lock = threading.RLock()
_patches: list[tuple[Any, str, Any, bool, Any]] = []
_hook_added = False

# Addresses this process resolved, and the names they were resolved from:
# hostname rules apply to them at connect time.
_resolved: OrderedDict[tuple[int, int], tuple[str, ...]] = OrderedDict()
_RESOLVED_MAX = 4096


def _remember(name: str, ips: list[tuple[int, int]]) -> None:
    with _lock:
        for ip in ips:
            names = _resolved.pop(ip, ())
            _resolved[ip] = names if name in names else (*names, name)
        while len(_resolved) > _RESOLVED_MAX:
            _resolved.popitem(last=False)


def _names_for(ip: tuple[int, int]) -> tuple[str, ...]:
    host = _local.connect_host
    if host is not None:
        return (host,)
    return _resolved.get(ip, ())


# -- verdicts ----------------------------------------------------------------


def _report(state: _Active, decision: Decision) -> None:
    """Log a deny (or, in audit mode, a would-deny) without re-entering the guard."""
    outcome = "deny" if state.mode is Mode.ENFORCE else "would-deny"
    _local.busy = True
    try:
        log_decision(decision, outcome, state.mode.value)
    finally:
        _local.busy = False


def _enforce(state: _Active, decision: Decision) -> None:
    """Report a deny, and raise it in enforce mode. Allows pass silently."""
    if decision.action is Action.ALLOW:
        return
    _report(state, decision)
    if state.mode is Mode.ENFORCE:
        raise SecurityError(decision)


def _guard_error(op: str, subject: Any, exc: BaseException) -> Decision:
    return Decision(Action.DENY, op, repr(subject)[:200], "guard.error",
                    f"failcore could not check this call ({type(exc).__name__}: {exc}), "
                    f"so it was blocked.")


def _host_text(host: Any) -> str | None:
    if isinstance(host, str):
        return host
    if isinstance(host, (bytes, bytearray)):
        return bytes(host).decode("ascii")
    return None


def _exact(value: Any) -> Any:
    """`value` as the C socket code reads it: an exact tuple, str or bytes.

    A subclass can show Python-level code other items than its real ones, and
    a bytearray can change after the check; the check and the call both use
    this copy.
    """
    if isinstance(value, tuple):
        return value if type(value) is tuple else tuple.__getitem__(value, slice(None))
    if isinstance(value, str):
        return value if type(value) is str else str.__str__(value)
    if isinstance(value, bytes):
        return value if type(value) is bytes else bytes.__getitem__(value, slice(None))
    if isinstance(value, bytearray):
        return bytes(bytearray.__getitem__(value, slice(None)))
    return value


def _exact_inet(address: tuple) -> tuple:
    """An (host, port, ...) address rebuilt from exact objects (see `_exact`)."""
    if type(address) is not tuple:
        address = tuple.__getitem__(address, slice(None))
    if address and type(address[0]) is not str:
        address = (_exact(address[0]), *address[1:])
    return address


@lru_cache(maxsize=4096)
def _strict_ip(host: str) -> tuple[int, int] | None:
    """An address the C socket code takes literally, without resolving it."""
    try:
        if ":" in host:
            return addr.parse_ip(host)  # zone ids are resolved locally, never via DNS
        socket.inet_pton(socket.AF_INET, host)
    except OSError:
        return None
    return addr.parse_ip(host)


def _judge_address(state: _Active, sock: Any, address: Any, op: str,
                   all_must_pass: bool) -> tuple[Decision | None, Any]:
    """The decision for `address` on `sock`, and the address to really use.

    A hostname (or any spelling the OS would resolve) is resolved here and
    replaced by the numeric address that was judged, so nothing is looked up
    again between the check and the connect. Returns `(None, address)` for
    addresses the original will reject by itself.
    """
    policy = state.policy
    family = _family_of(sock)
    if family in _INET_FAMILIES:
        if not isinstance(address, tuple):
            return None, address
        address = _exact_inet(address)  # judge, and pass on, what the C code will read
        if len(address) < 2:
            return None, address
        host = address[0] if type(address[0]) is str else _host_text(address[0])
        try:
            port = operator.index(address[1])
        except TypeError:
            return None, address
        if host is None:
            return None, address
        if host in ("", "<broadcast>"):
            ip = (addr.V4, 0xFFFFFFFF) if host else (
                (addr.V4, 0) if family == socket.AF_INET else (addr.V6, 0))
        else:
            ip = _strict_ip(host)
        if ip is not None:
            return policy.check_ip(ip, port, _names_for(ip), op=op), address
        return _judge_hostname(policy, sock, host, port, address, op, all_must_pass)
    if family == _AF_UNIX:
        if isinstance(address, (str, bytes)):
            address = _exact(address)
        else:
            try:  # the C code reads a path from any buffer, never via __fspath__
                address = bytes(memoryview(address))
            except TypeError:
                return None, address  # the original rejects it
        return policy.check_unix(address, op=op), address
    return policy.check_family(family, op=op), address


def _judge_hostname(policy: Policy, sock: Any, host: str, port: int, address: tuple,
                    op: str, all_must_pass: bool) -> tuple[Decision, Any]:
    resolve = policy.check_resolve(host)
    if not resolve.allowed:
        return resolve, address
    name = addr.normalise_hostname(host)
    _local.busy = True
    try:
        infos = _originals.getaddrinfo(host, port, _family_of(sock), _type_of(sock))
    finally:
        _local.busy = False
    ips = [addr.parse_ip(info[4][0]) for info in infos]
    _remember(name, [ip for ip in ips if ip is not None])
    first_denied: Decision | None = None
    for info, ip in zip(infos, ips):
        if ip is None:
            continue
        decision = policy.check_ip(ip, port, (name,), op=op)
        if decision.allowed and not all_must_pass:
            return decision, (info[4][0], *address[1:])
        if not decision.allowed and first_denied is None:
            first_denied = decision
    if first_denied is not None:
        return first_denied, address
    if all_must_pass and ips:
        return decision, address
    return Decision(Action.DENY, op, f"{name}:{port}", "network.invalid",
                    f"{name} resolved to no address failcore could judge; it was blocked."), address


# -- socket method wrappers ----------------------------------------------------


def _guarded_call(op: str, address_index: Callable[[tuple], int | None]) -> Callable[..., Any]:
    """A wrapper for a socket method; `address_index(args)` says where the address is."""

    def guard(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        state = _state
        if state is None or _local.busy or kwargs or instance is None:
            return wrapped(*args, **kwargs)
        index = address_index(args)
        if index is None or args[index] is None:  # malformed, or sendmsg on a connected socket
            return wrapped(*args)
        try:
            decision, address = _judge_address(state, instance, args[index], op, False)
        except socket.gaierror:
            raise
        except Exception as exc:
            decision, address = _guard_error(op, args[index], exc), args[index]
        if decision is not None and decision.action is not Action.ALLOW:
            _enforce(state, decision)
        _local.expect = instance
        try:
            if len(args) == 1:
                return wrapped(address)
            return wrapped(*args[:index], address, *args[index + 1:])
        finally:
            _local.expect = None

    guard.__name__ = f"guard_{op.replace('.', '_')}"
    return guard


def _connect_address(args: tuple) -> int | None:
    return 0 if len(args) == 1 else None


def _sendto_address(args: tuple) -> int | None:
    return len(args) - 1 if len(args) in (2, 3) else None  # sendto(data[, flags], address)


def _sendmsg_address(args: tuple) -> int | None:
    return 3 if len(args) >= 4 else None  # sendmsg(buffers, ancdata, flags, address)


def _guard_bind(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Binding an IP address reaches nobody; AF_UNIX and other families are judged."""
    state = _state
    if state is None or _local.busy or instance is None or _family_of(instance) in _INET_FAMILIES:
        return wrapped(*args, **kwargs)
    if len(args) == 1 and not kwargs:
        try:
            decision, _ = _judge_address(state, instance, args[0], "net.bind", False)
        except Exception as exc:
            decision = _guard_error("net.bind", args[0], exc)
        if decision is not None:
            _enforce(state, decision)
    _local.expect = instance
    try:
        return wrapped(*args, **kwargs)
    finally:
        _local.expect = None


def _guard_create_connection(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Keep the hostname the caller asked for, so hostname rules see it."""
    address = args[0] if args else kwargs.get("address")
    host = None
    if isinstance(address, tuple) and address:
        text = _host_text(address[0])
        if text is not None and addr.parse_ip(text) is None:
            try:
                host = addr.normalise_hostname(text)
            except ValueError:
                host = None
    outer = _local.connect_host
    _local.connect_host = host
    try:
        return wrapped(*args, **kwargs)
    finally:
        _local.connect_host = outer


# -- resolver wrappers -------------------------------------------------------


def _filter_records(state: _Active, name: str | None, records: list, port_known: bool,
                    sockaddr_of: Callable[[Any], Any]) -> list:
    """Drop resolved addresses the policy denies, so callers use an allowed one.

    Raises when every address is denied (enforce mode); in audit mode the
    records are returned whole and each denied one is reported.
    """
    policy = state.policy
    host = _local.connect_host
    names = (host,) if host else (name,) if name else ()
    kept, denials, ips = [], [], []
    for record in records:
        sockaddr = sockaddr_of(record)
        ip = addr.parse_ip(sockaddr[0]) if isinstance(sockaddr[0], str) else None
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
    if not denials:
        return records
    if kept or state.mode is not Mode.ENFORCE:
        for decision in denials:
            _report(state, decision)
        return kept if state.mode is Mode.ENFORCE else records
    for decision in denials[1:]:
        _report(state, decision)
    _enforce(state, denials[0])
    return records  # not reached: enforce raised


def _resolve_name(state: _Active, host: Any) -> str | None:
    """Judge the name itself; return it normalised, or None for an IP literal."""
    text = _host_text(host)
    if text is None or addr.parse_ip(text) is not None:
        return None
    _enforce(state, state.policy.check_resolve(text))
    return addr.normalise_hostname(text)


def _guard_getaddrinfo(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    state = _state
    host = args[0] if args else kwargs.get("host")
    if state is None or _local.busy or host is None:
        return wrapped(*args, **kwargs)
    try:
        name = _resolve_name(state, host)
    except SecurityError:
        raise
    except Exception as exc:
        _enforce(state, _guard_error("net.resolve", host, exc))
        name = None
    port = args[1] if len(args) > 1 else kwargs.get("port")
    _local.expect = host
    try:
        records = wrapped(*args, **kwargs)
    finally:
        _local.expect = None
    return _filter_records(state, name, records, port not in (None, 0, "0", b"0"),
                           lambda record: record[4])


def _guard_gethostbyname(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    state = _state
    if state is None or _local.busy or len(args) != 1:
        return wrapped(*args, **kwargs)
    name = _resolve_name(state, args[0])
    _local.expect = args[0]
    try:
        # The C call returns a name's first record only; take them all, so a
        # name with a denied and an allowed record gives the allowed one.
        records = [wrapped(*args)] if name is None else _originals.gethostbyname_ex(*args)[2]
    finally:
        _local.expect = None
    return _filter_records(state, name, records, False, lambda ip: (ip, 0))[0]


def _guard_gethostbyname_ex(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    state = _state
    if state is None or _local.busy or len(args) != 1:
        return wrapped(*args, **kwargs)
    name = _resolve_name(state, args[0])
    _local.expect = args[0]
    try:
        hostname, aliases, ips = wrapped(*args)
    finally:
        _local.expect = None
    return hostname, aliases, _filter_records(state, name, ips, False, lambda ip: (ip, 0))


# -- the audit-hook backstop -------------------------------------------------


def _unpinned(policy: Policy, sock: Any, address: Any, op: str) -> Decision | None:
    """Deny what the C code turned into a sockaddr out of failcore's sight.

    By the time an audit event fires, the C code has already resolved a
    hostname (a second lookup here may get another answer: DNS rebinding) and
    encoded the host of a str subclass through Python-level methods that may
    lie. Neither can be pinned to what is used, so the audit-hook path denies
    them; numeric spellings are parsed by the C library here exactly as there.
    """
    family = _family_of(sock)
    if family == _AF_UNIX:
        if type(address) in (str, bytes, bytearray, memoryview):
            return None
        return Decision(Action.DENY, op, repr(address)[:200], "guard.unpinned",
                        f"failcore cannot see which path a {type(address).__name__} gave the "
                        f"C code here, so the connection was blocked.")
    if family not in _INET_FAMILIES or not isinstance(address, tuple):
        return None
    address = _exact(address)
    if not address:
        return None
    host = address[0]
    port = address[1] if len(address) > 1 else None
    if isinstance(host, str) and type(host) is not str:
        return Decision(Action.DENY, op, f"{_exact(host)}:{port}", "guard.unpinned",
                        f"failcore cannot see how a {type(host).__name__} host was encoded "
                        f"on this path, so the connection was blocked.")
    text = _host_text(_exact(host))
    if text is None or text in ("", "<broadcast>") or _strict_ip(text) is not None:
        return None
    try:  # a numeric spelling (inet_aton forms) is taken literally by the C library
        _originals.getaddrinfo(text, None, family, 0, 0, socket.AI_NUMERICHOST)
        return None
    except OSError:
        pass
    resolve = policy.check_resolve(text)
    if not resolve.allowed:
        return resolve
    name = addr.normalise_hostname(text)
    return Decision(Action.DENY, op, f"{name}:{port}", "guard.unpinned",
                    f"failcore cannot see which address {name} resolved to on this path "
                    f"(_socket, a captured method or a reloaded socket module), so the "
                    f"connection was blocked; resolve the name first.")


def _hook_address(op: str) -> Callable[[_Active, tuple], None]:
    def check(state: _Active, args: tuple) -> None:
        sock, address = args[0], args[1]
        if address is None or _local.expect is sock:
            return
        _local.busy = True
        try:
            decision = _unpinned(state.policy, sock, address, op)
            if decision is None:
                decision, _ = _judge_address(state, sock, address, op, True)
        except Exception as exc:
            decision = _guard_error(op, address, exc)
        finally:
            _local.busy = False
        if decision is not None:
            _enforce(state, decision)

    return check


_hook_bind_unix = _hook_address("net.bind")


def _hook_bind(state: _Active, args: tuple) -> None:
    if _family_of(args[0]) not in _INET_FAMILIES:
        _hook_bind_unix(state, args)


def _hook_resolve(state: _Active, args: tuple) -> None:
    host = args[0]
    if host is None or _local.expect is host:
        return
    text = _host_text(host)
    if text is None or addr.parse_ip(text) is not None:
        return
    _enforce(state, state.policy.check_resolve(text))


_HOOKS: dict[str, Callable[[_Active, tuple], None]] = {
    "socket.connect": _hook_address("net.connect"),
    "socket.sendto": _hook_address("net.send"),
    "socket.sendmsg": _hook_address("net.send"),
    "socket.bind": _hook_bind,
    "socket.getaddrinfo": _hook_resolve,
    "socket.gethostbyname": _hook_resolve,
}
_active_hooks: dict[str, Callable[[_Active, tuple], None]] = {}


def _audit(event: str, args: tuple) -> None:
    """Runs on every audit event in the process: one dict lookup when idle."""
    hook = _active_hooks.get(event)
    if hook is not None:
        state = _state
        if state is not None and not _local.busy:
            hook(state, args)


# -- install / uninstall -------------------------------------------------------


def _targets() -> list[tuple[Any, str, Callable[..., Any]]]:
    targets: list[tuple[Any, str, Callable[..., Any]]] = [
        (socket, "getaddrinfo", _guard_getaddrinfo),
        (socket, "gethostbyname", _guard_gethostbyname),
        (socket, "gethostbyname_ex", _guard_gethostbyname_ex),
        (socket, "create_connection", _guard_create_connection),
    ]
    # The class saved at import (ssl.SSLSocket and early imports use it) and,
    # after an importlib.reload(socket), the new class socket.socket now is.
    classes = [_originals.socket_class]
    live = socket.socket
    if isinstance(live, type) and not issubclass(live, _originals.socket_class):
        classes.append(live)
    for sock in classes:
        targets += [
            (sock, "connect", _guarded_call("net.connect", _connect_address)),
            (sock, "connect_ex", _guarded_call("net.connect", _connect_address)),
            (sock, "sendto", _guarded_call("net.send", _sendto_address)),
            (sock, "sendmsg", _guarded_call("net.send", _sendmsg_address)),
            (sock, "bind", _guard_bind),
        ]
    return targets


def _patch() -> None:
    for owner, name, guard in _targets():
        original = getattr(owner, name)
        wrapper = wrapt.FunctionWrapper(original, guard)
        _patches.append((owner, name, original, name in vars(owner), wrapper))
        setattr(owner, name, wrapper)


def _unpatch() -> None:
    while _patches:
        owner, name, original, own, wrapper = _patches.pop()
        if vars(owner).get(name) is wrapper:  # only undo what is still ours
            if own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)


def _parse_mode(value: Mode | str) -> Mode:
    try:
        return Mode(value)
    except ValueError:
        raise PolicyError(f"mode: got {value!r}, expected one of enforce, audit, off") from None


def install(policy: Policy | str | os.PathLike[str] | Any = None, *,
            mode: Mode | str | None = None, trace: Any = None) -> Policy:
    """Guard this process with `policy`; return the compiled policy.

    `policy` is a `Policy`, a preset name, a TOML path or a mapping; `None`
    means `$FAILCORE_POLICY`, else the `agent_safe` preset. `mode` is
    `enforce` (default, or `$FAILCORE_MODE`), `audit` or `off`. Calling it
    again swaps the policy atomically. `FAILCORE_DISABLE=1` turns it off.
    """
    global _state, _hook_added
    if trace is not None:
        raise NotImplementedError("failcore: the trace is not available in this version")
    if policy is None:
        policy = os.environ.get("FAILCORE_POLICY") or "agent_safe"
    compiled = Policy.load(policy)
    chosen = _parse_mode(mode or os.environ.get("FAILCORE_MODE") or Mode.ENFORCE)
    unenforced = [f"[{s}]" for s in ("filesystem", "process") if compiled.config.get(s)]
    if unenforced and chosen is not Mode.OFF:
        warnings.warn(f"failcore: {' and '.join(unenforced)} rules in {compiled.source} are "
                      f"validated but not enforced by this version", UserWarning, stacklevel=2)
    if os.environ.get("FAILCORE_DISABLE") == "1":
        chosen = Mode.OFF
    with _lock:
        if chosen is Mode.OFF:
            _deactivate()
            return compiled
        if not _hook_added:
            sys.addaudithook(_audit)
            _hook_added = True
        if not _patches:
            _patch()
        _state = _Active(compiled, chosen)
        _active_hooks.update(_HOOKS)
    return compiled


def _deactivate() -> None:
    global _state
    _state = None
    _active_hooks.clear()
    _unpatch()
    _resolved.clear()


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

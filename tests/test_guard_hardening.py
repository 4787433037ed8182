"""Regression tests for the guard bypasses found by the security review (B1-B7, W7, W8, R1, R2).

Each test aims a bypass at a listener of its own on loopback (127.0.0.1 is
denied under `net_safe`; 127.0.0.2 is the allowed target of `ALLOW_ONE`) and
asserts both the decision's rule and that the listener heard nothing. Every
test that opens a socket runs inside the network lab (the `lab` fixture), so
nothing here can leave the machine.
"""

from __future__ import annotations

import _socket
import array
import asyncio
import enum
import logging
import errno
import os
import select
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

import failcore
from failcore import SecurityError
from tests import netlab

DENIED = "127.0.0.1"  # non-public: denied by net_safe and by ALLOW_ONE
ALLOWED = "127.0.0.2"  # the one address ALLOW_ONE opens
ALLOW_ONE = {"version": 1, "network": {"allow": [ALLOWED]}}
QUIET = 0.02  # loopback connect/sendto deliver before they return: a short wait is exact
HEARD = 2.0  # upper bound when a listener is expected to hear something


# -- listeners and clients -----------------------------------------------------------


class Listener:
    """A TCP, UDP or AF_UNIX listener made before install(); `heard()` says if anything arrived."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.address = sock.getsockname()
        self.port = self.address[1] if isinstance(self.address, tuple) else None
        self.stream = sock.type == socket.SOCK_STREAM

    def heard(self, timeout: float = QUIET) -> bool:
        return bool(select.select([self.sock], [], [], timeout)[0])

    def drain(self) -> int:
        """Accept (or read) and discard everything pending; return how many there were."""
        count = 0
        self.sock.setblocking(False)
        try:
            while True:
                if self.stream:
                    self.sock.accept()[0].close()
                else:
                    self.sock.recv(65536)
                count += 1
        except (BlockingIOError, InterruptedError):
            return count
        finally:
            self.sock.setblocking(True)

    def received(self) -> bytes:
        """The next datagram (UDP only)."""
        assert self.heard(HEARD), "nothing arrived"
        return self.sock.recv(65536)


class Net:
    """Sockets made for one test; all closed after it."""

    def __init__(self) -> None:
        self._open: list[Any] = []

    def keep(self, sock: Any) -> Any:
        self._open.append(sock)
        return sock

    def tcp(self, host: str = DENIED, port: int = 0) -> Listener:
        sock = self.keep(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.bind((host, port))
        sock.listen(64)
        return Listener(sock)

    def udp(self, host: str = DENIED) -> Listener:
        sock = self.keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sock.bind((host, 0))
        return Listener(sock)

    def unix(self, path: Path) -> Listener:
        path.parent.mkdir(parents=True, exist_ok=True)
        sock = self.keep(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
        sock.bind(str(path))
        sock.listen(4096)
        return Listener(sock)

    def client(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM,
               proto: int = 0) -> socket.socket:
        sock = self.keep(socket.socket(family, kind, proto))
        sock.settimeout(HEARD)
        return sock

    def raw_client(self, family: int = socket.AF_INET,
                   kind: int = socket.SOCK_STREAM) -> Any:
        """A `_socket.socket`: its methods are not patched, only the audit hook sees them."""
        sock = self.keep(_socket.socket(family, kind))
        sock.settimeout(HEARD)
        return sock

    def close(self) -> None:
        for sock in reversed(self._open):
            sock.close()


@pytest.fixture
def net(lab: netlab.Lab):
    """Sockets for one test inside the network lab (skips outside it), closed afterwards."""
    made = Net()
    yield made
    made.close()


def denied(call: Callable[..., Any], *args: Any) -> str:
    """Run `call`, which must raise SecurityError; return the decision's rule."""
    with pytest.raises(SecurityError) as info:
        call(*args)
    return info.value.decision.rule


def nested_connects(port: int, outcomes: list[str]) -> None:
    """Connect to DENIED:port through the patched class and through `_socket`; record how each ended."""
    for sock, connect in ((socket.socket(), socket.socket.connect),
                          (_socket.socket(), _socket.socket.connect)):
        sock.settimeout(HEARD)
        try:
            connect(sock, (DENIED, port))
            outcomes.append("connected")
        except SecurityError as exc:
            outcomes.append(exc.decision.rule)
        except OSError as exc:
            outcomes.append(type(exc).__name__)
        finally:
            sock.close()


# -- B1: user code that runs while failcore judges ------------------------------------


class ConnectingPort:
    """A port whose __index__ first makes two nested connects to the denied listener."""

    def __init__(self, target_port: int, outcomes: list[str]) -> None:
        self.target_port, self.outcomes = target_port, outcomes

    def __index__(self) -> int:
        nested_connects(self.target_port, self.outcomes)
        return self.target_port


class ConnectingPath(array.array):
    """An AF_UNIX path buffer whose repr and str make nested connects (set `target_port`, `outcomes`)."""

    target_port: int
    outcomes: list[str]

    def __repr__(self) -> str:
        nested_connects(self.target_port, self.outcomes)
        return "ConnectingPath()"

    __str__ = __repr__


def _connect_patched(sock: Any, address: Any) -> None:
    socket.socket.connect(sock, address)


def _connect_raw(sock: Any, address: Any) -> None:
    _socket.socket.connect(sock, address)


@pytest.mark.parametrize("path, rule", [("socket", "network.public"),
                                        ("_socket", "guard.unpinned")])
def test_b1_connect_from_port_index_is_judged(net, path, rule):
    """A connect made from a port's __index__ while failcore judges the port is itself denied."""
    listener = net.tcp(DENIED)
    failcore.install("net_safe")
    outcomes: list[str] = []
    sock = net.client() if path == "socket" else net.raw_client()
    connect = _connect_patched if path == "socket" else _connect_raw
    assert denied(connect, sock, (DENIED, ConnectingPort(listener.port, outcomes))) == rule
    assert outcomes and set(outcomes) == {"network.public"}, outcomes
    assert not listener.heard()


def test_b1_connect_from_address_repr_is_judged(net, tmp_path):
    """A connect made from an AF_UNIX buffer's repr while the backstop denies it is itself denied."""
    listener = net.tcp(DENIED)
    failcore.install("net_safe")
    path = ConnectingPath("B", os.fsencode(tmp_path / "absent.sock"))
    path.target_port, path.outcomes = listener.port, []
    assert denied(_connect_raw, net.raw_client(socket.AF_UNIX), path) == "guard.unpinned"
    assert set(path.outcomes) <= {"network.public"}, path.outcomes
    assert not listener.heard()


@pytest.fixture(params=["logging-filter", "structlog-processor"])
def on_failcore_log(request):
    """Run a callback whenever failcore logs: a stdlib filter on "failcore", or a structlog processor."""
    import structlog

    callbacks: list[Callable[[], None]] = []
    logger = logging.getLogger("failcore")
    saved = logger.level, logger.disabled

    def log_filter(record: logging.LogRecord) -> bool:
        for callback in callbacks:
            callback()
        return True

    def processor(logger: Any, method: str, event: dict) -> dict:
        for callback in callbacks:
            callback()
        return event

    if request.param == "logging-filter":
        logger.setLevel(logging.WARNING)
        logger.disabled = False
        logger.addFilter(log_filter)
    else:
        structlog.configure(processors=[processor, structlog.processors.KeyValueRenderer()],
                            logger_factory=structlog.ReturnLoggerFactory())
    yield callbacks.append
    if request.param == "logging-filter":
        logger.removeFilter(log_filter)
        logger.level, logger.disabled = saved
    else:
        structlog.reset_defaults()


@pytest.mark.parametrize("path", ["socket", "_socket"])
def test_b1_connect_from_a_log_callback_is_judged(net, on_failcore_log, path):
    """A connect that a log filter or structlog processor makes while a deny is logged is itself denied."""
    listener = net.tcp(DENIED)
    outcomes: list[str] = []
    on_failcore_log(lambda: nested_connects(listener.port, outcomes))
    failcore.install("net_safe")
    sock = net.client() if path == "socket" else net.raw_client()
    connect = _connect_patched if path == "socket" else _connect_raw
    assert denied(connect, sock, (DENIED, listener.port)) == "network.public"
    assert outcomes and set(outcomes) == {"network.public"}, outcomes
    assert not listener.heard()


# -- B2: a raw send smuggled into an allowed call on the same socket ------------------


def _smuggle(sock: Any, port: int, outcomes: list[str]) -> None:
    try:
        _socket.socket.sendto(sock, b"smuggled", (DENIED, port))
        outcomes.append("sent")
    except SecurityError as exc:
        outcomes.append(exc.decision.rule)


class SmugglingFlags:
    """send flags whose __index__ sends a raw datagram to the denied listener first."""

    def __init__(self, smuggle: Callable[[], None]) -> None:
        self.smuggle = smuggle

    def __index__(self) -> int:
        self.smuggle()
        return 0


class SmugglingData:
    """Data whose buffer, when the C code asks for it, sends a raw datagram first (3.12+)."""

    def __init__(self, smuggle: Callable[[], None]) -> None:
        self.smuggle = smuggle

    def __buffer__(self, flags: int) -> memoryview:
        self.smuggle()
        return memoryview(b"cover")


def _cover_sendto_flags(sock, smuggle, address):
    sock.sendto(b"cover", SmugglingFlags(smuggle), address)


def _cover_sendmsg_flags(sock, smuggle, address):
    sock.sendmsg([b"cover"], [], SmugglingFlags(smuggle), address)


def _cover_sendmsg_buffers(sock, smuggle, address):
    def buffers():
        smuggle()
        yield b"cover"

    sock.sendmsg(buffers(), [], 0, address)


def _cover_sendmsg_ancdata(sock, smuggle, address):
    def ancdata():
        smuggle()
        yield from ()

    sock.sendmsg([b"cover"], ancdata(), 0, address)


def _cover_sendto_data(sock, smuggle, address):
    sock.sendto(SmugglingData(smuggle), address)


NEEDS_PY312_BUFFER = pytest.mark.skipif(sys.version_info < (3, 12),
                                        reason="__buffer__ in Python code needs 3.12")

COVERS = {
    "sendto-flags": _cover_sendto_flags,
    "sendmsg-flags": _cover_sendmsg_flags,
    "sendmsg-buffers": _cover_sendmsg_buffers,
    "sendmsg-ancdata": _cover_sendmsg_ancdata,
    "sendto-data-buffer": pytest.param(_cover_sendto_data, marks=NEEDS_PY312_BUFFER),
}


@pytest.mark.parametrize("cover", COVERS.values(), ids=COVERS.keys())
def test_b2_raw_send_inside_an_allowed_send_is_judged(net, cover):
    """A raw `_socket` sendto smuggled into an allowed send on its socket is denied; the cover goes."""
    bad, good = net.udp(DENIED), net.udp(ALLOWED)
    failcore.install(ALLOW_ONE)
    sock = net.client(socket.AF_INET, socket.SOCK_DGRAM)
    outcomes: list[str] = []
    cover(sock, lambda: _smuggle(sock, bad.port, outcomes), (ALLOWED, good.port))
    assert outcomes and set(outcomes) == {"network.public"}, outcomes
    assert not bad.heard()
    assert good.received() == b"cover"


# -- B3: a port that answers differently each time it is asked ------------------------


class FlipPort:
    """A port whose __index__ gives its answers in turn (an exception is raised), then the last forever."""

    def __init__(self, *answers: int | BaseException) -> None:
        self.answers, self.calls = answers, 0

    def __index__(self) -> int:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.mark.parametrize("path", ["socket", "_socket"])
def test_b3_port_that_fails_once_is_never_connected_unjudged(net, path):
    """A port whose first __index__ raises gives a TypeError, then a deny, never a connection."""
    listener = net.tcp(DENIED)
    failcore.install("net_safe")
    port = FlipPort(TypeError("not yet"), listener.port)
    sock = net.client() if path == "socket" else net.raw_client()
    connect = _connect_patched if path == "socket" else _connect_raw
    with pytest.raises(TypeError):
        connect(sock, (DENIED, port))
    assert port.calls >= 1
    again = "network.public" if path == "socket" else "guard.unpinned"
    assert denied(connect, sock, (DENIED, port)) == again
    assert not listener.heard()


@pytest.mark.parametrize("path, first, rule", [
    ("socket", "allowed", None),
    ("socket", "wrong", "network.ports"),
    ("_socket", "allowed", "guard.unpinned"),
    ("_socket", "wrong", "guard.unpinned"),
])
def test_b3_port_judged_is_the_port_connected(net, path, first, rule):
    """Under `ports = [allowed]`, a port that changes its answer never reaches the other port."""
    ok, wrong = net.tcp(ALLOWED), net.tcp(ALLOWED)
    failcore.install({"version": 1, "network": {"allow": [ALLOWED], "ports": [ok.port]}})
    order = (ok.port, wrong.port) if first == "allowed" else (wrong.port, ok.port)
    sock = net.client() if path == "socket" else net.raw_client()
    connect = _connect_patched if path == "socket" else _connect_raw
    if rule is None:
        connect(sock, (ALLOWED, FlipPort(*order)))
        assert sock.getpeername() == (ALLOWED, ok.port)
        assert ok.heard(HEARD)
    else:
        assert denied(connect, sock, (ALLOWED, FlipPort(*order))) == rule
        assert not ok.heard()
    assert not wrong.heard()


# -- B4: a str subclass host must not poison hostname rules --------------------------


class LyingName(str):
    """A host that says "localhost" to the idna codec and "127.0.0.3" to anything else."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"localhost" if encoding == "idna" else b"127.0.0.3"


def _poison_getaddrinfo(port: int) -> None:
    socket.getaddrinfo(LyingName("localhost"), port)


def _poison_gethostbyname(port: int) -> None:
    socket.gethostbyname(LyingName("localhost"))


def _poison_gethostbyname_ex(port: int) -> None:
    socket.gethostbyname_ex(LyingName("localhost"))


def _poison_create_connection(port: int) -> None:
    try:
        conn = socket.create_connection((LyingName("localhost"), port), timeout=HEARD)
    except OSError:
        return  # nothing of localhost's listens on that port
    with conn:
        assert conn.getpeername()[0] in ("127.0.0.1", "::1")


def _poison_raw_getaddrinfo(port: int) -> None:
    _socket.getaddrinfo(LyingName("localhost"), port)


POISONERS = {
    "getaddrinfo": (_poison_getaddrinfo, None),
    "gethostbyname": (_poison_gethostbyname, None),
    "gethostbyname_ex": (_poison_gethostbyname_ex, None),
    "create_connection": (_poison_create_connection, None),
    "_socket.getaddrinfo": (_poison_raw_getaddrinfo, "guard.unpinned"),
}


@pytest.mark.parametrize("how", POISONERS)
def test_b4_str_subclass_host_does_not_poison_hostname_rules(net, how):
    """A host whose encode() lies cannot make a hostname allow rule cover the address it really names."""
    target = net.tcp("127.0.0.3")
    failcore.install({"version": 1, "network": {"allow": ["localhost"]}})
    poison, rule = POISONERS[how]
    if rule is None:
        poison(target.port)
    else:
        assert denied(poison, target.port) == rule
    assert not target.heard()
    assert denied(net.client().connect, ("127.0.0.3", target.port)) == "network.public"
    assert not target.heard()


# -- B5: raw IP sockets write their own destination ------------------------------------


def _udp_in_ipv4(dst_port: int, payload: bytes = b"raw") -> bytes:
    """An IPv4 packet to DENIED:dst_port (the kernel fills in length and checksum)."""
    udp = struct.pack("!HHHH", 40000, dst_port, 8 + len(payload), 0) + payload
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64,
                         socket.IPPROTO_UDP, 0, socket.inet_aton(DENIED),
                         socket.inet_aton(DENIED))
    return header + udp


def _raw_sendto(sock, packet):
    sock.sendto(packet, (ALLOWED, 0))


def _raw_sendmsg(sock, packet):
    sock.sendmsg([packet], [], 0, (ALLOWED, 0))


def _raw_module_sendto(sock, packet):
    _socket.socket.sendto(sock, packet, (ALLOWED, 0))


def _raw_connect(sock, packet):
    sock.connect((ALLOWED, 0))
    sock.send(packet)


RAW_SENDS = {"sendto": _raw_sendto, "sendmsg": _raw_sendmsg,
             "_socket.sendto": _raw_module_sendto, "connect": _raw_connect}


@pytest.mark.parametrize("proto", [socket.IPPROTO_RAW, socket.IPPROTO_UDP],
                         ids=["IPPROTO_RAW", "IPPROTO_UDP+HDRINCL"])
@pytest.mark.parametrize("how", RAW_SENDS)
def test_b5_raw_socket_send_is_denied(net, proto, how):
    """A raw IP socket is denied as a family, whatever allowed address its send names."""
    bad = net.udp(DENIED)
    try:
        raw = net.client(socket.AF_INET, socket.SOCK_RAW, proto)
    except PermissionError as exc:
        pytest.skip(f"raw sockets need CAP_NET_RAW: {exc}")
    raw.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    packet = _udp_in_ipv4(bad.port)
    raw.sendto(packet, (ALLOWED, 0))  # unguarded: the header's destination wins
    assert bad.received().endswith(b"raw")
    failcore.install(ALLOW_ONE)
    assert denied(RAW_SENDS[how], raw, packet) == "network.family"
    assert not bad.heard()


# -- B2, still open: the skip token is the judged object, not (event, socket, object) ------



def _equal_objects(value: Any, start: Any) -> list[Any]:
    """Every distinct object equal to `value` in the locals of the frames from `start` outwards."""
    found: dict[int, Any] = {}
    frame = start
    while frame is not None:
        for local in list(frame.f_locals.values()):
            if type(local) is type(value) and local == value:
                found.setdefault(id(local), local)
        frame = frame.f_back
    return list(found.values())


class TokenGrabbingData:
    """sendto data whose buffer (3.12+), asked for inside the patched call, runs `grab` first."""

    def __init__(self, grab: Callable[[Any], None]) -> None:
        self.grab = grab

    def __buffer__(self, flags: int) -> memoryview:
        self.grab(sys._getframe(1))
        return memoryview(b"cover")


def _grab_by_profile(sock, grab, address):
    """A profile function sees the guard call the original sendto (token live) and runs `grab`."""
    def profile(frame, event, arg):
        if event == "c_call" and getattr(arg, "__self__", None) is sock \
                and getattr(arg, "__name__", "") == "sendto":
            grab(frame)

    sys.setprofile(profile)
    try:
        sock.sendto(b"cover", address)
    finally:
        sys.setprofile(None)


def _grab_by_buffer(sock, grab, address):
    sock.sendto(TokenGrabbingData(grab), address)


GRABS = {
    "profile": _grab_by_profile,
    "buffer": pytest.param(_grab_by_buffer, marks=NEEDS_PY312_BUFFER),
}


@pytest.mark.parametrize("leak", GRABS.values(), ids=GRABS.keys())
def test_b2_judged_address_is_no_pass_for_a_raw_ip_socket(net, leak):
    """The address judged for an allowed UDP sendto is no pass for a raw IP socket."""
    bad, good = net.udp(DENIED), net.udp(ALLOWED)
    try:
        raw = net.client(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    except PermissionError as exc:
        pytest.skip(f"raw sockets need CAP_NET_RAW: {exc}")
    packet = _udp_in_ipv4(bad.port)
    failcore.install(ALLOW_ONE)
    sock = net.client(socket.AF_INET, socket.SOCK_DGRAM)
    outcomes: list[str] = []

    def grab(frame: Any) -> None:
        if outcomes:
            return
        for candidate in _equal_objects((ALLOWED, good.port), frame):
            try:
                _socket.socket.sendto(raw, packet, candidate)
                outcomes.append("sent")
            except SecurityError as exc:
                outcomes.append(exc.decision.rule)

    leak(sock, grab, (ALLOWED, good.port))
    assert outcomes and set(outcomes) == {"network.family"}, outcomes
    assert not bad.heard()
    assert good.received() == b"cover"


def test_b2_judged_name_is_no_pass_for_an_af_unix_connect(net, tmp_path, monkeypatch):
    """The host judged for a lookup is no pass for a raw AF_UNIX connect to that relative path."""
    monkeypatch.chdir(tmp_path)
    listener = net.unix(tmp_path / "localhost")  # a socket whose relative path is a hostname
    failcore.install({"version": 1, "network": {"unix": "deny"}})
    outcomes: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event != "c_call" or arg is not _socket.getaddrinfo or outcomes:
            return
        for candidate in _equal_objects("localhost", frame):
            sock = _socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                _socket.socket.connect(sock, candidate)
                outcomes.append("connected")
            except SecurityError as exc:
                outcomes.append(exc.decision.rule)
            finally:
                sock.close()

    sys.setprofile(profile)
    try:
        socket.getaddrinfo("localhost", 80, socket.AF_INET)
    except SecurityError:
        pass  # localhost's records are not public; the lookup itself is what matters
    finally:
        sys.setprofile(None)
    assert outcomes and set(outcomes) == {"network.unix"}, outcomes
    assert not listener.heard()


# -- B6: AF_UNIX deny-system and symlinks ------------------------------------------


@pytest.fixture
def unix_sockets(net, tmp_path):
    """A system socket (basename docker.sock) and a harmless one, made before install()."""
    docker = net.unix(tmp_path / "sys" / "docker.sock")
    harmless = net.unix(tmp_path / "harmless.sock")
    return docker, harmless


def test_b6_symlink_swap_race_never_reaches_the_system_socket(net, tmp_path, unix_sockets):
    """A symlink flipped between a harmless socket and docker.sock never leads to docker.sock."""
    docker, harmless = unix_sockets
    swap = tmp_path / "swap"
    os.symlink(harmless.address, swap)
    failcore.install("net_safe")
    stop = threading.Event()

    def flip() -> None:
        spare = f"{swap}.tmp"
        while not stop.is_set():
            for target in (harmless.address, docker.address):
                try:
                    os.symlink(target, spare)
                    os.replace(spare, swap)
                except OSError:
                    pass

    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    reached = blocked = 0
    rules: set[str] = set()
    deadline = time.monotonic() + 1.5
    try:
        while time.monotonic() < deadline:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(str(swap))
                reached += 1
            except SecurityError as exc:
                blocked += 1
                rules.add(exc.decision.rule)
            except OSError:
                pass  # a full backlog
            finally:
                sock.close()
            harmless.drain()
    finally:
        stop.set()
        flipper.join(5)
    assert docker.drain() == 0
    assert reached > 0 and blocked > 0, (reached, blocked)
    assert rules == {"network.unix.system"}


@pytest.mark.parametrize("path, rule", [("socket", "network.unix.system"),
                                        ("_socket", "guard.unpinned")])
def test_b6_symlink_to_system_socket_is_denied(net, tmp_path, unix_sockets, path, rule):
    """A harmless-looking symlink to docker.sock is denied, and docker.sock hears nothing."""
    docker, _ = unix_sockets
    link = tmp_path / "innocent.sock"
    os.symlink(docker.address, link)
    failcore.install("net_safe")
    sock = net.client(socket.AF_UNIX) if path == "socket" else net.raw_client(socket.AF_UNIX)
    connect = _connect_patched if path == "socket" else _connect_raw
    assert denied(connect, sock, str(link)) == rule
    assert not docker.heard()


# -- B7: the audit-hook path denies what it cannot pin ---------------------------------


class TupleSub(tuple):
    """A tuple subclass (it could answer Python differently from the C code)."""


class StrSub(str):
    """A str subclass (it could encode differently from what it shows)."""


HOOK_INET = {
    "tuple-subclass": lambda port: TupleSub((ALLOWED, port)),
    "bytearray-host": lambda port: (bytearray(ALLOWED.encode()), port),
    "str-subclass-host": lambda port: (StrSub(ALLOWED), port),
    "int-subclass-port": lambda port: (ALLOWED, enum.IntEnum("Port", {"P": port}).P),
}
HOOK_POLICY = {"version": 1, "network": {"allow": [ALLOWED], "unix": "allow"}}


@pytest.mark.parametrize("op", ["connect", "sendto"])
@pytest.mark.parametrize("spelling", HOOK_INET)
def test_b7_unpinnable_inet_address_on_the_hook_path_is_denied(net, spelling, op):
    """On `_socket`, a subclassed or mutable address is denied as unpinned even for an allowed target."""
    if op == "connect":
        listener = net.tcp(ALLOWED)
        sock = net.raw_client()
        call = _connect_raw
    else:
        listener = net.udp(ALLOWED)
        sock = net.raw_client(socket.AF_INET, socket.SOCK_DGRAM)
        call = lambda s, a: _socket.socket.sendto(s, b"lab", a)  # noqa: E731
    failcore.install(HOOK_POLICY)
    assert denied(call, sock, HOOK_INET[spelling](listener.port)) == "guard.unpinned"
    assert not listener.heard()
    call(sock, (ALLOWED, listener.port))  # the same target, exactly spelled, is allowed
    assert listener.heard(HEARD)


@pytest.mark.parametrize("spelling", ["bytearray", "memoryview", "str-subclass"])
def test_b7_unpinnable_unix_path_on_the_hook_path_is_denied(net, tmp_path, spelling):
    """On `_socket`, a mutable or subclassed AF_UNIX path is unpinned, even where AF_UNIX is allowed."""
    listener = net.unix(tmp_path / "svc.sock")
    path = str(tmp_path / "svc.sock")
    address = {"bytearray": lambda: bytearray(os.fsencode(path)),
               "memoryview": lambda: memoryview(bytearray(os.fsencode(path))),
               "str-subclass": lambda: StrSub(path)}[spelling]()
    failcore.install(HOOK_POLICY)
    assert denied(_connect_raw, net.raw_client(socket.AF_UNIX), address) == "guard.unpinned"
    assert not listener.heard()
    _connect_raw(net.raw_client(socket.AF_UNIX), path)  # the exact str path is allowed
    assert listener.heard(HEARD)


def test_b7_hostname_on_the_hook_path_is_denied_numeric_patched_works(net, lab):
    """A hostname to `_socket` connect is unpinned; the patched class connects by name or number."""
    listener = net.tcp(ALLOWED)
    lab.write_hosts(netlab.HOSTS + f"{ALLOWED} allowed.lab.test\n")
    try:
        failcore.install(ALLOW_ONE)
        rule = denied(_connect_raw, net.raw_client(), ("allowed.lab.test", listener.port))
        assert rule == "guard.unpinned"
        assert not listener.heard()
        net.client().connect((ALLOWED, listener.port))
        assert listener.drain() == 1
        net.client().connect(("allowed.lab.test", listener.port))
        assert listener.drain() == 1
    finally:
        lab.write_hosts(netlab.HOSTS)


# -- W7: gethostbyaddr looks a name up forwards ----------------------------------------

INTERNAL_NAME = "internal.lab.test"  # 10.0.0.5 in the lab's hosts file


@pytest.mark.parametrize("how", [socket.gethostbyaddr, _socket.gethostbyaddr],
                         ids=["socket", "_socket"])
def test_w7_gethostbyaddr_of_a_denied_name_is_denied(lab, how):
    """gethostbyaddr(name) with the name in `deny` is denied by that rule before any lookup."""
    assert "10.0.0.5" in socket.gethostbyaddr(INTERNAL_NAME)[2]  # unguarded, it resolves
    failcore.install({"version": 1, "network": {"deny": [INTERNAL_NAME]}})
    assert denied(how, INTERNAL_NAME) == f"network.deny[{INTERNAL_NAME}]"
    assert lab.untouched("10.0.0.5")


# -- W8: listening and self lookups keep working -------------------------------------


def test_w8_passive_lookups_and_servers_work_under_net_safe(net):
    """Under net_safe, lookups for listening and servers on 127.0.0.1 and localhost keep working."""
    failcore.install("net_safe")
    assert socket.getaddrinfo(None, 0, flags=socket.AI_PASSIVE)
    assert socket.getaddrinfo("localhost", 0, flags=socket.AI_PASSIVE)
    server = net.keep(socket.create_server((DENIED, 0)))
    assert server.getsockname()[0] == DENIED

    async def start_and_stop() -> list[Any]:
        started = await asyncio.start_server(lambda r, w: None, "localhost", 0)
        names = [s.getsockname() for s in started.sockets]
        started.close()
        await started.wait_closed()
        return names

    assert asyncio.run(start_and_stop())


def test_w8_gethostbyname_localhost_answers_and_the_connect_is_denied(net):
    """gethostbyname("localhost") returns an address under net_safe; connecting to it is what is denied."""
    listener = net.tcp(DENIED)
    failcore.install("net_safe")
    address = socket.gethostbyname("localhost")
    assert address == DENIED
    assert denied(net.client().connect, (address, listener.port)) == "network.public"
    assert not listener.heard()


# -- R1/R2: undecodable names ----------------------------------------------------------

BAD_NAME_CALLS = {
    "gethostbyname": lambda host, port: socket.gethostbyname(host),
    "gethostbyname_ex": lambda host, port: socket.gethostbyname_ex(host),
    "gethostbyaddr": lambda host, port: socket.gethostbyaddr(host),
    "getaddrinfo": lambda host, port: socket.getaddrinfo(host, port),
    "create_connection": lambda host, port: socket.create_connection((host, port), timeout=HEARD),
    "_socket.getaddrinfo": lambda host, port: _socket.getaddrinfo(host, port),
    "_socket.gethostbyname": lambda host, port: _socket.gethostbyname(host),
}
BAD_NAMES = {"non-ascii-bytes": b"\xff", "non-ascii-bytes-2": b"\xffx", "space": "bad name"}


@pytest.mark.parametrize("host", BAD_NAMES.values(), ids=BAD_NAMES.keys())
@pytest.mark.parametrize("call", BAD_NAME_CALLS)
def test_r1_invalid_names_are_denied_in_enforce_mode(net, call, host):
    """An undecodable or invalid host is a SecurityError with rule network.invalid, never a raw ValueError."""
    listener = net.tcp(DENIED)
    failcore.install("net_safe")
    assert denied(BAD_NAME_CALLS[call], host, listener.port) == "network.invalid"
    assert not listener.heard()


@pytest.mark.parametrize("host", BAD_NAMES.values(), ids=BAD_NAMES.keys())
@pytest.mark.parametrize("call", BAD_NAME_CALLS)
def test_r2_invalid_names_fail_as_the_resolver_would_in_audit_mode(net, call, host):
    """In audit mode an invalid host fails with the resolver's OSError, not SecurityError or ValueError."""
    listener = net.tcp(DENIED)
    failcore.install("net_safe", mode="audit")
    with pytest.raises(OSError) as info:
        BAD_NAME_CALLS[call](host, listener.port)
    assert not isinstance(info.value, SecurityError), info.value
    assert not listener.heard()


# -- the patched path still works ----------------------------------------------------


def _patched_connect(address: Any) -> None:
    with socket.socket() as sock:
        sock.settimeout(HEARD)
        sock.connect(address)
        assert sock.getpeername()[0] == ALLOWED


def _exact_raw_connect(address: tuple) -> None:
    sock = _socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(HEARD)
        _socket.socket.connect(sock, address)
    finally:
        sock.close()


ALLOWED_CONNECTS = {
    "tuple": lambda port: _patched_connect((ALLOWED, port)),
    "bytes-host": lambda port: _patched_connect((ALLOWED.encode(), port)),
    "intenum-port": lambda port: _patched_connect((ALLOWED, enum.IntEnum("Port", {"P": port}).P)),
    "bytearray-host": lambda port: _patched_connect((bytearray(ALLOWED.encode()), port)),
    "create_connection": lambda port: socket.create_connection((ALLOWED, port), timeout=HEARD).close(),
    "_socket-exact": lambda port: _exact_raw_connect((ALLOWED, port)),
}


@pytest.mark.parametrize("how", ALLOWED_CONNECTS)
def test_allowed_connects_still_reach_the_listener(net, how):
    """An allowed connect to 127.0.0.2 by tuple, bytes host, IntEnum port and friends still connects."""
    listener = net.tcp(ALLOWED)
    failcore.install(ALLOW_ONE)
    ALLOWED_CONNECTS[how](listener.port)
    assert listener.heard(HEARD)


def test_n2_create_connection_name_covers_only_its_own_addresses(net):
    """create_connection's hostname opens the addresses it resolved to, not every
    connect made while it runs (here: from the timeout's __index__)."""
    bad = net.tcp("127.0.0.3")  # loopback, but not what localhost resolves to
    failcore.install({"version": 1, "network": {"allow": ["localhost"]}})
    outcomes = []

    class Timeout:
        def __index__(self):
            try:
                net.client().connect(("127.0.0.3", bad.port))
                outcomes.append("connected")
            except failcore.SecurityError as exc:
                outcomes.append(exc.decision.rule)
            return 1

    with pytest.raises(OSError):
        socket.create_connection(("localhost", 9), timeout=Timeout())
    assert outcomes and set(outcomes) == {"network.public"}
    assert not bad.heard()


def test_n1_raw_sockets_are_refused_when_created(net):
    """A raw socket is denied at creation, so fromfd cannot relabel it later."""
    failcore.install("net_safe")
    with pytest.raises(failcore.SecurityError) as info:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    assert info.value.decision.rule == "network.family"


def test_n3_a_hard_link_to_a_system_socket_is_denied(net, tmp_path):
    """A second name for a docker.sock (or the SSH agent) is still a system socket."""
    system = tmp_path / "sys"
    system.mkdir()
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(system / "docker.sock"))
    server.listen()
    os.link(system / "docker.sock", tmp_path / "innocent")
    failcore.install("net_safe")
    with pytest.raises(failcore.SecurityError) as info:
        net.client(socket.AF_UNIX).connect(str(tmp_path / "innocent"))
    assert info.value.decision.rule == "network.unix.system"
    server.settimeout(0.1)
    with pytest.raises(socket.timeout):
        server.accept()
    server.close()


def test_n8_connect_ex_returns_errno_for_a_missing_unix_socket(net, tmp_path):
    """connect_ex reports a missing path as an errno, as it would unguarded."""
    failcore.install("net_safe")
    assert net.client(socket.AF_UNIX).connect_ex(str(tmp_path / "missing.sock")) == errno.ENOENT


def test_n6_binding_a_denied_name_does_not_look_it_up(net):
    """bind() with a hostname is a lookup: a denied name is refused first."""
    failcore.install({"version": 1, "network": {"deny": ["*.exfil.example"]}})
    with pytest.raises(failcore.SecurityError) as info:
        net.client().bind(("secret.exfil.example", 0))
    assert info.value.decision.rule == "network.deny[*.exfil.example]"

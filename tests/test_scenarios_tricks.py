"""Scenarios: the tricks an attacker (or an unlucky URL) uses to get around a network guard.

Address spellings, redirects, DNS rebinding, multi-record names, references
captured before `install()`, `importlib.reload(socket)`, `_socket`, address
objects that show Python one value and the C socket code another, threads,
and audit mode. All of it runs in the network lab: each attack aims at a real
lab server and checks that server heard nothing.
"""

from __future__ import annotations

import _socket
import asyncio
import concurrent.futures
import importlib
import logging
import select
import socket
import ssl
import sys
import threading
import urllib.request
from urllib.parse import urlsplit

import httpx
import pytest

import failcore
from failcore import SecurityError
from tests import netlab
from tests.test_scenarios_clients import (
    CLIENTS,
    INTERNAL,
    METADATA,
    METADATA6,
    PRIVATE_RULES,
    PUBLIC,
    TIMEOUT,
    _no_proxies,  # noqa: F401  (autouse fixture: no proxies from the environment)
    assert_denied,
    assert_served,
    assert_untouched,
    security_error_in,
    url_for,
    via_aiohttp,
    via_create_connection,
    via_httpx_async,
    via_requests,
    via_socket_connect,
    via_urllib,
)

LOOPBACK = "127.0.0.1"
LOOPBACK6 = "::1"


def _raw_http(sock, host: str) -> str:
    sock.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("latin-1")


def via_socket_module_direct(url: str, ca: str | None = None) -> str:
    """`_socket.socket.connect` with the host exactly as written (the C code resolves it)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    sock = _socket.socket(_socket.AF_INET6 if ":" in host else _socket.AF_INET,
                          _socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect((host, parts.port or 80))
        return _raw_http(sock, host)
    finally:
        sock.close()


def via_httpx_following(url: str, ca: str | None = None) -> str:
    verify = ssl.create_default_context(cafile=ca) if ca else True
    return httpx.get(url, timeout=TIMEOUT, verify=verify, follow_redirects=True).text


def via_httpx_async_following(url: str, ca: str | None = None) -> str:
    async def fetch() -> str:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=True) as client:
            return (await client.get(url)).text
    return asyncio.run(fetch())


# -- address spellings -----------------------------------------------------------

# spelling -> the lab server the OS connects it to
SPELLINGS = {
    # 169.254.169.254, the metadata server
    "2852039166": METADATA,                   # decimal
    "0251.0376.0251.0376": METADATA,          # octal
    "0xa9fea9fe": METADATA,                   # hex
    "0xa9.0xfe.0xa9.0xfe": METADATA,          # dotted hex
    "0xa9.254.0251.0376": METADATA,           # mixed bases
    "169.254.43518": METADATA,                # short form a.b.c
    "169.16689662": METADATA,                 # short form a.b
    "::ffff:169.254.169.254": METADATA,       # IPv4-mapped IPv6
    "::ffff:a9fe:a9fe": METADATA,             # IPv4-mapped, hex
    "0:0:0:0:0:ffff:a9fe:a9fe": METADATA,     # IPv4-mapped, uncompressed
    "metadata.google.internal": METADATA,
    "METADATA.Google.INTERNAL": METADATA,
    "metadata.goog": METADATA,
    "metadata\u3002google\u3002internal": METADATA,  # ideographic full stops (IDNA)
    "fd00:ec2::254": METADATA6,               # AWS IPv6 metadata
    "fd00:ec2:0:0:0:0:0:254": METADATA6,
    # 127.0.0.1 and ::1
    "127.1": LOOPBACK,
    "127.0.1": LOOPBACK,
    "2130706433": LOOPBACK,
    "0x7f000001": LOOPBACK,
    "0177.0.0.1": LOOPBACK,
    "0x7f.1": LOOPBACK,
    "127.000.000.001": LOOPBACK,
    "0": LOOPBACK,                            # 0.0.0.0 reaches this host on Linux
    "0.0.0.0": LOOPBACK,
    "localhost": (LOOPBACK, LOOPBACK6),       # either record may be tried first
    "::ffff:127.0.0.1": LOOPBACK,
    "::1": LOOPBACK6,
    "0:0:0:0:0:0:0:1": LOOPBACK6,
    "::": LOOPBACK6,                          # :: reaches this host too
    # 10.0.0.5, a private server
    "10.5": INTERNAL,
    "10.0.5": INTERNAL,
    "167772165": INTERNAL,
    "012.0.0.5": INTERNAL,
    "0xa000005": INTERNAL,
    "0xa.0.0.5": INTERNAL,
    "::ffff:10.0.0.5": INTERNAL,
    "::ffff:a00:5": INTERNAL,
    "internal.lab.test": INTERNAL,
}
METADATA_NAMES = {"metadata.google.internal", "metadata.goog"}
SPELLING_CLIENTS = {
    "urllib": via_urllib,
    "requests": via_requests,
    "httpx": CLIENTS["httpx"],
    "socket.connect": via_socket_connect,
    "socket.create_connection": via_create_connection,
    "_socket": via_socket_module_direct,
}
# Spellings a client refuses by itself, before any connection (not failcore's doing).
CLIENT_REFUSES = {
    "urllib": {"metadata\u3002google\u3002internal"},
    "requests": {"metadata\u3002google\u3002internal"},
    "httpx": {"0251.0376.0251.0376", "0xa9.254.0251.0376", "0177.0.0.1",
              "127.000.000.001", "012.0.0.5", "metadata\u3002google\u3002internal"},
}


def servers_of(target: str | tuple[str, ...]) -> tuple[str, ...]:
    return target if isinstance(target, tuple) else (target,)


def assert_served_by_one(lab: netlab.Lab, body: str, servers: tuple[str, ...],
                         port: int = 80) -> None:
    """The canary came back from one of `servers` (a name with an IPv4 and an IPv6 record)."""
    assert netlab.CANARY in body, body[:200]
    server = next((s for s in servers if f"from {s}:{port}" in body), None)
    assert server is not None, body[:200]
    assert lab.server(server, port).touched()


def _is_name(spelling: str) -> bool:
    return any(c.isalpha() and c not in "abcdefx" for c in spelling.lower())


def _expected_rules(spelling: str, client: str, policy: str) -> set[str]:
    canonical = spelling.lower().replace("\u3002", ".")
    if canonical in METADATA_NAMES:
        return {"network.metadata"}
    if policy == "default-allow":
        return {"network.metadata"}
    if client == "_socket" and _is_name(spelling):
        return {"guard.unpinned"}  # the C code resolved it; failcore cannot see the answer
    return PRIVATE_RULES


SPELLING_CASES = [
    pytest.param(client, spelling, policy, id=f"{client}-{spelling}-{policy}")
    for spelling, server in SPELLINGS.items()
    for client in SPELLING_CLIENTS
    if spelling not in CLIENT_REFUSES.get(client, ())
    for policy in (("net_safe", "default-allow") if server in (METADATA, METADATA6)
                   else ("net_safe",))
]
POLICIES = {"net_safe": "net_safe",
            "default-allow": {"version": 1, "network": {"default": "allow"}}}


@pytest.mark.parametrize("client, spelling, policy", SPELLING_CASES)
def test_address_spelling_is_blocked(lab, client, spelling, policy):
    """Every spelling of a non-public or metadata address is denied; without failcore it connects."""
    fetch = SPELLING_CLIENTS[client]
    servers = servers_of(SPELLINGS[spelling])
    url = url_for(spelling)
    assert_served_by_one(lab, fetch(url), servers)  # a real attack: it connects unguarded
    lab.reset()
    failcore.install(POLICIES[policy])
    with pytest.raises(Exception) as excinfo:
        fetch(url)
    assert_denied(excinfo, _expected_rules(spelling, client, policy))
    assert_untouched(lab, *servers)


@pytest.mark.parametrize("host", [f"{METADATA}".encode(), bytearray(b"2852039166"),
                                  b"metadata.google.internal"])
def test_bytes_hosts_are_judged_like_text(lab, host):
    """A host given as bytes or bytearray is normalised and judged like the text form."""
    failcore.install("net_safe")
    with socket.socket() as sock, pytest.raises(SecurityError) as excinfo:
        sock.connect((host, 80))
    assert excinfo.value.decision.rule in PRIVATE_RULES
    assert_untouched(lab, METADATA)


# -- redirects -----------------------------------------------------------------

REDIRECT_CLIENTS = {
    "urllib": via_urllib,
    "requests": via_requests,
    "httpx": via_httpx_following,
    "httpx-async": via_httpx_async_following,
    "aiohttp": via_aiohttp,
}
REDIRECT_TARGETS = {  # where the allowed server sends the client -> the lab server there
    "metadata": (f"http://{METADATA}/", METADATA),
    "metadata-name": ("http://metadata.google.internal/", METADATA),
    "metadata-decimal": ("http://2852039166/", METADATA),
    "metadata-mapped": ("http://[::ffff:a9fe:a9fe]/", METADATA),
    "metadata-v6": (f"http://[{METADATA6}]/", METADATA6),
    "internal-8080": (f"http://{INTERNAL}:8080/", INTERNAL),
    "loopback": ("http://localhost/", (LOOPBACK, LOOPBACK6)),
}
# Redirects a client does not follow even unguarded: it refuses decimal IPv4,
# or percent-encodes the brackets in ?to=, which the lab server echoes as is.
REDIRECT_REFUSES = {
    "httpx": {"metadata-decimal"},
    "httpx-async": {"metadata-decimal"},
    "requests": {"metadata-mapped", "metadata-v6"},
    "aiohttp": {"metadata-decimal", "metadata-mapped", "metadata-v6"},
}
REDIRECT_CASES = [(client, target) for client in REDIRECT_CLIENTS for target in REDIRECT_TARGETS
                  if target not in REDIRECT_REFUSES.get(client, ())]


@pytest.mark.parametrize("client, target", REDIRECT_CASES)
def test_redirect_from_allowed_server_to_metadata_is_blocked(lab, client, target):
    """An allowed public server redirecting to a private address: the first hop lands, the second never does."""
    location, server = REDIRECT_TARGETS[target]
    servers = servers_of(server)
    fetch = REDIRECT_CLIENTS[client]
    url = f"http://public.lab.test/redirect?to={location}"
    assert_served_by_one(lab, fetch(url), servers, 8080 if "8080" in location else 80)
    lab.reset()
    failcore.install("net_safe")
    with pytest.raises(Exception) as excinfo:
        fetch(url)
    assert_denied(excinfo, PRIVATE_RULES)
    assert lab.server(PUBLIC).touched()
    assert lab.untouched(*servers), lab.touched_servers()
    assert lab.touched_servers() == [f"{PUBLIC}:80"]


def test_redirect_from_https_to_metadata_is_blocked(lab):
    """A verified HTTPS server redirecting to http://169.254.169.254/ does not get the client there."""
    failcore.install("net_safe")
    url = f"https://public.lab.test/redirect?to=http://{METADATA}/"
    with pytest.raises(Exception) as excinfo:
        via_requests(url, lab.ca_path)
    assert_denied(excinfo, PRIVATE_RULES)
    assert lab.server(PUBLIC, 443).touched()
    assert lab.untouched(METADATA)


# -- DNS rebinding ---------------------------------------------------------------

REBIND = "rebind.lab.test"


def rebind(lab: netlab.Lab, address: str) -> None:
    """Make rebind.lab.test resolve to `address` from now on."""
    lab.write_hosts(netlab.HOSTS.replace(f"{PUBLIC} {REBIND}", f"{address} {REBIND}"))


@pytest.mark.parametrize("to", [INTERNAL, METADATA])
@pytest.mark.parametrize("client", CLIENTS)
def test_dns_rebinding_after_validation_is_blocked(lab, client, to):
    """A name validated as public that then resolves to a private address is blocked at connect."""
    failcore.install("net_safe")
    first = socket.getaddrinfo(REBIND, 80, type=socket.SOCK_STREAM)
    assert {info[4][0] for info in first} == {PUBLIC}  # the application's check passes
    rebind(lab, to)
    with pytest.raises(Exception) as excinfo:
        CLIENTS[client](url_for(REBIND))
    assert_denied(excinfo, PRIVATE_RULES)
    assert_untouched(lab, to)


# An alternating DNS server: every lookup Python makes (an audited getaddrinfo,
# such as failcore's own) is answered with the public address, while the
# hosts file answers the C socket code's own, unaudited lookup with a private
# one. Audit hooks cannot be removed, so this one is added once and idles.
_alternating: dict[str, object] = {"lab": None}
_alternating_hook_added = False


def _answer_public_to_python_lookups(event: str, args: tuple) -> None:
    lab = _alternating["lab"]
    if lab is not None and event == "socket.getaddrinfo" and args[0] in (REBIND, REBIND.encode()):
        lab.write_hosts(netlab.HOSTS)  # type: ignore[attr-defined]


@pytest.fixture
def alternating_dns(lab):
    """rebind.lab.test answers 10.0.0.5 to the C code's own lookup and the public address to Python's."""
    global _alternating_hook_added
    if not _alternating_hook_added:
        sys.addaudithook(_answer_public_to_python_lookups)
        _alternating_hook_added = True
    rebind(lab, INTERNAL)
    _alternating["lab"] = lab
    yield lab
    _alternating["lab"] = None
    lab.reset()


def _connect_raw(address):
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(address)
    finally:
        sock.close()


def _sendto_raw(address):
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        sock.sendto(b"lab", address)
    finally:
        sock.close()


_CAPTURED_CONNECT = socket.socket.connect  # taken at import, before any install()


def _connect_captured(address):
    with socket.socket() as sock:
        sock.settimeout(TIMEOUT)
        _CAPTURED_CONNECT(sock, address)


BACKSTOP_CONNECTS = {  # name -> (connect or send, the lab port it aims at)
    "_socket-connect": (_connect_raw, 80),
    "_socket-sendto": (_sendto_raw, 53),
    "captured-connect": (_connect_captured, 80),
}


@pytest.mark.parametrize("how", BACKSTOP_CONNECTS)
def test_alternating_dns_cannot_pass_the_backstop(alternating_dns, how):
    """A name the C code resolves itself is not trusted: failcore's own lookup may get another answer."""
    send, port = BACKSTOP_CONNECTS[how]
    failcore.install("net_safe")
    with pytest.raises(SecurityError) as excinfo:
        send((REBIND, port))
    assert excinfo.value.decision.rule == "guard.unpinned"
    assert_untouched(alternating_dns, INTERNAL)


def test_alternating_dns_through_the_socket_module_connects_where_it_was_judged(alternating_dns):
    """Through socket.socket.connect a name is resolved once and the judged address is the one used."""
    failcore.install("net_safe")
    with socket.socket() as sock:
        sock.settimeout(TIMEOUT)
        sock.connect((REBIND, 80))
        assert sock.getpeername()[0] == PUBLIC
    assert alternating_dns.untouched(INTERNAL)


# -- names with several records --------------------------------------------------

MIXED = "mixed.lab.test"  # 10.0.0.5 first, then the public address


def test_multi_record_name_reaches_private_server_without_guard(lab):
    """Without failcore a client takes mixed.lab.test's first record, the private 10.0.0.5."""
    assert_served(lab, via_urllib(f"http://{MIXED}/"), INTERNAL)


@pytest.mark.parametrize("client", [c for c in CLIENTS if c != "_socket"])
def test_multi_record_name_goes_to_the_public_record(lab, client):
    """Under net_safe a name with a private and a public record is served by the public one."""
    failcore.install("net_safe")
    assert_served(lab, CLIENTS[client](url_for(MIXED)), PUBLIC)
    assert lab.untouched(INTERNAL), lab.touched_servers()


def test_multi_record_name_resolves_to_public_records_only(lab):
    """getaddrinfo and gethostbyname(_ex) drop the private record of a multi-record name."""
    failcore.install("net_safe")
    assert {info[4][0] for info in socket.getaddrinfo(MIXED, 80)} == {PUBLIC}
    assert {info[4][0] for info in socket.getaddrinfo(MIXED, None)} == {PUBLIC}
    assert socket.gethostbyname(MIXED) == PUBLIC
    assert socket.gethostbyname_ex(MIXED)[2] == [PUBLIC]
    assert lab.untouched()


def test_multi_record_name_through_raw_socket_module_is_denied(lab):
    """Unfiltered `_socket.getaddrinfo` hands out the private record; connecting to it is denied."""
    failcore.install("net_safe")
    records = _socket.getaddrinfo(MIXED, 80, _socket.AF_INET, _socket.SOCK_STREAM)
    assert records[0][4][0] == INTERNAL
    with pytest.raises(SecurityError) as excinfo:
        _connect_raw(records[0][4])
    assert excinfo.value.decision.rule == "network.public"
    assert_untouched(lab, INTERNAL)


def test_name_with_only_private_records_fails_resolution(lab):
    """When every record of a name is denied, resolving it raises the guard's error."""
    failcore.install("net_safe")
    with pytest.raises(SecurityError) as excinfo:
        socket.getaddrinfo("internal.lab.test", 80)
    assert excinfo.value.decision.rule == "network.public"


# -- references captured before install() -----------------------------------------


def _captured_class_connect(sock):
    connect = socket.socket.connect
    return lambda address: connect(sock, address)


def _captured_class_connect_ex(sock):
    connect_ex = socket.socket.connect_ex

    def call(address):
        err = connect_ex(sock, address)
        if err:
            raise OSError(err, "connect_ex failed")
    return call


def _captured_bound_method(sock):
    return sock.connect


def _base_class_connect(sock):
    return lambda address: _socket.socket.connect(sock, address)


def _subclass_calling_base(sock):
    class DirectSocket(socket.socket):
        def connect(self, address):
            return _socket.socket.connect(self, address)

    return lambda address: DirectSocket.connect(sock, address)


def _import_time_reference(sock):
    return lambda address: _CAPTURED_CONNECT(sock, address)


# Each takes a socket made before install() and returns a connect(address)
# built from references taken before install().
CAPTURED = {
    "class-connect": _captured_class_connect,
    "class-connect_ex": _captured_class_connect_ex,
    "bound-method": _captured_bound_method,
    "_socket-base-method": _base_class_connect,
    "subclass-calls-base": _subclass_calling_base,
    "module-import-time": _import_time_reference,
}
CAPTURED_TARGETS = [METADATA, "2852039166", "::ffff:a9fe:a9fe", INTERNAL]


@pytest.mark.parametrize("target", CAPTURED_TARGETS)
@pytest.mark.parametrize("how", CAPTURED)
def test_reference_captured_before_install_is_still_guarded(lab, how, target):
    """A connect method taken before install() (or straight from _socket) is judged by the backstop."""
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        connect = CAPTURED[how](sock)
        failcore.install("net_safe")
        with pytest.raises(SecurityError) as excinfo:
            connect((target, 80))
    assert excinfo.value.decision.rule in PRIVATE_RULES
    assert_untouched(lab, METADATA, INTERNAL)


def test_control_reference_captured_before_install_reaches_public_server(lab):
    """A captured connect to an allowed address still works."""
    connect = socket.socket.connect
    failcore.install("net_safe")
    with socket.socket() as sock:
        sock.settimeout(TIMEOUT)
        connect(sock, (PUBLIC, 80))
        assert_served(lab, _raw_http(sock, PUBLIC), PUBLIC)


def test_captured_resolvers_still_refuse_metadata_names(lab):
    """getaddrinfo and gethostbyname captured before install() still refuse metadata names."""
    getaddrinfo, gethostbyname = socket.getaddrinfo, socket.gethostbyname
    failcore.install("net_safe")
    for resolve in (getaddrinfo, _socket.getaddrinfo):
        with pytest.raises(SecurityError) as excinfo:
            resolve("metadata.google.internal", 80)
        assert excinfo.value.decision.rule == "network.metadata"
    for resolve in (gethostbyname, _socket.gethostbyname):
        with pytest.raises(SecurityError) as excinfo:
            resolve("metadata.google.internal")
        assert excinfo.value.decision.rule == "network.metadata"
    assert lab.untouched()


def test_captured_sendto_is_guarded(lab):
    """A UDP sendto captured before install() cannot reach a private address."""
    sendto = socket.socket.sendto
    failcore.install("net_safe")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            pytest.raises(SecurityError) as excinfo:
        sendto(sock, b"lab", (METADATA, 53))
    assert excinfo.value.decision.rule == "network.public"
    assert_untouched(lab, METADATA)


# -- importlib.reload(socket) -------------------------------------------------------


def _https_to_public(ca: str) -> str:
    context = ssl.create_default_context(cafile=ca)
    with urllib.request.urlopen("https://public.lab.test/", timeout=TIMEOUT,
                                context=context) as response:
        return response.read().decode()


@pytest.fixture
def socket_reload(lab):
    """Lets a test re-run `socket`'s code in place, past the import system (so past
    failcore's import gate, which patches a module importlib reloads); afterwards
    socket is reloaded unguarded and its objects restored."""
    saved = dict(vars(socket))
    yield lambda module: module.__spec__.loader.exec_module(module)
    failcore.uninstall()
    importlib.reload(socket)
    lab.reset()
    assert netlab.CANARY in _https_to_public(lab.ca_path)  # a reloaded socket + ssl work
    # Put back the original objects: ssl.SSLSocket and every `from socket import`
    # elsewhere still hold them.
    vars(socket).update(saved)
    assert ssl.SSLSocket.__bases__ == (socket.socket,)
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"ok")
        assert right.recv(2) == b"ok"
    lab.reset()
    assert netlab.CANARY in _https_to_public(lab.ca_path)
    lab.reset()


def test_importlib_reload_of_socket_is_patched_again(socket_reload, lab):
    """importlib.reload(socket) makes a new socket class: the import gate patches it."""
    failcore.install("net_safe")
    importlib.reload(socket)
    assert "connect" in vars(socket.socket)
    with pytest.raises(Exception) as excinfo:
        CLIENTS["urllib"](url_for(METADATA))
    assert_denied(excinfo, PRIVATE_RULES)
    assert_untouched(lab, METADATA)


@pytest.mark.parametrize("host", [METADATA, "internal.lab.test", METADATA6])
@pytest.mark.parametrize("client", CLIENTS)
def test_reloading_socket_after_install_does_not_unguard(socket_reload, lab, client, host):
    """After socket's code is re-run in place, dropping the patches, the audit hook
    still blocks every client."""
    failcore.install("net_safe")
    socket_reload(socket)
    assert "connect" not in vars(socket.socket)  # the reloaded class carries no patch
    if client.startswith("socket.connect") and host == "internal.lab.test":
        rules = {"guard.unpinned"}  # the C code resolves the name itself
    else:
        rules = PRIVATE_RULES
    with pytest.raises(Exception) as excinfo:
        CLIENTS[client](url_for(host))
    assert_denied(excinfo, rules)
    assert_untouched(lab, METADATA, INTERNAL, METADATA6)


@pytest.mark.parametrize("client", CLIENTS)
def test_control_reloaded_socket_still_reaches_public_server(socket_reload, lab, client):
    """After importlib.reload(socket) an allowed request still goes through, judged by the audit hook."""
    failcore.install("net_safe")
    socket_reload(socket)
    assert_served(lab, CLIENTS[client](url_for(PUBLIC)), PUBLIC)


def test_install_after_reload_guards_the_live_socket_class(socket_reload, lab):
    """install() after a reload patches the socket class now in use, so resolution is pinned again."""
    failcore.install("net_safe")
    socket_reload(socket)
    failcore.uninstall()
    failcore.install("net_safe")
    assert "connect" in vars(socket.socket)
    with socket.socket() as sock:
        sock.settimeout(TIMEOUT)
        sock.connect((MIXED, 80))  # the name is resolved by failcore and its public record used
        assert_served(lab, _raw_http(sock, MIXED), PUBLIC)
    assert lab.untouched(INTERNAL)
    with socket.socket() as sock, pytest.raises(SecurityError):
        sock.connect((METADATA, 80))
    assert lab.untouched(METADATA)


# -- _socket directly -----------------------------------------------------------------


@pytest.mark.parametrize("target", [METADATA, INTERNAL, "0xa9fea9fe", "10.5"])
def test_raw_socket_module_connect_ex_and_sendmsg_are_guarded(lab, target):
    """`_socket.socket.connect_ex` and `sendmsg` are judged by the backstop too."""
    failcore.install("net_safe")
    tcp = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    udp = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        with pytest.raises(SecurityError):
            tcp.connect_ex((target, 80))
        with pytest.raises(SecurityError):
            udp.sendmsg([b"lab"], [], 0, (target, 53))
    finally:
        tcp.close()
        udp.close()
    assert_untouched(lab, METADATA, INTERNAL)


def test_raw_socket_module_hostname_is_not_trusted(lab):
    """`_socket` connect with a hostname is denied: the address the C code resolved is out of sight."""
    failcore.install("net_safe")
    with pytest.raises(SecurityError) as excinfo:
        _connect_raw(("public.lab.test", 80))
    assert excinfo.value.decision.rule == "guard.unpinned"
    assert lab.untouched()


def test_control_raw_socket_module_to_public_address(lab):
    """`_socket` connect to an allowed numeric address works."""
    failcore.install("net_safe")
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect((PUBLIC, 80))
        assert_served(lab, _raw_http(sock, PUBLIC), PUBLIC)
    finally:
        sock.close()


# -- address objects that lie -------------------------------------------------------


class TupleShowingPublic(tuple):
    """A tuple whose Python-level items name the public address; its real items do not."""

    def _shown(self):
        return (PUBLIC, tuple.__getitem__(self, 1))

    def __getitem__(self, index):
        return self._shown()[index]

    def __iter__(self):
        return iter(self._shown())

    def __len__(self):
        return 2


class TextShowingPublic(str):
    """A str that shows the public address to every Python-level method."""

    def __str__(self):
        return PUBLIC

    def __contains__(self, item):
        return item in PUBLIC

    def split(self, *args, **kwargs):
        return PUBLIC.split(*args, **kwargs)

    def strip(self, *args):
        return PUBLIC.strip(*args)

    def lower(self):
        return PUBLIC

    def encode(self, *args, **kwargs):
        return PUBLIC.encode()


class TextEncodingPrivate(str):
    """A str that is the public address but encodes (as the C code asks it to) as 10.0.0.5."""

    def encode(self, *args, **kwargs):
        return INTERNAL.encode()


LYING_ADDRESSES = {  # port -> an address whose real target is 10.0.0.5
    "tuple-subclass": lambda port: TupleShowingPublic((INTERNAL, port)),
    "str-subclass": lambda port: (TextShowingPublic(INTERNAL), port),
    "str-subclass-encoding": lambda port: (TextEncodingPrivate(PUBLIC), port),
}


def _connect_patched(address):
    with socket.socket() as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(address)


def _sendto_patched(address):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"lab", address)


LYING_PATHS = {  # name -> (send or connect, the lab port it aims at)
    "socket.connect": (_connect_patched, 80),
    "socket.sendto": (_sendto_patched, 53),
    "_socket.connect": (_connect_raw, 80),
    "captured-connect": (_connect_captured, 80),
}
# Through the patched methods failcore hands the C code the exact text it
# judged, so this one honestly goes to the public address it shows.
GOES_WHERE_JUDGED = {("str-subclass-encoding", "socket.connect"),
                     ("str-subclass-encoding", "socket.sendto")}


@pytest.mark.parametrize("path", LYING_PATHS)
@pytest.mark.parametrize("address", LYING_ADDRESSES)
def test_address_object_that_lies_cannot_reach_private_server(lab, address, path):
    """An address whose Python-level view differs from what the C code reads never reaches 10.0.0.5."""
    send, port = LYING_PATHS[path]
    failcore.install("net_safe")
    if (address, path) in GOES_WHERE_JUDGED:
        send(LYING_ADDRESSES[address](port))
        assert lab.servers[(PUBLIC, port)].touched()
    else:
        with pytest.raises(SecurityError) as excinfo:
            send(LYING_ADDRESSES[address](port))
        assert excinfo.value.decision.rule in {"network.public", "guard.unpinned"}
    assert lab.untouched(INTERNAL), lab.touched_servers()


# -- AF_UNIX ---------------------------------------------------------------------------

# Abstract AF_UNIX names belong to the network namespace, so the lab can stand
# up a "system" socket (its name says docker) without touching the real /run.
SYSTEM_SOCKET = "\0failcore-lab-docker.sock"
APP_SOCKET = "\0failcore-lab-app.sock"


@pytest.fixture
def unix_servers(lab):
    """Listening abstract AF_UNIX sockets, made before install(): {name: socket}."""
    servers = {}
    for name in (SYSTEM_SOCKET, APP_SOCKET):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(name)
        server.listen(8)
        servers[name] = server
    yield servers
    for server in servers.values():
        server.close()


def _pending(server: socket.socket) -> bool:
    return bool(select.select([server], [], [], 0)[0])


class PathShowingApp(str):
    """A str that is the docker socket's name but hides "docker" from Python-level checks."""

    def __contains__(self, item):
        return item in APP_SOCKET

    def __str__(self):
        return APP_SOCKET

    def __fspath__(self):
        return APP_SOCKET


class BytesShowingApp(bytes):
    """Bytes naming the docker socket that decode (for Python) to the app socket's name."""

    def decode(self, *args, **kwargs):
        return APP_SOCKET

    def __bytes__(self):
        return APP_SOCKET.encode()


UNIX_SPELLINGS = {
    "str": lambda: SYSTEM_SOCKET,
    "bytes": lambda: SYSTEM_SOCKET.encode(),
    "bytearray": lambda: bytearray(SYSTEM_SOCKET.encode()),
    "memoryview": lambda: memoryview(SYSTEM_SOCKET.encode()),
    "str-subclass": lambda: PathShowingApp(SYSTEM_SOCKET),
    "bytes-subclass": lambda: BytesShowingApp(SYSTEM_SOCKET.encode()),
}
if sys.version_info >= (3, 12):
    class BufferAndPath:
        """Gives the C code (buffer protocol) one path and os.fspath another."""

        def __buffer__(self, flags):
            return memoryview(SYSTEM_SOCKET.encode())

        def __fspath__(self):
            return APP_SOCKET

    UNIX_SPELLINGS["buffer-with-fspath"] = BufferAndPath


def _unix_connect(address):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(address)


def _unix_connect_raw(address):
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(address)
    finally:
        sock.close()


@pytest.mark.parametrize("connect", [_unix_connect, _unix_connect_raw],
                         ids=["socket.connect", "_socket.connect"])
@pytest.mark.parametrize("spelling", UNIX_SPELLINGS)
def test_system_unix_socket_is_denied_however_named(unix_servers, spelling, connect):
    """A system AF_UNIX socket (docker) is denied under net_safe in every address form, lying ones too."""
    failcore.install("net_safe")
    with pytest.raises(SecurityError) as excinfo:
        connect(UNIX_SPELLINGS[spelling]())
    assert excinfo.value.decision.rule in {"network.unix.system", "guard.unpinned"}
    assert not _pending(unix_servers[SYSTEM_SOCKET])
    assert not _pending(unix_servers[APP_SOCKET])


@pytest.mark.parametrize("connect", [_unix_connect, _unix_connect_raw],
                         ids=["socket.connect", "_socket.connect"])
def test_control_application_unix_socket_is_allowed(unix_servers, connect):
    """An application's own AF_UNIX socket stays reachable under net_safe."""
    failcore.install("net_safe")
    connect(APP_SOCKET)
    assert _pending(unix_servers[APP_SOCKET])


# -- threads --------------------------------------------------------------------------


def test_attacks_and_controls_interleaved_across_threads(lab):
    """In a busy thread pool every attack fails and every allowed request succeeds."""
    failcore.install("net_safe")
    clients = [via_urllib, via_requests, CLIENTS["httpx"], via_socket_connect,
               via_create_connection]
    attacks = ["metadata.google.internal", METADATA, "2852039166", "internal.lab.test"]
    controls = ["public.lab.test", MIXED]
    jobs = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        for i in range(40):
            host = (controls if i % 2 else attacks)[i // 2 % (2 if i % 2 else 4)]
            jobs.append((host, pool.submit(clients[i % len(clients)], url_for(host))))
        for host, job in jobs:
            if host in controls:
                assert_served(lab, job.result(TIMEOUT), PUBLIC)
            else:
                assert security_error_in(job.exception(TIMEOUT)) is not None, host
    assert lab.untouched(METADATA, INTERNAL), lab.touched_servers()


def test_thread_started_before_install_is_guarded(lab):
    """A thread that was already running when install() was called is guarded too."""
    go = threading.Event()
    outcome: dict[str, BaseException | str] = {}

    def worker():
        go.wait(TIMEOUT)
        try:
            outcome["result"] = via_urllib(url_for(METADATA))
        except BaseException as exc:  # noqa: BLE001  (handed to the test thread)
            outcome["result"] = exc

    thread = threading.Thread(target=worker)
    thread.start()
    failcore.install("net_safe")
    go.set()
    thread.join(TIMEOUT)
    error = security_error_in(outcome["result"])  # type: ignore[arg-type]
    assert error is not None and error.decision.rule == "network.public"
    assert_untouched(lab, METADATA)


def test_asyncio_to_thread_and_executor_are_guarded(lab):
    """Blocking clients run from asyncio in worker threads are guarded."""
    failcore.install("net_safe")

    async def attack():
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            asyncio.to_thread(via_urllib, url_for(METADATA)),
            loop.run_in_executor(None, via_requests, url_for(INTERNAL)),
            asyncio.to_thread(via_urllib, url_for(PUBLIC)),
            return_exceptions=True)
        return results

    denied_metadata, denied_internal, allowed = asyncio.run(attack())
    assert security_error_in(denied_metadata) is not None
    assert security_error_in(denied_internal) is not None
    assert_served(lab, allowed, PUBLIC)
    assert lab.untouched(METADATA, INTERNAL)


# -- audit mode -------------------------------------------------------------------------


def _audit_rebinding(lab):
    socket.getaddrinfo(REBIND, 80)
    rebind(lab, METADATA)
    return via_requests(f"http://{REBIND}/")


def _audit_raw_socket(lab):
    sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect((METADATA, 80))
        return _raw_http(sock, METADATA)
    finally:
        sock.close()


AUDITED_ATTACKS = {  # attack -> (run it, the lab server it reaches)
    "urllib-metadata": (lambda lab: via_urllib(url_for(METADATA)), METADATA),
    "requests-metadata-name": (lambda lab: via_requests("http://metadata.google.internal/"),
                               METADATA),
    "httpx-async-decimal": (lambda lab: via_httpx_async("http://2852039166/"), METADATA),
    "redirect": (lambda lab: via_requests(f"http://public.lab.test/redirect?to=http://{METADATA}/"),
                 METADATA),
    "rebinding": (_audit_rebinding, METADATA),
    "_socket": (_audit_raw_socket, METADATA),
}


@pytest.mark.parametrize("attack", AUDITED_ATTACKS)
def test_audit_mode_lets_the_attack_through_and_logs_it(lab, caplog, attack):
    """In audit mode the request proceeds, the server is reached and a would-deny is logged."""
    run, server = AUDITED_ATTACKS[attack]
    failcore.install("net_safe", mode="audit")
    with caplog.at_level(logging.WARNING, logger="failcore"):
        assert_served(lab, run(lab), server)
    would_deny = [r for r in caplog.records
                  if r.name == "failcore" and getattr(r, "outcome", None) == "would-deny"]
    assert would_deny, caplog.text
    assert {r.rule for r in would_deny} <= PRIVATE_RULES


def test_audit_mode_keeps_every_record_and_udp(lab):
    """In audit mode resolution is not filtered and UDP to a private address is sent."""
    failcore.install("net_safe", mode="audit")
    assert {info[4][0] for info in socket.getaddrinfo(MIXED, 80)} == {PUBLIC, INTERNAL}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"lab", (METADATA, 53))
    assert lab.servers[(METADATA, 53)].touched()

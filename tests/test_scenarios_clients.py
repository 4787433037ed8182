"""Scenarios: attacks and controls through each client library, in the network lab.

Every attack aims at a real lab server and asserts three things: the client
failed with `SecurityError` (or the client library's wrapped form of it), the
decision names the expected rule, and the target server received nothing.
Every control reads the canary the lab server serves and checks the server saw
the request.

The client table (`CLIENTS`) and the helpers here are also used by
`test_scenarios_tricks.py`.
"""

from __future__ import annotations

import _socket
import asyncio
import concurrent.futures
import http.client
import multiprocessing
import multiprocessing.connection
import os
import socket
import ssl
import tempfile
import urllib.error
import urllib.request
from typing import Callable
from urllib.parse import urlsplit

import aiohttp
import httpx
import pytest
import requests

import failcore
from failcore import SecurityError
from tests import netlab

TIMEOUT = 5
METADATA = netlab.LAB_ADDRESSES["metadata"]      # 169.254.169.254
ECS = netlab.LAB_ADDRESSES["ecs"]                # 169.254.170.2
INTERNAL = netlab.LAB_ADDRESSES["internal"]      # 10.0.0.5
PUBLIC = netlab.PUBLIC                           # 93.184.215.14, "the internet"
METADATA6 = netlab.LAB_ADDRESSES_V6["metadata6"]  # fd00:ec2::254
PRIVATE_RULES = {"network.public", "network.metadata"}

# -- helpers shared with test_scenarios_tricks.py -------------------------------


def security_error_in(exc: BaseException | None) -> SecurityError | None:
    """The SecurityError somewhere in `exc`'s chain, as a client library wrapped it.

    Walks `__cause__`, `__context__`, `.reason` (urllib), `.os_error`
    (aiohttp), exception groups and exception arguments.
    """
    stack: list[object] = [exc]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if not isinstance(item, BaseException) or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, SecurityError):
            return item
        stack += [item.__cause__, item.__context__, getattr(item, "reason", None),
                  getattr(item, "os_error", None), *item.args,
                  *getattr(item, "exceptions", ())]
    return None


def assert_denied(excinfo: pytest.ExceptionInfo, rules: str | set[str]) -> SecurityError:
    """The client failed because failcore denied the operation under one of `rules`."""
    error = security_error_in(excinfo.value)
    assert error is not None, f"no SecurityError in {excinfo.value!r}"
    expected = {rules} if isinstance(rules, str) else rules
    assert error.decision.action is failcore.Action.DENY
    assert error.decision.rule in expected, error.decision
    return error


def assert_untouched(lab: netlab.Lab, *targets: str) -> None:
    """No lab server on `targets` saw a connection, nor did any other lab server."""
    assert lab.untouched(*targets), f"leaked to {lab.touched_servers()}"
    assert lab.untouched(), f"leaked to {lab.touched_servers()}"


def assert_served(lab: netlab.Lab, body: str, host: str, port: int = 80) -> None:
    """The request reached the lab server on `host:port` and its canary came back."""
    assert netlab.CANARY in body, body[:200]
    assert f"from {host}:{port}" in body, body[:200]
    assert lab.server(host, port).touched()


def url_for(host: str, port: int = 80, path: str = "/", scheme: str = "http") -> str:
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{scheme}://{host}:{port}{path}"


def tls_context(ca: str | None) -> ssl.SSLContext | None:
    return ssl.create_default_context(cafile=ca) if ca else None


def _target(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    return parts.hostname or "", parts.port or (443 if https else 80), https


def _http_over(sock, host: str, context: ssl.SSLContext | None) -> str:
    """Send one HTTP/1.0 GET over a connected socket and read the whole answer."""
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname=host)
    sock.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks).decode("latin-1")


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


# -- the clients: fetch(url, ca=None) -> response text ----------------------------


def via_urllib(url: str, ca: str | None = None) -> str:
    with urllib.request.urlopen(url, timeout=TIMEOUT, context=tls_context(ca)) as response:
        return response.read().decode()


def via_http_client(url: str, ca: str | None = None) -> str:
    host, port, https = _target(url)
    if https:
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(
            host, port, timeout=TIMEOUT, context=tls_context(ca))
    else:
        conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    try:
        conn.request("GET", urlsplit(url).path or "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def via_requests(url: str, ca: str | None = None) -> str:
    return requests.get(url, timeout=TIMEOUT, verify=ca or True).text


def via_httpx(url: str, ca: str | None = None) -> str:
    return httpx.get(url, timeout=TIMEOUT, verify=tls_context(ca) or True).text


def via_httpx_async(url: str, ca: str | None = None) -> str:
    async def fetch() -> str:
        async with httpx.AsyncClient(timeout=TIMEOUT, verify=tls_context(ca) or True) as client:
            return (await client.get(url)).text
    return asyncio.run(fetch())


def via_aiohttp(url: str, ca: str | None = None) -> str:
    async def fetch() -> str:
        timeout = aiohttp.ClientTimeout(total=TIMEOUT)
        extra = {"ssl": tls_context(ca)} if ca else {}
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.get(url, **extra) as response:
                return await response.text()
    return asyncio.run(fetch())


def via_asyncio_streams(url: str, ca: str | None = None) -> str:
    host, port, _ = _target(url)

    async def fetch() -> str:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls_context(ca)), TIMEOUT)
        writer.write(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        return data.decode("latin-1")
    return asyncio.run(fetch())


def via_socket_connect(url: str, ca: str | None = None) -> str:
    host, port, _ = _target(url)
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect((host, port))
        return _http_over(sock, host, tls_context(ca))
    finally:
        sock.close()


def via_socket_connect_ex(url: str, ca: str | None = None) -> str:
    host, port, _ = _target(url)
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.settimeout(TIMEOUT)
    try:
        err = sock.connect_ex((host, port))
        if err:
            raise OSError(err, os.strerror(err))
        return _http_over(sock, host, tls_context(ca))
    finally:
        sock.close()


def via_create_connection(url: str, ca: str | None = None) -> str:
    host, port, _ = _target(url)
    return _http_over(socket.create_connection((host, port), timeout=TIMEOUT), host,
                      tls_context(ca))


def via_raw_socket_module(url: str, ca: str | None = None) -> str:
    """`_socket` directly: resolve with `_socket.getaddrinfo`, connect the first record."""
    host, port, _ = _target(url)
    family, kind, proto, _, address = _socket.getaddrinfo(host, port, 0,
                                                          _socket.SOCK_STREAM)[0]
    sock = _socket.socket(family, kind, proto)
    sock.settimeout(TIMEOUT)
    try:
        sock.connect(address)
        if ca:
            return _http_over(socket.socket(fileno=sock.detach()), host, tls_context(ca))
        sock.sendall(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks).decode("latin-1")
    finally:
        sock.close()


def via_thread_pool(url: str, ca: str | None = None) -> str:
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return pool.submit(via_urllib, url, ca).result(timeout=TIMEOUT)


Fetch = Callable[..., str]
CLIENTS: dict[str, Fetch] = {
    "urllib": via_urllib,
    "http.client": via_http_client,
    "requests": via_requests,
    "httpx": via_httpx,
    "httpx-async": via_httpx_async,
    "aiohttp": via_aiohttp,
    "asyncio-streams": via_asyncio_streams,
    "socket.connect": via_socket_connect,
    "socket.connect_ex": via_socket_connect_ex,
    "socket.create_connection": via_create_connection,
    "_socket": via_raw_socket_module,
    "thread-pool": via_thread_pool,
}
URL_CLIENTS = {name: CLIENTS[name] for name in ("urllib", "requests", "httpx")}
SOCKET_CLIENTS = {name: CLIENTS[name] for name in
                  ("socket.connect", "socket.create_connection", "_socket")}


@pytest.fixture(autouse=True)
def _no_proxies(monkeypatch):
    """Client libraries must talk to the lab directly, never to a proxy from the environment."""
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)


# -- attacks through every client -------------------------------------------------

# (host in the URL, lab servers it reaches, rules that may deny it)
ATTACK_TARGETS = {
    "metadata-ip": (METADATA, (METADATA,), PRIVATE_RULES),
    "metadata-name": ("metadata.google.internal", (METADATA,), {"network.metadata"}),
    "internal-ip": (INTERNAL, (INTERNAL,), {"network.public"}),
    "internal-name": ("internal.lab.test", (INTERNAL,), {"network.public"}),
    "loopback-name": ("localhost", ("127.0.0.1", "::1"), {"network.public"}),
    "metadata-v6": (METADATA6, (METADATA6,), PRIVATE_RULES),
}


@pytest.mark.parametrize("target", ATTACK_TARGETS)
@pytest.mark.parametrize("client", CLIENTS)
def test_attack_on_non_public_target_is_blocked(lab, client, target):
    """Under net_safe every client fails with the guard's error and the server hears nothing."""
    host, servers, rules = ATTACK_TARGETS[target]
    failcore.install("net_safe")
    with pytest.raises(Exception) as excinfo:
        CLIENTS[client](url_for(host))
    assert_denied(excinfo, rules)
    assert_untouched(lab, *servers)


@pytest.mark.parametrize("client", CLIENTS)
def test_attack_on_private_tls_server_is_blocked(lab, client):
    """HTTPS to a private TLS server (10.0.0.5:443) is stopped before the handshake."""
    failcore.install("net_safe")
    with pytest.raises(Exception) as excinfo:
        CLIENTS[client](url_for(INTERNAL, 443, scheme="https"), lab.ca_path)
    assert_denied(excinfo, "network.public")
    assert_untouched(lab, INTERNAL)


# -- controls through every client ------------------------------------------------


@pytest.mark.parametrize("host", ["public.lab.test", PUBLIC])
@pytest.mark.parametrize("client", CLIENTS)
def test_control_public_http_works(lab, client, host):
    """Under net_safe every client reaches the public stand-in over plain HTTP."""
    failcore.install("net_safe")
    assert_served(lab, CLIENTS[client](url_for(host)), PUBLIC)


@pytest.mark.parametrize("policy", ["net_safe", "net_safe_strict"])
@pytest.mark.parametrize("host", ["public.lab.test", "api.github.com"])
@pytest.mark.parametrize("client", CLIENTS)
def test_control_verified_tls_to_allowed_host_works(lab, client, host, policy):
    """Certificate-verified HTTPS (pip-style) to an allowed host works under both presets."""
    failcore.install(policy)
    body = CLIENTS[client](url_for(host, 443, scheme="https"), lab.ca_path)
    assert_served(lab, body, PUBLIC, 443)


def test_control_pip_style_session_with_ca_bundle(lab):
    """A requests Session with a CA bundle, as pip uses it, fetches over TLS under net_safe_strict."""
    failcore.install("net_safe_strict")
    with requests.Session() as session:
        session.verify = lab.ca_path
        session.trust_env = False
        response = session.get("https://public.lab.test/", timeout=TIMEOUT)
    response.raise_for_status()
    assert_served(lab, response.text, PUBLIC, 443)


def test_strict_preset_blocks_public_host_on_other_ports(lab):
    """net_safe_strict limits ports to 80/443: the public server on 8080 is not reached."""
    failcore.install("net_safe_strict")
    with pytest.raises(Exception) as excinfo:
        via_urllib(url_for("public.lab.test", 8080))
    assert_denied(excinfo, "network.ports")
    assert not lab.server(PUBLIC, 8080).touched()


# -- UDP --------------------------------------------------------------------------


def _udp_sendto(host, port):
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        sock.sendto(b"lab", (host, port))


def _udp_sendto_flags(host, port):
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        sock.sendto(b"lab", 0, (host, port))


def _udp_sendmsg(host, port):
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        sock.sendmsg([b"lab"], [], 0, (host, port))


def _udp_connect_send(host, port):
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        sock.connect((host, port))
        sock.send(b"lab")


def _udp_raw_sendto(host, port):
    """`_socket` directly: resolve with `_socket.getaddrinfo`, send to the first record."""
    family, kind, proto, _, address = _socket.getaddrinfo(host, port, 0, _socket.SOCK_DGRAM)[0]
    sock = _socket.socket(family, kind, proto)
    try:
        sock.sendto(b"lab", address)
    finally:
        sock.close()


UDP_SENDERS = {
    "sendto": _udp_sendto,
    "sendto-flags": _udp_sendto_flags,
    "sendmsg": _udp_sendmsg,
    "connect-send": _udp_connect_send,
    "_socket-sendto": _udp_raw_sendto,
}
UDP_TARGETS = {  # host given to the socket, lab server that would receive it
    "metadata": (METADATA, METADATA),
    "internal": (INTERNAL, INTERNAL),
    "internal-name": ("internal.lab.test", INTERNAL),
    "loopback-v6": ("::1", "::1"),
    "metadata-v6": (METADATA6, METADATA6),
}


@pytest.mark.parametrize("target", UDP_TARGETS)
@pytest.mark.parametrize("sender", UDP_SENDERS)
def test_udp_datagram_to_private_address_is_blocked(lab, sender, target):
    """A UDP datagram to a private lab address is denied before it is sent."""
    host, server = UDP_TARGETS[target]
    failcore.install("net_safe")
    with pytest.raises(SecurityError) as excinfo:
        UDP_SENDERS[sender](host, 53)
    assert_denied(excinfo, "network.public")
    assert_untouched(lab, server)


@pytest.mark.parametrize("sender", UDP_SENDERS)
def test_control_udp_datagram_to_public_address_is_sent(lab, sender):
    """A UDP datagram to the public stand-in is delivered under net_safe."""
    failcore.install("net_safe")
    UDP_SENDERS[sender](PUBLIC, 53)
    assert lab.servers[(PUBLIC, 53)].touched()


# -- event loops and local IPC keep working ---------------------------------------


@pytest.mark.parametrize("policy", ["net_safe", "net_safe_strict"])
def test_control_asyncio_event_loop_runs(lab, policy):
    """Creating and running event loops (self-pipe socketpair, executor) works under the guard."""
    failcore.install(policy)

    async def work() -> int:
        await asyncio.sleep(0)
        return await asyncio.get_running_loop().run_in_executor(None, sum, [1, 2, 3])

    assert asyncio.run(work()) == 6
    loop = asyncio.new_event_loop()
    try:
        assert loop.run_until_complete(work()) == 6
    finally:
        loop.close()
    assert lab.untouched()


def test_control_multiprocessing_af_unix_listener_and_client(lab):
    """multiprocessing.connection over AF_UNIX (a temp path, not a system socket) works under net_safe."""
    failcore.install("net_safe")
    with multiprocessing.connection.Listener(family="AF_UNIX") as listener:
        assert os.path.realpath(listener.address).startswith(
            os.path.realpath(tempfile.gettempdir()))
        with multiprocessing.connection.Client(listener.address, family="AF_UNIX") as client:
            with listener.accept() as server_side:
                client.send({"ping": 1})
                assert server_side.recv() == {"ping": 1}
                server_side.send("pong")
                assert client.recv() == "pong"
    assert lab.untouched()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_control_multiprocessing_manager(lab):
    """A multiprocessing Manager (server process reached over AF_UNIX) works under net_safe."""
    failcore.install("net_safe")
    with multiprocessing.Manager() as manager:
        shared = manager.dict()
        shared["answer"] = 42
        assert dict(shared) == {"answer": 42}
    assert lab.untouched()


def test_strict_preset_denies_af_unix(lab):
    """net_safe_strict denies AF_UNIX connections, even to a harmless temp socket."""
    with multiprocessing.connection.Listener(family="AF_UNIX") as listener:
        failcore.install("net_safe_strict")
        with pytest.raises(SecurityError) as excinfo:
            multiprocessing.connection.Client(listener.address, family="AF_UNIX")
        assert excinfo.value.decision.rule == "network.unix"


# -- explicit rules -----------------------------------------------------------------


@pytest.mark.parametrize("client", CLIENTS)
def test_allow_rule_with_port_opens_exactly_that_port(lab, client):
    """allow ["10.0.0.5:8080"] opens 10.0.0.5:8080 and nothing else on 10.0.0.5."""
    failcore.install({"version": 1, "network": {"allow": [f"{INTERNAL}:8080"]}})
    assert_served(lab, CLIENTS[client](url_for(INTERNAL, 8080)), INTERNAL, 8080)
    lab.reset()
    with pytest.raises(Exception) as excinfo:
        CLIENTS[client](url_for(INTERNAL, 80))
    assert_denied(excinfo, "network.public")
    assert_untouched(lab, INTERNAL)


METADATA_POLICIES = {  # policies that look like they might open the metadata server
    "default-allow": {"network": {"default": "allow"}},
    "allow-link-local-range": {"network": {"allow": ["169.254.0.0/16"]}},
    "default-allow-and-range": {"network": {"default": "allow", "allow": ["169.254.0.0/16"]}},
    "allow-all-v4": {"network": {"allow": ["0.0.0.0/0"]}},
    "allow-metadata-hostname": {"network": {"allow": ["metadata.google.internal"]}},
    "allow-metadata-wildcard": {"network": {"default": "allow",
                                            "allow": ["*.google.internal"]}},
    "allow-other-metadata-ip": {"network": {"default": "allow",
                                            "allow": ["169.254.170.2"]}},
}


@pytest.mark.parametrize("host", [METADATA, "metadata.google.internal"])
@pytest.mark.parametrize("policy", METADATA_POLICIES)
def test_metadata_stays_denied_under_wide_rules(lab, policy, host):
    """A default of allow, a wider range or a hostname rule never opens 169.254.169.254."""
    failcore.install({"version": 1, **METADATA_POLICIES[policy]})
    with pytest.raises(Exception) as excinfo:
        via_urllib(url_for(host))
    assert_denied(excinfo, PRIVATE_RULES)
    assert_untouched(lab, METADATA)


def test_control_default_allow_still_reaches_private_hosts(lab):
    """Under default allow, a private non-metadata host is reachable while metadata is not."""
    failcore.install({"version": 1, "network": {"default": "allow"}})
    assert_served(lab, via_urllib(url_for(INTERNAL)), INTERNAL)


@pytest.mark.parametrize("rule", [METADATA, f"{METADATA}:80", f"[::ffff:{METADATA}]"])
@pytest.mark.parametrize("client", CLIENTS)
def test_allow_rule_naming_the_metadata_address_opens_it(lab, client, rule):
    """Only an allow rule naming 169.254.169.254 itself opens it, and only it."""
    failcore.install({"version": 1, "network": {"allow": [rule]}})
    assert_served(lab, CLIENTS[client](url_for(METADATA)), METADATA)
    lab.reset()
    with pytest.raises(Exception) as excinfo:
        CLIENTS[client](url_for(ECS))
    assert_denied(excinfo, PRIVATE_RULES)
    assert_untouched(lab, ECS)


def test_allow_rules_naming_address_and_hostname_open_the_metadata_name(lab):
    """With the address and the hostname both allowed, http://metadata.google.internal/ works."""
    failcore.install({"version": 1, "network": {"allow": [METADATA, "metadata.google.internal"]}})
    assert_served(lab, via_requests("http://metadata.google.internal/"), METADATA)

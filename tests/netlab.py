"""The network lab: a fresh network and mount namespace with lab hosts on `lo`.

The whole pytest run re-executes itself once under `unshare --net --mount`
(with `--map-root-user` when not root). Inside, before adding any address,
the lab checks that `lo` is the only interface, so no lab address can ever
be added to a real network. Lab servers log every connection they accept and
serve a canary secret, so a leaked request shows up in their log.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field

INSIDE_ENV = "FAILCORE_NETLAB_INSIDE"
REQUIRE_ENV = "FAILCORE_REQUIRE_NETLAB"

# A globally routable address stands in for "the internet"; inside the lab
# namespace it is just another address on lo, so nothing can leave.
PUBLIC = "93.184.215.14"
PUBLIC_2 = "198.41.0.4"
LAB_ADDRESSES = {
    "metadata": "169.254.169.254",
    "ecs": "169.254.170.2",
    "alibaba": "100.100.100.200",
    "azure": "168.63.129.16",
    "internal": "10.0.0.5",
    "cgnat": "100.64.0.5",
    "testnet": "203.0.113.10",
    "public": PUBLIC,
    "public2": PUBLIC_2,
}
LAB_ADDRESSES_V6 = {"metadata6": "fd00:ec2::254"}

HOSTS = f"""\
127.0.0.1 localhost
::1 localhost ip6-localhost
169.254.169.254 metadata.google.internal metadata.goog
10.0.0.5 internal.lab.test
203.0.113.10 testnet.lab.test
{PUBLIC} public.lab.test api.github.com
{PUBLIC_2} other.lab.test
10.0.0.5 mixed.lab.test
{PUBLIC} mixed.lab.test
{PUBLIC} rebind.lab.test
"""

CANARY = "FAILCORE-LAB-CANARY-SECRET"


def in_lab() -> bool:
    return os.environ.get(INSIDE_ENV) == "1"


def _unshare_command() -> list[str] | None:
    """The command that starts a fresh namespace here, or None if none can."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    command = [unshare, "--net", "--mount"]
    if os.geteuid() != 0:
        command.append("--map-root-user")
    probe = subprocess.run([*command, "true"], capture_output=True)
    return command if probe.returncode == 0 else None


def reexec_inside(config) -> str | None:
    """Restart this pytest run inside a fresh namespace; return why not, if not."""
    command = _unshare_command()
    if command is None:
        return "network namespaces are not permitted here (unshare --net failed)"
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        capture.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    env = dict(os.environ, **{INSIDE_ENV: "1"})
    argv = [sys.executable, *sys.orig_argv[1:]]
    os.execvpe(command[0], [*command, *argv], env)
    return None  # not reached


def assert_fresh_namespace() -> None:
    """Abort unless this is a new namespace whose only interface is lo."""
    interfaces = socket.if_nameindex()  # netlink: shows this namespace only
    if [name for _, name in interfaces] != ["lo"]:
        raise SystemExit(f"netlab: refusing to add lab addresses: interfaces are "
                         f"{interfaces}, expected only lo in a fresh namespace")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Connection:
    peer: tuple
    request: str = ""


class LabServer:
    """A TCP (optionally TLS) HTTP server that logs every connection it accepts.

    `touched()` is exact: it holds the accept lock and also counts a
    connection still waiting in the kernel's accept queue.
    """

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host, self.port, self.tls = host, port, tls
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.connections: list[Connection] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name=f"lab {host}:{port}")
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            readable, _, _ = select.select([self.sock], [], [], 0.2)
            if not readable:
                continue
            with self._lock:
                try:
                    conn, peer = self.sock.accept()
                except OSError:
                    continue
                record = Connection(peer)
                self.connections.append(record)
            threading.Thread(target=self._handle, args=(conn, record), daemon=True).start()

    def _handle(self, conn: socket.socket, record: Connection) -> None:
        try:
            conn.settimeout(5)
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            record.request = data.split(b"\r\n", 1)[0].decode("latin-1")
            conn.sendall(self._response(record.request))
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def _response(self, request_line: str) -> bytes:
        path = request_line.split(" ")[1] if request_line.count(" ") >= 2 else "/"
        if path.startswith("/redirect?to="):
            location = path.split("=", 1)[1]
            return (f"HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\n"
                    f"Connection: close\r\n\r\n").encode()
        body = f"{CANARY} from {self.host}:{self.port}".encode()
        return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)

    def touched(self) -> bool:
        with self._lock:
            pending, _, _ = select.select([self.sock], [], [], 0)
            return bool(self.connections) or bool(pending)

    def reset(self) -> None:
        with self._lock:
            self.connections.clear()


class UdpLabServer:
    """A UDP socket whose queue is the log: `touched()` if any datagram arrived."""

    def __init__(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host, self.port = host, port
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.setblocking(False)

    def touched(self) -> bool:
        return bool(select.select([self.sock], [], [], 0)[0])

    def close(self) -> None:
        self.sock.close()

    def reset(self) -> None:
        try:
            while True:
                self.sock.recv(65536)
        except BlockingIOError:
            pass


@dataclass
class Lab:
    """The running lab: servers by (address, port), the hosts file, TLS trust."""

    hosts_path: str
    ca_path: str
    servers: dict[tuple[str, int], LabServer | UdpLabServer] = field(default_factory=dict)

    def server(self, host: str, port: int = 80) -> LabServer:
        return self.servers[(host, port)]  # type: ignore[return-value]

    def untouched(self, *hosts: str) -> bool:
        """True when no lab server (or none on `hosts`) has seen a connection."""
        return not any(s.touched() for (h, _), s in self.servers.items()
                       if not hosts or h in hosts)

    def touched_servers(self) -> list[str]:
        return [f"{h}:{p}" for (h, p), s in self.servers.items() if s.touched()]

    def reset(self) -> None:
        for server in self.servers.values():
            server.reset()
        self.write_hosts(HOSTS)

    def close(self) -> None:
        for server in self.servers.values():
            server.close()

    def write_hosts(self, text: str) -> None:
        """Replace the lab's /etc/hosts (read again by every lookup)."""
        with open(self.hosts_path, "w") as f:
            f.write(text)


def start() -> Lab:
    """Set up the lab inside the fresh namespace and start its servers."""
    assert_fresh_namespace()
    _ip("link", "set", "lo", "up")
    for address in LAB_ADDRESSES.values():
        _ip("addr", "add", f"{address}/32", "dev", "lo")
    for address in LAB_ADDRESSES_V6.values():
        _ip("-6", "addr", "add", f"{address}/128", "dev", "lo", "nodad")
    workdir = tempfile.mkdtemp(prefix="failcore-netlab-")
    hosts_path = os.path.join(workdir, "hosts")
    with open(hosts_path, "w") as f:
        f.write(HOSTS)
    subprocess.run(["mount", "--bind", hosts_path, "/etc/hosts"], check=True)

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("public.lab.test", "api.github.com", PUBLIC)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_tls)
    ca_path = os.path.join(workdir, "ca.pem")
    ca.cert_pem.write_to_path(ca_path)

    lab = Lab(hosts_path=hosts_path, ca_path=ca_path)
    for address in [*LAB_ADDRESSES.values(), *LAB_ADDRESSES_V6.values(), "127.0.0.1", "::1"]:
        for port in (80, 8080):
            lab.servers[(address, port)] = LabServer(address, port)
        lab.servers[(address, 53)] = UdpLabServer(address, 53)
    for address in (PUBLIC, "10.0.0.5"):
        lab.servers[(address, 443)] = LabServer(address, 443, tls=server_tls)
    return lab

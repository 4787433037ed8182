"""Ready-made policies, as functions and by name.

Every preset (see `PRESET_NAMES`) can also be named in
`install("net_safe")`, `--policy net_safe` and `extends = "net_safe"`.
"""

from __future__ import annotations

from ._policy import Policy

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at interpreter start-up
    from typing import Any, Callable

__all__ = ["PRESET_NAMES", "agent_safe", "by_name", "fs_safe", "net_safe", "proc_safe"]

# Credentials an agent has no business reading.
SECRETS = [
    "~/.ssh", "~/.aws", "~/.kube", "~/.netrc", "~/.git-credentials", "~/.docker/config.json",
    "~/.gnupg", "~/.config/gcloud", "~/.azure", "~/.config/gh", "~/.pypirc", "~/.npmrc",
    "~/.terraform.d/credentials.tfrc.json", "~/.vault-token", "/etc/shadow", "/etc/gshadow",
    "/etc/sudoers", "/etc/sudoers.d", "/etc/ssh", "**/.env",
]
# What a Python program reads to run at all (strict mode reads nothing else).
SYSTEM_READS = [
    "{python}", "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random", "/dev/tty",
    "/dev/fd", "/proc/self", "/etc/localtime", "/usr/share/zoneinfo", "/etc/ssl",
    "/usr/lib/ssl", "/etc/ca-certificates", "/usr/share/ca-certificates", "/etc/pki",
    "/etc/hosts", "/etc/resolv.conf", "/etc/nsswitch.conf", "/etc/gai.conf", "/etc/host.conf",
    "/etc/services", "/etc/protocols", "/etc/mime.types", "/etc/passwd", "/etc/group",
    "/usr/lib/locale", "/usr/share/locale", "/etc/os-release",
]
# Devices anything may write to (subprocess.DEVNULL opens /dev/null read-write).
SYSTEM_WRITES = ["/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/pts"]
# Programs whose job is to move data over the network.
NETWORK_TOOLS = [
    "curl", "wget", "nc", "ncat", "netcat", "socat", "ssh", "scp", "sftp", "rsync", "telnet",
    "ftp", "tftp", "lftp", "aria2c", "nmap", "http", "https", "openssl", "dig", "nslookup",
    "host", "smbclient", "sshpass",
]


def _net_safe_config(strict: bool) -> dict[str, Any]:
    network: dict[str, Any] = {"default": "public", "unix": "deny-system"}
    if strict:
        network.update(ports=[80, 443], unix="deny")
    return {"network": network}


def net_safe(strict: bool = False) -> Policy:
    """Only public addresses; loopback, private, link-local and metadata are denied.

    `strict` also limits ports to 80 and 443 and denies AF_UNIX sockets.
    """
    name = "net_safe_strict" if strict else "net_safe"
    return Policy.from_dict(_net_safe_config(strict), source=f"preset {name}")


def _fs_safe_config(root: str | None, strict: bool) -> dict[str, Any]:
    workspace = root or "{cwd}"
    read = [workspace, "{tmp}", *SYSTEM_READS] if strict else ["/"]
    return {"filesystem": {"default": "deny", "read": read,
                           "write": [workspace, "{tmp}", *SYSTEM_WRITES], "deny": list(SECRETS)}}


def fs_safe(root: str | None = None, strict: bool = False) -> Policy:
    """Writes only under `root` (default: the working directory) and the temp
    directory; credentials (`~/.ssh`, `~/.aws`, ... see `SECRETS`) unreadable.

    `strict` also limits reads to `root`, temp, the interpreter's own files and
    what a Python program reads to run (`SYSTEM_READS`).
    """
    name = "fs_safe_strict" if strict else "fs_safe"
    return Policy.from_dict(_fs_safe_config(root, strict), source=f"preset {name}")


def _proc_safe_config() -> dict[str, Any]:
    return {"process": {"default": "allow", "deny": list(NETWORK_TOOLS), "shell": "deny"}}


def proc_safe() -> Policy:
    """No shell, and none of the programs that move data over the network."""
    return Policy.from_dict(_proc_safe_config(), source="preset proc_safe")


def _agent_safe_config() -> dict[str, Any]:
    return {**_net_safe_config(False), **_fs_safe_config(None, False), **_proc_safe_config()}


def agent_safe() -> Policy:
    """The policy for an agent: `net_safe`, `fs_safe` (the working directory as
    the workspace) and `proc_safe` together."""
    return Policy.from_dict(_agent_safe_config(), source="preset agent_safe")


_PRESETS: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[], Policy]]] = {
    "net_safe": (lambda: _net_safe_config(False), lambda: net_safe()),
    "net_safe_strict": (lambda: _net_safe_config(True), lambda: net_safe(strict=True)),
    "agent_safe": (_agent_safe_config, agent_safe),
    "fs_safe": (lambda: _fs_safe_config(None, False), lambda: fs_safe()),
    "fs_safe_strict": (lambda: _fs_safe_config(None, True), lambda: fs_safe(strict=True)),
    "proc_safe": (_proc_safe_config, proc_safe),
}
PRESET_NAMES = tuple(_PRESETS)


def by_name(name: str) -> Policy:
    """The preset called `name` (one of `PRESET_NAMES`)."""
    try:
        return _PRESETS[name][1]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESET_NAMES)}") from None


def preset_config(name: str) -> dict[str, Any]:
    """The preset's configuration in the TOML format, for `extends`."""
    return _PRESETS[name][0]()

"""The policy: loaded and validated once, compiled into an immutable object.

Evaluation is pure: no I/O, no logging, no globals. The guard, `failcore
explain` and the tests all ask the same methods.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping

from . import _addresses as addr
from ._errors import PolicyError
from ._files import FileRules
from ._processes import ProcessRules
from ._types import Action, Decision

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at interpreter start-up
    from typing import Any

    from ._processes import Locate

ALLOW, DENY = Action.ALLOW, Action.DENY

# The policy format, version 1: section -> key -> (kind, allowed values).
_SCHEMA: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = {
    "network": {
        "default": ("choice", ("public", "allow", "deny")),
        "allow": ("strings", ()),
        "deny": ("strings", ()),
        "ports": ("ports", ()),
        "unix": ("choice", ("allow", "deny", "deny-system")),
    },
    "filesystem": {
        "default": ("choice", ("allow", "deny")),
        "read": ("strings", ()),
        "write": ("strings", ()),
        "deny": ("strings", ()),
    },
    "process": {
        "default": ("choice", ("allow", "deny")),
        "allow": ("strings", ()),
        "deny": ("strings", ()),
        "shell": ("choice", ("allow", "deny")),
    },
}
_TOP_KEYS = ("version", "extends", *_SCHEMA)
_DEFAULTS = {"network": {"default": "public", "unix": "deny-system"}}

# AF_UNIX sockets of the system's daemons (docker, containerd, dbus, systemd);
# connecting to one is a way out of any sandbox.
_SYSTEM_SOCKET_DIRS = (
    "/run/", "/var/run/", "/var/lib/docker/", "/var/lib/containerd/", "/var/snap/lxd/",
    "/var/lib/lxd/", "/var/lib/incus/", "/var/lib/kubelet/", "/tmp/.X11-unix/",
)
_SYSTEM_ABSTRACT = ("containerd", "docker", "/tmp/.X11-unix/")
_SYSTEM_SOCKET_NAMES = frozenset({
    "docker.sock", "containerd.sock", "podman.sock", "crio.sock", "dockershim.sock",
})


def _fail(source: str, key: str, message: str) -> PolicyError:
    return PolicyError(f"{source}: {key}: {message}", source=source, key=key)


def _closest(word: str, choices: tuple[str, ...]) -> str:
    import difflib

    match = difflib.get_close_matches(word, choices, n=1)
    hint = f"; did you mean {match[0]!r}?" if match else ""
    return f"expected one of {', '.join(choices)}{hint}"


def _validate(data: Any, source: str) -> dict[str, Any]:
    """Check every key and value against the schema; return a plain copy."""
    if not isinstance(data, Mapping):
        raise _fail(source, "(top level)", f"expected a table, got {type(data).__name__}")
    clean: dict[str, Any] = {}
    for key, value in data.items():
        if key not in _TOP_KEYS:
            raise _fail(source, str(key), f"unknown key; {_closest(str(key), _TOP_KEYS)}")
        if key == "version":
            if value != 1 or isinstance(value, bool):
                raise _fail(source, key, f"got {value!r}, expected 1 (the only policy format)")
        elif key == "extends":
            from .presets import PRESET_NAMES
            if value not in PRESET_NAMES:
                raise _fail(source, key, f"got {value!r}, {_closest(str(value), PRESET_NAMES)}")
            clean[key] = value
        else:
            clean[key] = _validate_section(value, source, key)
    return clean


def _validate_section(section: Any, source: str, name: str) -> dict[str, Any]:
    if not isinstance(section, Mapping):
        raise _fail(source, name, f"expected a table, got {section!r}")
    schema = _SCHEMA[name]
    clean: dict[str, Any] = {}
    for key, value in section.items():
        where = f"{name}.{key}"
        if key not in schema:
            raise _fail(source, where, f"unknown key; {_closest(str(key), tuple(schema))}")
        kind, choices = schema[key]
        if kind == "choice":
            if value not in choices:
                raise _fail(source, where, f"got {value!r}, {_closest(str(value), choices)}")
        elif kind == "strings":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _fail(source, where, f"got {value!r}, expected a list of strings")
            value = list(value)
        elif kind == "ports":
            if not isinstance(value, list) or not all(
                isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535 for p in value
            ):
                raise _fail(source, where, f"got {value!r}, expected a list of port numbers 1-65535")
            value = list(value)
        clean[key] = value
    return clean


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`extends`: lists add to the preset's, single values replace it."""
    merged = {k: dict(v) for k, v in base.items() if isinstance(v, dict)}
    for section, values in override.items():
        if not isinstance(values, dict):
            continue
        target = merged.setdefault(section, {})
        for key, value in values.items():
            if isinstance(value, list) and key != "ports" and key in target:
                target[key] = list(dict.fromkeys([*target[key], *value]))
            else:
                target[key] = list(value) if isinstance(value, list) else value
    return merged


class _Frozen:
    """Attributes are set once, in __init__."""

    __slots__ = ()

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, name):
            raise AttributeError(f"{type(self).__name__} is immutable")
        object.__setattr__(self, name, value)


class _Rule(_Frozen):
    """An allow or deny entry. A port-specific allow rule also matches an
    unknown port (at resolve time: some port may be allowed); a port-specific
    deny rule matches only its port."""

    __slots__ = ("text", "port", "allow")

    def _port_matches(self, port: int | None) -> bool:
        return self.port is None or self.port == port or (self.allow and port is None)


class _AddressRule(_Rule):
    """One entry that names addresses: an IP, CIDR or range."""

    __slots__ = ("version", "first", "last", "exact")

    def __init__(self, text: str, version: int, first: int, last: int, port: int | None,
                 allow: bool) -> None:
        self.text, self.port, self.allow = text, port, allow
        self.version, self.first, self.last, self.exact = version, first, last, first == last

    def matches(self, ip: tuple[int, int], port: int | None) -> bool:
        return (ip[0] == self.version and self.first <= ip[1] <= self.last
                and self._port_matches(port))


class _HostRule(_Rule):
    """One entry that names hosts: `api.github.com` or `*.openai.com`.

    A wildcard matches names below the domain; in a deny rule it also matches
    the domain itself (denying more is the safe reading).
    """

    __slots__ = ("name", "wildcard")

    def __init__(self, text: str, name: str, wildcard: bool, port: int | None,
                 allow: bool) -> None:
        self.text, self.port, self.allow = text, port, allow
        self.name, self.wildcard = name, wildcard

    def matches(self, hostname: str, port: int | None) -> bool:
        if not self._port_matches(port):
            return False
        if self.wildcard:
            return hostname.endswith("." + self.name) or (not self.allow and hostname == self.name)
        return hostname == self.name


def _split_port(entry: str) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port`, `[v6]`, `v6` (no brackets: no port)."""
    if entry.startswith("["):
        host, sep, rest = entry[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError("a bracketed IPv6 entry is written [addr] or [addr]:port")
        return host, _port(rest[1:]) if rest else None
    if entry.count(":") == 1:
        host, _, port = entry.partition(":")
        return host, _port(port)
    return entry, None


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")
    return int(text)


_ADDRESS_LIKE = re.compile(r"[0-9.\- ]+\Z")


def _parse_rule(entry: str, allow: bool) -> list[_AddressRule | _HostRule]:
    host, port = _split_port(entry.strip())
    if not host:
        raise ValueError("the entry is empty")
    if ":" in host or "/" in host or _ADDRESS_LIKE.match(host):
        return [_address_rule(entry, host, port, allow)]
    wildcard = host.startswith("*.")
    name = host[2:] if wildcard else host
    if "*" in name:
        raise ValueError("a wildcard is only allowed as the whole first label: *.example.com")
    if addr.parse_inet_aton(name) is not None:
        raise ValueError("write IPv4 addresses in dotted decimal, e.g. 127.0.0.1")
    return [_HostRule(entry, n, wildcard, port, allow) for n in _spellings(name)]


def _spellings(name: str) -> list[str]:
    """The DNS names a Unicode hostname may be sent as.

    Python's codec is IDNA 2003 (`faß.de` is `fass.de`); requests and httpx
    use IDNA 2008 (`xn--fa-hia.de`). A rule covers both.
    """
    names = [addr.normalise_hostname(name)]
    if not name.isascii():
        try:
            import idna
            names.append(addr.normalise_hostname(idna.encode(name, uts46=True).decode()))
        except ImportError:
            pass
        except Exception as exc:  # idna.IDNAError and friends
            raise ValueError(f"hostname {name!r} is not valid IDNA 2008: {exc}") from None
    return list(dict.fromkeys(names))


def _address_rule(entry: str, host: str, port: int | None, allow: bool) -> _AddressRule:
    """An IP, CIDR or `first-last` range, parsed strictly by netaddr."""
    import netaddr  # only policies with address rules pay for importing it

    try:
        if "-" in host:
            first, _, last = host.partition("-")
            net = netaddr.IPRange(first.strip(), last.strip())
        else:
            net = netaddr.IPNetwork(host)
            if net.ip != net.network:
                raise ValueError(f"host bits are set; did you mean {net.cidr}?")
    except (netaddr.AddrFormatError, ValueError) as exc:
        if addr.parse_inet_aton(host) is not None:
            raise ValueError("write IPv4 addresses in dotted decimal, e.g. 127.0.0.1") from None
        raise ValueError(str(exc) or "not an IP address, CIDR or range") from None
    version, lo, hi = net.version, net.first, net.last
    if (version == 6 and addr.translates_ipv4(lo) and lo >> 32 == hi >> 32):
        # ::ffff:10.0.0.0/104 is 10.0.0.0/8: the IPv4 hosts are what is judged
        version, lo, hi = 4, lo & 0xFFFF_FFFF, hi & 0xFFFF_FFFF
    return _AddressRule(entry, version, lo, hi, port, allow)


class _NetworkRules(_Frozen):
    """The compiled `[network]` section."""

    __slots__ = ("default", "deny_addresses", "allow_addresses", "deny_hosts",
                 "allow_hosts", "ports", "unix", "agent_socket")

    def __init__(self, section: dict[str, Any], source: str) -> None:
        self.default: str = section["default"]
        self.unix: str = section["unix"]
        ports = section.get("ports")
        self.ports: frozenset[int] | None = frozenset(ports) if ports is not None else None
        compiled: dict[str, tuple[tuple[_AddressRule, ...], tuple[_HostRule, ...]]] = {}
        for key in ("allow", "deny"):
            rules: list[_AddressRule | _HostRule] = []
            for i, entry in enumerate(section.get(key, [])):
                try:
                    rules += _parse_rule(entry, allow=key == "allow")
                except ValueError as exc:
                    raise _fail(source, f"network.{key}[{i}]",
                                f"{entry!r}: {exc}; expected a hostname, *.domain, IP, CIDR "
                                f"or first-last range, optionally with :port") from None
            compiled[key] = (tuple(r for r in rules if isinstance(r, _AddressRule)),
                             tuple(r for r in rules if isinstance(r, _HostRule)))
        self.allow_addresses, self.allow_hosts = compiled["allow"]
        self.deny_addresses, self.deny_hosts = compiled["deny"]
        # The user's SSH agent holds their keys; it is a system socket here.
        agent = os.environ.get("SSH_AUTH_SOCK")
        self.agent_socket = os.path.realpath(agent) if agent else None


class Policy:
    """A compiled, immutable policy. Build it with `from_toml`, `from_dict` or a preset.

    The `check_*` methods are pure: the same input always gives the same
    `Decision`.
    """

    __slots__ = ("source", "_merged", "_canonical", "network", "filesystem", "process",
                 "_memo")

    def __init__(self, config: Mapping[str, Any], *, source: str = "<dict>") -> None:
        """Validate `config` (the TOML format as a mapping) and compile it."""
        clean = _validate(config, source)
        base: dict[str, Any] = {k: dict(v) for k, v in _DEFAULTS.items()}
        if "extends" in clean:
            from .presets import preset_config
            base = _merge(base, preset_config(clean["extends"]))
        merged = _merge(base, {k: v for k, v in clean.items() if k in _SCHEMA})
        self.source = source
        self._merged = merged  # never handed out: `config` gives copies
        self._canonical: str | None = None
        self.network = _NetworkRules(merged["network"], source)

        def fail(key: str, message: str) -> PolicyError:
            return _fail(source, key, message)

        self.filesystem = FileRules(merged.get("filesystem", {}), fail)
        self.process = ProcessRules(merged.get("process", {}), fail)
        self._memo: dict[tuple, Decision] = {}

    def __setattr__(self, name: str, value: Any) -> None:
        if hasattr(self, "_memo"):
            raise AttributeError("a compiled Policy is immutable")
        object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        return f"<Policy {self.source} {self.digest[:12]}>"

    @property
    def restricts(self) -> bool:
        """Whether this policy can deny anything at all."""
        net = self.network
        return (net.default != "allow" or bool(net.deny_addresses or net.deny_hosts)
                or net.unix != "allow" or self.filesystem.restricts or self.process.restricts)

    def _canonical_json(self) -> str:
        """The rules as canonical JSON (made when first asked: json and hashlib
        cost milliseconds at interpreter start-up, which needs neither)."""
        if self._canonical is None:
            import json

            text = json.dumps(self._merged, sort_keys=True, separators=(",", ":"))
            object.__setattr__(self, "_canonical", text)
        return self._canonical

    @property
    def digest(self) -> str:
        """SHA-256 of the rules after presets and `extends` (hex)."""
        import hashlib

        return hashlib.sha256(self._canonical_json().encode()).hexdigest()

    @property
    def config(self) -> dict[str, Any]:
        """The rules after presets and `extends`, in the TOML format (a fresh copy)."""
        import json

        return json.loads(self._canonical_json())

    # -- loading ---------------------------------------------------------

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any], *, source: str = "<dict>") -> Policy:
        """A policy from a mapping in the TOML format."""
        return cls(mapping, source=source)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> Policy:
        """A policy from a TOML file, or from `[tool.failcore]` in a pyproject.toml."""
        source = os.fspath(path)
        if sys.version_info >= (3, 11):
            import tomllib
        else:
            import tomli as tomllib
        try:
            with open(source, "rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise PolicyError(f"{source}: cannot read the policy file: {exc.strerror}",
                              source=source) from None
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"{source}: not valid TOML: {exc}", source=source) from None
        if os.path.basename(source) == "pyproject.toml":
            table = data.get("tool", {}).get("failcore")
            if table is None:
                raise _fail(source, "tool.failcore", "no [tool.failcore] table in this pyproject.toml")
            data = table
        return cls(data, source=source)

    @classmethod
    def load(cls, spec: Policy | Mapping[str, Any] | str | os.PathLike[str]) -> Policy:
        """A `Policy`, a preset name, a path to a TOML file, a mapping, or a
        string holding one JSON object in the policy format (inline)."""
        if isinstance(spec, Policy):
            return spec
        if isinstance(spec, Mapping):
            return cls.from_dict(spec)
        if isinstance(spec, (str, os.PathLike)):
            from .presets import PRESET_NAMES, by_name
            text = os.fspath(spec)
            if isinstance(spec, str) and text.lstrip().startswith("{"):
                return cls._from_json(text)
            if text in PRESET_NAMES:
                return by_name(text)
            if os.path.exists(text) or text.endswith(".toml"):
                return cls.from_toml(text)
            raise PolicyError(f"{text}: not a preset ({', '.join(PRESET_NAMES)}) "
                              f"and no such policy file", source=text)
        raise PolicyError(f"cannot make a policy from {type(spec).__name__}; expected a "
                          f"Policy, a preset name, a TOML path or a mapping")

    @classmethod
    def _from_json(cls, text: str) -> Policy:
        """An inline policy: the TOML format written as one JSON object (how a
        child receives its parent's policy in `FAILCORE_POLICY`)."""
        import json

        source = "inline JSON policy"
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise PolicyError(f"{source}: not valid JSON: {exc}", source=source) from None
        return cls(data, source=source)

    # -- network decisions -----------------------------------------------

    def check_resolve(self, hostname: str) -> Decision:
        """May this process look `hostname` up? Denied names never reach DNS."""
        key = ("net.resolve", hostname)
        decision = self._memo.get(key)
        if decision is None:
            if len(self._memo) > 8192:
                self._memo.clear()
            decision = self._memo[key] = self._judge_resolve(hostname)
        return decision

    def _judge_resolve(self, hostname: str) -> Decision:
        try:
            name = addr.normalise_hostname(hostname)
        except ValueError as exc:
            return Decision(DENY, "net.resolve", repr(hostname), "network.invalid",
                            f"The hostname {hostname!r} was blocked: {exc}.")
        net = self.network
        for rule in net.deny_hosts:
            if rule.matches(name, None):
                return Decision(DENY, "net.resolve", name, f"network.deny[{rule.text}]",
                                f"Resolving {name} is blocked by the deny rule {rule.text!r}.")
        if name in addr.METADATA_HOSTNAMES and not any(
            r.name == name and not r.wildcard for r in net.allow_hosts
        ):
            return Decision(DENY, "net.resolve", name, "network.metadata",
                            f"Resolving the cloud metadata hostname {name} is blocked.")
        return Decision(ALLOW, "net.resolve", name, "network.resolve",
                        f"Resolving {name} is allowed; each address is judged on connect.")

    def check_connect(self, host: str, port: int | None = None,
                      hostnames: tuple[str, ...] = (), *, op: str = "net.connect") -> Decision:
        """Judge a connection to an IP literal in any spelling (`0x7f.1`, `[::ffff:a.b.c.d]`).

        `hostnames` are the names this address was reached through; hostname
        rules apply to them. For a hostname, resolve it first and judge each
        address (see `failcore explain`).
        """
        ip = addr.parse_ip(host.strip("[]"))
        if ip is None:
            return Decision(DENY, op, _target(host, port), "network.invalid",
                            f"{host!r} is not an IP address; it was blocked.")
        return self.check_ip(ip, port, hostnames, op=op)

    def check_ip(self, ip: tuple[int, int], port: int | None,
                 hostnames: tuple[str, ...] = (), *, op: str = "net.connect") -> Decision:
        """Judge a connection to a parsed IP (`(version, int)`) on `port`."""
        key = (op, ip, port, hostnames)
        decision = self._memo.get(key)
        if decision is None:
            if len(self._memo) > 8192:
                self._memo.clear()
            decision = self._memo[key] = self._judge_ip(ip, port, hostnames, op)
        return decision

    def _judge_ip(self, ip: tuple[int, int], port: int | None,
                  hostnames: tuple[str, ...], op: str) -> Decision:
        """Precedence, first match wins:

        1. IPv6 that embeds IPv4: IPv6 deny rules, then each IPv4 it carries
           (and, for tunnel formats, the IPv6 address itself); any deny denies.
        2. A deny rule matching the address or one of its hostnames denies.
        3. An allow rule matching it, and the port list, allows; a cloud
           metadata address needs an allow rule naming that exact address.
        4. A port outside `ports` denies.
        5. The default: `public` allows public unicast only, `allow` allows
           all but metadata endpoints, `deny` denies.
        """
        if ip[0] == addr.V6:
            embedded = addr.embedded_ipv4(ip[1])
            if embedded:
                return self._judge_embedded(ip, embedded, port, hostnames, op)
        return self._judge_plain(ip, port, hostnames, op)

    def _judge_embedded(self, ip: tuple[int, int], embedded: tuple[int, ...],
                        port: int | None, hostnames: tuple[str, ...], op: str) -> Decision:
        target = _target(addr.format_ip(ip), port)
        for rule in self.network.deny_addresses:
            if rule.matches(ip, port):
                return _deny_rule(op, target, rule.text)
        verdicts = [self._judge_plain((addr.V4, v4), port, hostnames, op) for v4 in embedded]
        if not addr.translates_ipv4(ip[1]):  # a tunnel address is an IPv6 destination too
            itself = self._judge_plain(ip, port, hostnames, op)
            if not itself.allowed:
                return itself
        verdict = next((v for v in verdicts if not v.allowed), verdicts[-1])
        return Decision(verdict.action, op, target, verdict.rule,
                        f"{target} carries the IPv4 address {verdict.target}. {verdict.reason}")

    def _judge_plain(self, ip: tuple[int, int], port: int | None,
                     hostnames: tuple[str, ...], op: str) -> Decision:
        text = addr.format_ip(ip)
        target = _target(text, port)
        net = self.network
        for rule in net.deny_addresses:
            if rule.matches(ip, port):
                return _deny_rule(op, target, rule.text)
        for rule in net.deny_hosts:
            for name in hostnames:
                if rule.matches(name, port):
                    return _deny_rule(op, target, rule.text, name)
        metadata = ip in addr.METADATA
        port_listed = net.ports is None or port is None or port in net.ports
        for rule in net.allow_addresses:
            if (rule.matches(ip, port) and (rule.exact or not metadata)
                    and (port_listed or rule.port is not None)):
                return _allow_rule(op, target, rule.text)
        if not metadata:
            for rule in net.allow_hosts:
                for name in hostnames:
                    if rule.matches(name, port) and (port_listed or rule.port is not None):
                        return _allow_rule(op, target, rule.text, name)
        if not port_listed:
            allowed = ", ".join(str(p) for p in sorted(net.ports or ()))
            return Decision(DENY, op, target, "network.ports",
                            f"Port {port} is not one of the allowed ports ({allowed}).")
        if net.default == "public":
            cidr = addr.non_public_range(ip)
            if cidr is not None:
                return Decision(DENY, op, target, "network.public", _PRIVATE_REASONS[cidr])
        if metadata:
            return Decision(DENY, op, target, "network.metadata",
                            f"Access to cloud metadata endpoint {text} is blocked.")
        if net.default == "deny":
            return Decision(DENY, op, target, "network.default",
                            f"Access to {target} is blocked: no allow rule matches and "
                            f"the network default is deny.")
        if net.default == "public":
            return Decision(ALLOW, op, target, "network.public",
                            f"{text} is a public address.")
        return Decision(ALLOW, op, target, "network.default",
                        f"The network default allows {target}.")

    # -- files and processes -------------------------------------------------

    def check_path(self, op: str, path: str) -> Decision:
        """Judge a file operation (`fs.read`, `fs.write`, `fs.delete`, `fs.list`,
        `fs.metadata`, `fs.link`, `fs.symlink`, `fs.rename`) on `path`, an absolute
        path with symlinks already resolved."""
        return self.filesystem.check(op, path)

    def check_exec(self, argv: list[str], locate: Locate, *, shell: bool = False) -> Decision:
        """Judge starting `argv`; `locate(name)` gives its PATH location and real path."""
        return self.process.check(argv, locate, shell=shell)

    def check_unix(self, path: str | bytes, *, op: str = "net.connect") -> Decision:
        """Judge an AF_UNIX address: a real path (symlinks already resolved by the
        caller: the guard judges the inode it connects to), or an abstract name."""
        net = self.network
        if isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        abstract = path.startswith("\0")
        shown = "@" + path[1:] if abstract else path
        if net.unix == "allow":
            return Decision(ALLOW, op, shown, "network.unix",
                            "AF_UNIX sockets are allowed by this policy.")
        if net.unix == "deny":
            return Decision(DENY, op, shown, "network.unix",
                            f"Access to the AF_UNIX socket {shown} is blocked: "
                            f"this policy denies AF_UNIX sockets.")
        if abstract:
            system = any(marker in path for marker in _SYSTEM_ABSTRACT)
            real = shown
        else:
            real = path
            system = (real.startswith(_SYSTEM_SOCKET_DIRS)
                      or os.path.basename(real) in _SYSTEM_SOCKET_NAMES
                      or real == net.agent_socket)
        if system:
            return Decision(DENY, op, shown, "network.unix.system",
                            f"Access to the system socket {real} is blocked.")
        return Decision(ALLOW, op, shown, "network.unix",
                        f"{shown} is not a system socket.")

    def check_family(self, family: int, *, raw: bool = False,
                     op: str = "net.connect") -> Decision:
        """Families other than IPv4, IPv6 and AF_UNIX, and raw IP sockets (which
        write their own destination into the packet), are denied unless the
        default is allow."""
        import socket
        try:
            name = socket.AddressFamily(family).name
        except ValueError:
            name = str(family)
        if raw:
            name = f"raw {name}"
        if self.network.default == "allow":
            return Decision(ALLOW, op, name, "network.family",
                            f"Sockets of family {name} are allowed by the network default.")
        why = ("they choose their own destination" if raw
               else "this policy only judges IPv4, IPv6 and AF_UNIX")
        return Decision(DENY, op, name, "network.family",
                        f"Sockets of family {name} are blocked: {why}.")


_PRIVATE_REASONS = {c: f"Access to private IP range {c} is blocked." for c in addr.NON_PUBLIC_CIDRS}


def _target(host: str, port: int | None) -> str:
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return host if port is None else f"{host}:{port}"


def split_target(target: str) -> tuple[str, int | None] | None:
    """What `_target` joined: `1.2.3.4:443`, `[::1]:443`, `1.2.3.4`, `[::1]` give
    host and port; None when `target` is not one of those."""
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif target.count(":") == 1:
        host, _, port = target.partition(":")
    else:
        host, port = target, ""
    if port and not port.isdigit():
        return None
    return host, int(port) if port else None


def _deny_rule(op: str, target: str, rule: str, name: str | None = None) -> Decision:
    what = f"{name} ({target})" if name else target
    return Decision(DENY, op, target, f"network.deny[{rule}]",
                    f"Access to {what} is blocked by the deny rule {rule!r}.")


def _allow_rule(op: str, target: str, rule: str, name: str | None = None) -> Decision:
    what = f"{name} ({target})" if name else target
    return Decision(ALLOW, op, target, f"network.allow[{rule}]",
                    f"Access to {what} is allowed by the rule {rule!r}.")

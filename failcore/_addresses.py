"""Address and hostname normalisation, and the built-in non-public tables.

An IP is handled as `(version, int)`. Everything here is pure and cheap: the
tables are flattened at import into sorted, non-overlapping intervals so a
lookup is one bisect.
"""

from __future__ import annotations

import bisect
import re
import _socket as socket  # the C module: `socket` costs milliseconds at start-up
from functools import lru_cache

V4 = 4
V6 = 6
_V4_MAX = (1 << 32) - 1
_V6_MAX = (1 << 128) - 1

# Not globally routable unicast. Explicit on purpose: ipaddress.is_private and
# is_global change between Python versions. IPv6 outside 2000::/3 is not
# unicast-global at all, hence the three catch-all entries.
NON_PUBLIC_CIDRS = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8",
    "169.254.0.0/16", "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24",
    "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "100::/64", "2001::/23", "2001:db8::/32",
    "3fff::/20", "5f00::/16", "64:ff9b:1::/48", "fc00::/7", "fe80::/10",
    "fec0::/10", "ff00::/8", "::/3", "4000::/2", "8000::/1",
)

# Cloud metadata services. They stay denied unless an allow rule names the
# address (or hostname) itself.
METADATA_IPS = (
    "169.254.169.254", "fd00:ec2::254",            # AWS, and most clouds' IMDS
    "169.254.170.2", "169.254.170.23", "fd00:ec2::23",  # ECS task, EKS pod identity
    "fd20:ce::254",                                # GCE over IPv6
    "100.100.100.200",                             # Alibaba
    "168.63.129.16",                               # Azure wire server (public!)
    "192.0.0.192",                                 # Oracle
    "169.254.0.23",                                # Tencent
    "fe80::a9fe:a9fe",                             # OpenStack over IPv6
)
METADATA_HOSTNAMES = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata",
    "instance-data", "instance-data.ec2.internal", "metadata.tencentyun.com",
})


def parse_cidr(text: str) -> tuple[int, int, int, int]:
    """`"a.b.c.d/n"` or `"x::/n"` as `(version, first, last, prefixlen)`.

    Raises ValueError when the text is not a network with its host bits clear.
    """
    addr, _, plen_text = text.partition("/")
    version, value = _parse_exact(addr)
    bits = 32 if version == V4 else 128
    plen = int(plen_text) if plen_text else bits
    if not 0 <= plen <= bits:
        raise ValueError(f"prefix length {plen} out of range for IPv{version}")
    host_mask = (1 << (bits - plen)) - 1
    if value & host_mask:
        raise ValueError("host bits set")
    return version, value, value | host_mask, plen


def _parse_exact(text: str) -> tuple[int, int]:
    if ":" in text:
        return V6, int.from_bytes(socket.inet_pton(socket.AF_INET6, text), "big")
    return V4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")


class IntervalTable:
    """Labelled address ranges; `find` returns the most specific label or None."""

    __slots__ = ("_starts", "_spans")

    def __init__(self, ranges: list[tuple[int, int, int, str]]) -> None:
        """`ranges` are `(first, last, specificity, label)`; they may nest."""
        edges = sorted({r[0] for r in ranges} | {r[1] + 1 for r in ranges})
        spans: list[tuple[int, int, str]] = []
        for lo, hi in zip(edges, edges[1:]):
            covering = [r for r in ranges if r[0] <= lo and hi - 1 <= r[1]]
            if not covering:
                continue
            label = max(covering, key=lambda r: r[2])[3]
            if spans and spans[-1][2] == label and spans[-1][1] == lo - 1:
                spans[-1] = (spans[-1][0], hi - 1, label)
            else:
                spans.append((lo, hi - 1, label))
        self._starts = [s[0] for s in spans]
        self._spans = spans

    def find(self, value: int) -> str | None:
        i = bisect.bisect_right(self._starts, value) - 1
        if i >= 0:
            lo, hi, label = self._spans[i]
            if value <= hi:
                return label
        return None


def _table(cidrs: tuple[str, ...]) -> dict[int, IntervalTable]:
    by_version: dict[int, list[tuple[int, int, int, str]]] = {V4: [], V6: []}
    for cidr in cidrs:
        version, first, last, plen = parse_cidr(cidr)
        by_version[version].append((first, last, plen, cidr))
    return {v: IntervalTable(r) for v, r in by_version.items()}


NON_PUBLIC = _table(NON_PUBLIC_CIDRS)
METADATA = frozenset(_parse_exact(a) for a in METADATA_IPS)


def non_public_range(ip: tuple[int, int]) -> str | None:
    """The non-public CIDR that holds `ip`, or None for public unicast."""
    return NON_PUBLIC[ip[0]].find(ip[1])


_INET_ATON_PART = re.compile(r"(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\Z")


def parse_inet_aton(text: str) -> int | None:
    """IPv4 in any spelling `inet_aton` accepts, as an int, else None.

    One to four parts, each decimal, octal (leading 0) or hex (0x); the last
    part fills the remaining bytes: `2130706433`, `0x7f.1`, `0177.0.0.01`.
    """
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for part in parts:
        if not _INET_ATON_PART.match(part):
            return None
        if part[:2] in ("0x", "0X"):
            values.append(int(part[2:], 16))
        elif part.startswith("0"):
            values.append(int(part, 8))
        else:
            values.append(int(part))
    *head, last = values
    if any(v > 255 for v in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    result = last
    for i, v in enumerate(head):
        result |= v << (8 * (3 - i))
    return result


@lru_cache(maxsize=4096)
def parse_ip(text: str) -> tuple[int, int] | None:
    """An IP literal as `(version, int)`, or None when `text` is not one.

    Accepts every IPv4 spelling `inet_aton` does and IPv6 with or without a
    zone id (`fe80::1%eth0`). Brackets are not part of an address.
    """
    if ":" in text:
        addr = text.split("%", 1)[0]
        try:
            return V6, int.from_bytes(socket.inet_pton(socket.AF_INET6, addr), "big")
        except (OSError, ValueError):
            return None
    try:  # the common dotted quad, without the regular expressions
        return V4, int.from_bytes(socket.inet_pton(socket.AF_INET, text), "big")
    except (OSError, ValueError):
        pass
    value = parse_inet_aton(text)
    return None if value is None else (V4, value)


def _bits(n: int, start: int, stop: int) -> int:
    """Bits [start, stop) of a 128-bit int, counted from the most significant."""
    return (n >> (128 - stop)) & ((1 << (stop - start)) - 1)


_TRANSLATION_PREFIXES = (0xFFFF, 0xFFFF_0000, 0x64_FF9B_0000_0000_0000_0000)


def translates_ipv4(v6: int) -> bool:
    """True for mapped, SIIT-translated and NAT64 /96 addresses.

    These are only another spelling of the IPv4 host, so that host alone is
    judged. Tunnel formats (6to4, Teredo, ISATAP, compatible, local-use NAT64)
    are real IPv6 addresses too: both they and their IPv4 are judged.
    """
    return v6 >> 32 in _TRANSLATION_PREFIXES


def embedded_ipv4(v6: int) -> tuple[int, ...]:
    """The IPv4 addresses an IPv6 address stands for, if it embeds any.

    Mapped, compatible, translated, NAT64 (well-known and local-use, every
    RFC 6052 layout), 6to4, Teredo (server and client) and ISATAP. Traffic
    to such an address reaches the IPv4 host, so that host is what is judged.
    """
    high96 = v6 >> 32
    low32 = v6 & _V4_MAX
    if high96 in _TRANSLATION_PREFIXES:
        return (low32,)                              # mapped, translated, NAT64
    if high96 == 0:
        return (low32,) if v6 > 1 else ()            # compatible; not :: or ::1
    if v6 >> 80 == 0x64_FF9B_0001:                   # local-use NAT64, RFC 8215
        return (
            _bits(v6, 48, 64) << 16 | _bits(v6, 72, 88),
            _bits(v6, 56, 64) << 24 | _bits(v6, 72, 96),
            _bits(v6, 72, 104),
            low32,
        )
    if v6 >> 112 == 0x2002:                          # 6to4
        return (_bits(v6, 16, 48),)
    if v6 >> 96 == 0x2001_0000:                      # Teredo
        return (_bits(v6, 32, 64), low32 ^ _V4_MAX)
    if _bits(v6, 64, 96) & 0xFCFF_FFFF == 0x0000_5EFE:  # ISATAP interface id
        return (low32,)
    return ()


@lru_cache(maxsize=4096)
def format_ip(ip: tuple[int, int]) -> str:
    """The canonical text of an IP: dotted quad, or compressed IPv6."""
    version, value = ip
    if version == V4:
        return socket.inet_ntop(socket.AF_INET, value.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, value.to_bytes(16, "big"))


_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)\Z")


@lru_cache(maxsize=4096)
def normalise_hostname(name: str) -> str:
    """A hostname in the one form rules are written in, or ValueError.

    Lower case, one trailing dot dropped, international labels in IDNA
    (Unicode full stops count as dots), and nothing a resolver could read
    another way: no NUL, spaces, control characters or empty labels.
    """
    if not name or any(ord(c) < 0x21 or c == "\x7f" for c in name):
        raise ValueError(f"hostname {name!r} has an empty, space or control character")
    try:
        ascii_name = name.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ValueError(f"hostname {name!r} is not valid IDNA: {exc}") from None
    if ascii_name.endswith("."):
        ascii_name = ascii_name[:-1]
    if len(ascii_name) > 253 or not all(_LABEL.match(l) for l in ascii_name.split(".")):
        raise ValueError(f"hostname {name!r} is not a valid DNS name")
    return ascii_name

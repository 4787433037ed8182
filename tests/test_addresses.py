"""The address normaliser: spellings, embedded IPv4, the non-public table."""

import pytest

from failcore import _addresses as addr


def v4(text):
    return (4, int.from_bytes(bytes(int(p) for p in text.split(".")), "big"))


@pytest.mark.parametrize("spelling, expected", [
    ("127.0.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),
    ("0x7f000001", "127.0.0.1"),
    ("0X7F.1", "127.0.0.1"),
    ("0177.0.0.01", "127.0.0.1"),
    ("127.1", "127.0.0.1"),
    ("127.0.1", "127.0.0.1"),
    ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
    ("0251.0376.0251.0376", "169.254.169.254"),
    ("2852039166", "169.254.169.254"),
    ("169.254.43518", "169.254.169.254"),
    ("10.5", "10.0.0.5"),
    ("0", "0.0.0.0"),
])
def test_every_inet_aton_spelling_parses_to_the_same_ipv4(spelling, expected):
    """Decimal, octal, hex and short forms all name the address inet_aton would."""
    assert addr.parse_ip(spelling) == v4(expected)


@pytest.mark.parametrize("text", [
    "256.0.0.1", "1.2.3.4.5", "4294967296", "08.0.0.1", "1..2", "", "1.2.3.", "0xg", "0x",
    "0x.0x.0x.0x",
    "example.com", "1e3", "١٢٧.0.0.1", " 127.0.0.1", "127.0.0.1 ", "::ffff:1.2.3.4.5",
])
def test_non_addresses_are_not_parsed_as_ipv4(text):
    """Out-of-range parts, bad digits and names are not addresses (they go to the resolver)."""
    assert addr.parse_ip(text) is None


@pytest.mark.parametrize("text, expected_v4", [
    ("::ffff:169.254.169.254", "169.254.169.254"),      # mapped
    ("::ffff:a9fe:a9fe", "169.254.169.254"),            # mapped, hex
    ("::169.254.169.254", "169.254.169.254"),           # compatible
    ("::ffff:0:a9fe:a9fe", "169.254.169.254"),          # translated
    ("64:ff9b::a9fe:a9fe", "169.254.169.254"),          # NAT64 well-known
    ("64:ff9b:1::a9fe:a9fe", "169.254.169.254"),        # NAT64 local-use, /96 layout
    ("2002:a9fe:a9fe::1", "169.254.169.254"),           # 6to4
    ("fe80::5efe:a9fe:a9fe", "169.254.169.254"),        # ISATAP
    ("2001:db8::200:5efe:a00:5", "10.0.0.5"),           # ISATAP, u/l bit set
])
def test_embedded_ipv4_is_unwrapped(text, expected_v4):
    """Every IPv6 transition format yields the IPv4 host traffic would reach."""
    version, value = addr.parse_ip(text)
    assert version == 6
    assert v4(expected_v4)[1] in addr.embedded_ipv4(value)


def test_teredo_yields_server_and_deobfuscated_client():
    """Teredo carries the server and the client (bit-inverted); both are judged."""
    _, value = addr.parse_ip("2001:0:a9fe:a9fe::f5ff:fffa")
    assert addr.embedded_ipv4(value) == (v4("169.254.169.254")[1], v4("10.0.0.5")[1])


def test_nat64_local_use_tries_every_rfc6052_layout():
    """64:ff9b:1::/48 may carry IPv4 at /48, /56, /64 or /96; all four are candidates."""
    _, value = addr.parse_ip("64:ff9b:1:a9fe:a9:fe00::")   # /48 layout of 169.254.169.254
    assert v4("169.254.169.254")[1] in addr.embedded_ipv4(value)


@pytest.mark.parametrize("text", ["::1", "::", "2606:4700::1111", "fd00:ec2::254"])
def test_plain_ipv6_embeds_nothing(text):
    """Loopback, unspecified and ordinary IPv6 are judged as IPv6."""
    assert addr.embedded_ipv4(addr.parse_ip(text)[1]) == ()


def test_zone_id_is_stripped():
    """fe80::1%eth0 is fe80::1."""
    assert addr.parse_ip("fe80::1%eth0") == addr.parse_ip("fe80::1")


@pytest.mark.parametrize("text, cidr", [
    ("169.254.169.254", "169.254.0.0/16"), ("127.0.0.1", "127.0.0.0/8"),
    ("10.1.2.3", "10.0.0.0/8"), ("100.64.0.1", "100.64.0.0/10"), ("0.0.0.0", "0.0.0.0/8"),
    ("172.31.255.255", "172.16.0.0/12"), ("192.168.1.1", "192.168.0.0/16"),
    ("198.18.0.1", "198.18.0.0/15"), ("192.0.0.192", "192.0.0.0/24"),
    ("224.0.0.1", "224.0.0.0/4"), ("255.255.255.255", "240.0.0.0/4"),
    ("::1", "::1/128"), ("::", "::/128"), ("fd00:ec2::254", "fc00::/7"),
    ("fe80::1", "fe80::/10"), ("ff02::1", "ff00::/8"), ("2001:db8::1", "2001:db8::/32"),
    ("2001::1", "2001::/23"), ("100::1", "100::/64"), ("4000::1", "4000::/2"),
    ("::ffff:0:0", "::/3"),
])
def test_non_public_table_names_the_most_specific_range(text, cidr):
    """The table is explicit and reports the narrowest range that holds the address."""
    assert addr.non_public_range(addr.parse_ip(text)) == cidr


@pytest.mark.parametrize("text", ["93.184.215.14", "8.8.8.8", "172.32.0.1", "100.128.0.1",
                                  "2606:4700::1111", "2a00:1450::1", "168.63.129.16"])
def test_public_unicast_is_not_in_the_table(text):
    """Global unicast stays public (metadata at public addresses is handled separately)."""
    assert addr.non_public_range(addr.parse_ip(text)) is None


@pytest.mark.parametrize("name, expected", [
    ("Example.COM", "example.com"), ("example.com.", "example.com"),
    ("bücher.de", "xn--bcher-kva.de"), ("evil\u3002example", "evil.example"),
    ("evil\uff0eexample", "evil.example"), ("METADATA.google.internal.", "metadata.google.internal"),
])
def test_hostnames_normalise_to_one_form(name, expected):
    """Case, a trailing dot, IDNA and Unicode full stops all fold to one spelling."""
    assert addr.normalise_hostname(name) == expected


@pytest.mark.parametrize("name", ["evil.example\x00.good.com", "a b", "a..b", "", ".", "a\tb",
                                  "-a.com", "x" * 64 + ".com", "a.com..", "a%b"])
def test_hostnames_a_resolver_could_misread_are_rejected(name):
    """NUL, spaces, control characters, empty or oversized labels raise ValueError."""
    with pytest.raises(ValueError):
        addr.normalise_hostname(name)

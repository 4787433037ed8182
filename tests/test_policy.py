"""The policy engine: precedence, metadata, ports, hostnames, AF_UNIX, presets."""

import socket

import pytest

from failcore import Action, Policy, presets

NET_SAFE = presets.net_safe()
STRICT = presets.net_safe(strict=True)


def policy(**network):
    return Policy.from_dict({"version": 1, "network": network})


@pytest.mark.parametrize("pol, host, port, names, action, rule", [
    # default = public
    (NET_SAFE, "93.184.215.14", 443, (), "allow", "network.public"),
    (NET_SAFE, "169.254.169.254", 80, (), "deny", "network.public"),
    (NET_SAFE, "2852039166", 80, (), "deny", "network.public"),
    (NET_SAFE, "::ffff:169.254.169.254", 80, (), "deny", "network.public"),
    (NET_SAFE, "64:ff9b::a00:5", 80, (), "deny", "network.public"),
    (NET_SAFE, "64:ff9b::808:808", 53, (), "allow", "network.public"),
    (NET_SAFE, "2002:808:808::1", 53, (), "allow", "network.public"),
    (NET_SAFE, "::1", 80, (), "deny", "network.public"),
    (NET_SAFE, "fd00:ec2::254", 80, (), "deny", "network.public"),
    (NET_SAFE, "168.63.129.16", 80, (), "deny", "network.metadata"),
    (NET_SAFE, "93.184.215.14", 22, (), "allow", "network.public"),
    # strict limits ports
    (STRICT, "93.184.215.14", 22, (), "deny", "network.ports"),
    (STRICT, "93.184.215.14", 443, (), "allow", "network.public"),
    # deny beats allow beats default
    (policy(default="allow", deny=["10.0.0.0/8"], allow=["10.0.0.5"]), "10.0.0.5", 80, (),
     "deny", "network.deny[10.0.0.0/8]"),
    (policy(default="deny", allow=["10.20.0.0/16"]), "10.20.1.2", 80, (), "allow",
     "network.allow[10.20.0.0/16]"),
    (policy(default="deny", allow=["10.20.0.0/16"]), "10.21.1.2", 80, (), "deny",
     "network.default"),
    (policy(default="allow"), "10.21.1.2", 80, (), "allow", "network.default"),
    (policy(deny=["2002::/16"]), "2002:808:808::1", 53, (), "deny", "network.deny[2002::/16]"),
    (policy(default="allow", deny=["10.0.0.1-10.0.0.9"]), "10.0.0.5", 80, (), "deny",
     "network.deny[10.0.0.1-10.0.0.9]"),
    # ports on rules
    (policy(allow=["203.0.113.10:8080"]), "203.0.113.10", 8080, (), "allow",
     "network.allow[203.0.113.10:8080]"),
    (policy(allow=["203.0.113.10:8080"]), "203.0.113.10", 80, (), "deny", "network.public"),
    (policy(allow=["10.0.0.5"], ports=[443]), "10.0.0.5", 22, (), "deny", "network.ports"),
    (policy(allow=["[fd00::1]:443"]), "fd00::1", 443, (), "allow", "network.allow[[fd00::1]:443]"),
    # hostname rules apply to the names an address was reached through
    (policy(default="deny", allow=["*.lab.test"]), "10.0.0.5", 80, ("internal.lab.test",),
     "allow", "network.allow[*.lab.test]"),
    (policy(default="deny", allow=["*.lab.test"]), "10.0.0.5", 80, ("lab.test",), "deny",
     "network.default"),
    (policy(default="allow", deny=["evil.example"]), "93.184.215.14", 80, ("evil.example",),
     "deny", "network.deny[evil.example]"),
    (policy(default="allow", deny=["*.EVIL.example."]), "93.184.215.14", 80, ("a.b.evil.example",),
     "deny", "network.deny[*.EVIL.example.]"),
    (policy(allow=["api.lab.test:443"]), "10.0.0.5", 80, ("api.lab.test",), "deny",
     "network.public"),
])
def test_network_decisions(pol, host, port, names, action, rule):
    """Each row pins the action and the stable rule id for one connection."""
    decision = pol.check_connect(host, port, names)
    assert (decision.action.value, decision.rule) == (action, rule)


@pytest.mark.parametrize("network, host, action, rule", [
    ({"default": "allow"}, "169.254.169.254", "deny", "network.metadata"),
    ({"default": "allow"}, "fd00:ec2::254", "deny", "network.metadata"),
    ({"default": "allow"}, "100.100.100.200", "deny", "network.metadata"),
    ({"default": "allow"}, "::ffff:169.254.169.254", "deny", "network.metadata"),
    ({"allow": ["169.254.0.0/16"]}, "169.254.169.254", "deny", "network.public"),
    ({"allow": ["169.254.0.0/16"]}, "169.254.1.1", "allow", "network.allow[169.254.0.0/16]"),
    ({"allow": ["169.254.169.254"]}, "169.254.169.254", "allow",
     "network.allow[169.254.169.254]"),
    ({"allow": ["169.254.169.254/32"]}, "169.254.169.254", "allow",
     "network.allow[169.254.169.254/32]"),
    ({"default": "allow", "allow": ["*.internal"]}, "169.254.169.254", "deny", "network.metadata"),
])
def test_metadata_opens_only_for_a_rule_naming_the_address(network, host, action, rule):
    """Wider ranges, hostname rules and default=allow never open a metadata endpoint."""
    names = ("metadata.google.internal",) if "*.internal" in network.get("allow", []) else ()
    decision = policy(**network).check_connect(host, 80, names)
    assert (decision.action.value, decision.rule) == (action, rule)


def test_seed_message_for_the_metadata_endpoint():
    """The strict preset denies 169.254.169.254 with the seed's exact sentence."""
    decision = STRICT.check_connect("169.254.169.254", 80)
    assert decision.reason == "Access to private IP range 169.254.0.0/16 is blocked."


@pytest.mark.parametrize("name, action, rule", [
    ("metadata.google.internal", "deny", "network.metadata"),
    ("METADATA.GOOG.", "deny", "network.metadata"),
    ("metadata", "deny", "network.metadata"),
    ("api.github.com", "allow", "network.resolve"),
    ("evil.example\x00.api.github.com", "deny", "network.invalid"),
])
def test_resolve_decisions(name, action, rule):
    """Metadata and malformed names never reach a resolver."""
    decision = NET_SAFE.check_resolve(name)
    assert (decision.action.value, decision.rule) == (action, rule)


def test_resolve_honours_deny_rules_but_not_port_specific_ones():
    """A name denied outright is not resolved; one denied on a port still resolves."""
    pol = policy(deny=["evil.example", "ssh.example:22"])
    assert pol.check_resolve("Evil.Example.").rule == "network.deny[evil.example]"
    assert pol.check_resolve("ssh.example").action is Action.ALLOW


def test_metadata_hostname_resolves_only_with_an_exact_allow():
    """Allowing the metadata hostname itself lets it resolve; a wildcard does not."""
    assert policy(allow=["*.google.internal"]).check_resolve(
        "metadata.google.internal").rule == "network.metadata"
    assert policy(allow=["metadata.google.internal"]).check_resolve(
        "metadata.google.internal").action is Action.ALLOW


@pytest.mark.parametrize("unix, path, action, rule", [
    ("deny-system", "/var/run/docker.sock", "deny", "network.unix.system"),
    ("deny-system", "/run/containerd/containerd.sock", "deny", "network.unix.system"),
    ("deny-system", "/home/u/.docker/run/docker.sock", "deny", "network.unix.system"),
    ("deny-system", "\0/containerd-shim/abc.sock", "deny", "network.unix.system"),
    ("deny-system", "/tmp/pymp-x/listener-1", "allow", "network.unix"),
    ("deny-system", b"/tmp/app.sock", "allow", "network.unix"),
    ("deny", "/tmp/app.sock", "deny", "network.unix"),
    ("allow", "/var/run/docker.sock", "allow", "network.unix"),
])
def test_unix_socket_rules(unix, path, action, rule):
    """AF_UNIX: allow, deny, or deny the system daemons' sockets."""
    decision = policy(unix=unix).check_unix(path)
    assert (decision.action.value, decision.rule) == (action, rule)


def test_ssh_agent_socket_counts_as_a_system_socket(monkeypatch, tmp_path):
    """The user's SSH agent holds their keys: deny-system covers $SSH_AUTH_SOCK."""
    agent = tmp_path / "agent.sock"
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent))
    assert policy().check_unix(str(agent)).rule == "network.unix.system"


def test_unknown_families_are_denied_unless_default_allow():
    """A family the engine does not understand fails closed."""
    assert NET_SAFE.check_family(socket.AF_NETLINK).action is Action.DENY
    assert policy(default="allow").check_family(socket.AF_NETLINK).action is Action.ALLOW


def test_strict_preset_denies_unix_sockets():
    """net_safe(strict=True) denies AF_UNIX outright."""
    assert STRICT.check_unix("/tmp/app.sock").rule == "network.unix"
    assert STRICT.check_unix("/tmp/app.sock").action is Action.DENY


def test_presets_by_function_and_by_name_are_the_same_policy():
    """A preset's name and its function compile to the same rules."""
    assert Policy.load("net_safe").digest == presets.net_safe().digest
    assert Policy.load("net_safe_strict").digest == presets.net_safe(strict=True).digest
    assert Policy.load("agent_safe").config == presets.agent_safe().config


def test_extends_adds_to_the_preset_lists_and_replaces_scalars():
    """extends: list entries add up, single values replace the preset's."""
    pol = Policy.from_dict({"extends": "net_safe_strict",
                            "network": {"allow": ["10.0.0.5"], "unix": "deny-system"}})
    assert pol.config["network"] == {"default": "public", "unix": "deny-system",
                                     "ports": [80, 443], "allow": ["10.0.0.5"]}


def test_decisions_are_memoised_and_identical():
    """Asking twice gives the same Decision object (the memo) and the policy is frozen."""
    assert NET_SAFE.check_connect("10.1.1.1", 80) is NET_SAFE.check_connect("10.1.1.1", 80)
    with pytest.raises(AttributeError):
        NET_SAFE.network = None


@pytest.mark.parametrize("host", [
    "fe80::5efe:8.8.8.8", "fd12:3456::5efe:8.8.8.8", "ff02::5efe:8.8.8.8",
    "fec0::5efe:8.8.8.8", "2001:db8::5efe:8.8.8.8", "100::5efe:8.8.8.8",
    "2001:0:808:808::f7f7:f7f7",  # Teredo: 2001::/32 is not public
])
def test_tunnel_addresses_are_judged_as_ipv6_too(host):
    """ISATAP or Teredo under a non-public prefix stays denied whatever IPv4 it carries."""
    decision = NET_SAFE.check_connect(host, 443)
    assert (decision.action, decision.rule) == (Action.DENY, "network.public")


def test_a_public_tunnel_to_a_public_host_is_allowed():
    """6to4 and ISATAP under a global prefix, carrying a public IPv4, are public."""
    assert NET_SAFE.check_connect("2002:808:808::1", 443).allowed
    assert NET_SAFE.check_connect("2606:4700::5efe:8.8.8.8", 443).allowed


@pytest.mark.parametrize("rule, host, allowed", [
    ("::ffff:10.0.0.0/104", "10.1.2.3", True),           # a mapped range is an IPv4 range
    ("::ffff:10.0.0.0/104", "::ffff:10.1.2.3", True),
    ("fe80::5efe:a9fe:a9fe", "169.254.169.254", False),  # an ISATAP rule is not an IPv4 rule
    ("2002:a00:5::1", "10.0.0.5", False),                # nor is a 6to4 one
])
def test_only_translation_rules_become_ipv4_rules(rule, host, allowed):
    """A single IPv6 tunnel address in a rule never opens the IPv4 host it carries."""
    assert policy(allow=[rule]).check_connect(host, 80).allowed is allowed


@pytest.mark.parametrize("allow", [["10.0.0.0/8", "10.0.0.5:8080"], ["10.0.0.5:8080", "10.0.0.0/8"],
                                   ["db.internal", "db.internal:8080"]])
def test_allow_rule_order_does_not_matter_with_ports(allow):
    """A port-specific allow wins over an earlier rule that the port list rejects."""
    pol = policy(allow=allow, ports=[443])
    assert pol.check_connect("10.0.0.5", 8080, ("db.internal",)).allowed
    assert pol.check_connect("10.0.0.5", 8081, ("db.internal",)).rule == "network.ports"


def test_port_specific_allow_counts_when_the_port_is_unknown():
    """At resolve time (no port yet) an address a port-specific rule allows is kept."""
    pol = policy(allow=["10.0.0.5:8080"])
    assert pol.check_connect("10.0.0.5").allowed
    assert not pol.check_connect("10.0.0.5", 80).allowed
    assert not policy(default="allow", deny=["10.0.0.5:22"]).check_connect("10.0.0.5").action \
        is Action.DENY


def test_deny_wildcard_covers_the_domain_itself_allow_wildcard_does_not():
    """`*.evil.com` in deny also denies evil.com; in allow it opens subdomains only."""
    assert policy(default="allow", deny=["*.evil.com"]).check_resolve("evil.com").action \
        is Action.DENY
    assert not policy(default="deny", allow=["*.lab.test"]).check_connect(
        "10.0.0.5", 80, ("lab.test",)).allowed


def test_unicode_rules_cover_idna_2003_and_2008():
    """faß.de is fass.de to Python's codec and xn--fa-hia.de to requests/httpx: deny both."""
    pytest.importorskip("idna")
    pol = policy(deny=["faß.de"])
    assert pol.check_resolve("fass.de").action is Action.DENY
    assert pol.check_resolve("xn--fa-hia.de").action is Action.DENY


@pytest.mark.parametrize("host", ["169.254.170.23", "fd20:ce::254", "169.254.0.23",
                                  "fe80::a9fe:a9fe", "192.0.0.192"])
def test_every_known_metadata_address_is_denied_under_default_allow(host):
    """EKS pod identity, GCE over IPv6, Tencent, OpenStack over IPv6, Oracle."""
    assert policy(default="allow").check_connect(host, 80).rule == "network.metadata"


@pytest.mark.parametrize("path", ["/var/snap/lxd/common/lxd/unix.socket", "/var/lib/incus/unix.socket",
                                  "/var/lib/kubelet/pod-resources/kubelet.sock",
                                  "/tmp/.X11-unix/X0", "\0/tmp/.X11-unix/X0"])
def test_root_equivalent_daemons_are_system_sockets(path):
    """LXD, Incus, kubelet and the X server are as dangerous as docker."""
    assert policy().check_unix(path).rule == "network.unix.system"


def test_compiled_rules_cannot_be_changed():
    """The compiled rules are frozen all the way down; config is a copy."""
    pol = policy(deny=["10.0.0.0/8"])
    with pytest.raises(AttributeError):
        pol.network.default = "allow"
    with pytest.raises(AttributeError):
        pol.network.deny_addresses[0].first = 0
    assert isinstance(pol.network.deny_addresses, tuple)
    pol.config["network"]["default"] = "allow"
    assert pol.config["network"]["default"] == "public"


def test_raw_sockets_are_denied_unless_default_allow():
    """A raw IP socket writes its own destination into the header."""
    assert NET_SAFE.check_family(socket.AF_INET, raw=True).rule == "network.family"
    assert policy(default="allow").check_family(socket.AF_INET, raw=True).allowed

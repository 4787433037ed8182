"""install()/uninstall(), modes, environment, logging and failing closed (on loopback)."""

import errno
import logging
import os
import pickle
import socket
import sys
import threading

import pytest
import structlog

import failcore
from failcore import _guard, _originals

LOOPBACK_ALLOWED = {"version": 1, "network": {"allow": ["127.0.0.1"]}}


@pytest.fixture
def listener():
    server = socket.create_server(("127.0.0.1", 0))
    yield server
    server.close()


def connect(server):
    with socket.socket() as client:
        client.settimeout(2)
        client.connect(server.getsockname())
    conn, _ = server.accept()
    conn.close()


def pending(server):
    server.settimeout(0.2)
    try:
        conn, _ = server.accept()
    except socket.timeout:
        return False
    conn.close()
    return True


def test_uninstall_restores_every_entry_point_exactly():
    """After uninstall the socket module and class are as they were, attribute for attribute."""
    module_before = {n: getattr(socket, n) for n in ("getaddrinfo", "gethostbyname",
                                                     "gethostbyname_ex", "create_connection")}
    class_before = dict(vars(socket.socket))
    failcore.install("net_safe")
    assert socket.getaddrinfo is not module_before["getaddrinfo"]
    assert "connect" in vars(socket.socket)
    failcore.uninstall()
    assert {n: getattr(socket, n) for n in module_before} == module_before
    assert dict(vars(socket.socket)) == class_before
    failcore.uninstall()  # idempotent


def test_install_again_swaps_the_policy_without_stacking_patches(listener):
    """A second install replaces the policy; the patches are applied once."""
    failcore.install("net_safe")
    wrapper = vars(socket.socket)["connect"]
    with pytest.raises(failcore.SecurityError):
        connect(listener)
    assert failcore.install(LOOPBACK_ALLOWED) is failcore.installed_policy()
    assert vars(socket.socket)["connect"] is wrapper
    connect(listener)


def test_concurrent_installs_leave_one_layer_of_patches():
    """install() from many threads at once patches each entry point exactly once."""
    threads = [threading.Thread(target=failcore.install, args=("net_safe",)) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(_guard._patches) == len(_guard._targets())
    assert vars(socket.socket)["connect"].__wrapped__ is not vars(socket.socket)["connect"]
    failcore.uninstall()
    assert "connect" not in vars(socket.socket)


def test_enforce_raises_before_the_connection_is_made(listener):
    """In enforce mode the loopback server never sees the denied connect."""
    failcore.install("net_safe")
    with socket.socket() as client, pytest.raises(failcore.SecurityError) as info:
        client.connect(listener.getsockname())
    assert info.value.decision.rule == "network.public"
    assert not pending(listener)


def test_audit_mode_lets_the_call_through_and_logs_would_deny(listener, caplog):
    """Audit mode records a would-deny and the connection happens."""
    failcore.install("net_safe", mode="audit")
    with caplog.at_level(logging.WARNING, logger="failcore"):
        connect(listener)
    [record] = [r for r in caplog.records if r.name == "failcore"]
    assert record.outcome == "would-deny" and record.rule == "network.public"
    assert record.op == "net.connect" and record.target.startswith("127.0.0.1:")


def test_off_mode_patches_nothing(listener):
    """mode='off' checks nothing and leaves the socket module untouched."""
    failcore.install("net_safe", mode="off")
    assert socket.getaddrinfo is _originals.getaddrinfo
    assert failcore.installed_mode() is failcore.Mode.OFF
    connect(listener)


def test_environment_chooses_policy_and_mode(monkeypatch, listener):
    """FAILCORE_POLICY and FAILCORE_MODE apply when install() is given none."""
    monkeypatch.setenv("FAILCORE_POLICY", "net_safe_strict")
    monkeypatch.setenv("FAILCORE_MODE", "audit")
    failcore.install()
    assert failcore.installed_policy().source == "preset net_safe_strict"
    assert failcore.installed_mode() is failcore.Mode.AUDIT


def test_default_policy_is_agent_safe(monkeypatch):
    """With no argument and no environment, install() uses agent_safe."""
    monkeypatch.delenv("FAILCORE_POLICY", raising=False)
    assert failcore.install().source == "preset agent_safe"


def test_failcore_disable_switches_everything_off(monkeypatch, listener):
    """FAILCORE_DISABLE=1 wins over any policy and mode."""
    monkeypatch.setenv("FAILCORE_DISABLE", "1")
    failcore.install("net_safe_strict", mode="enforce")
    assert socket.getaddrinfo is _originals.getaddrinfo
    connect(listener)


def test_bad_mode_and_bad_policy_raise_before_anything_is_patched():
    """A bad configuration is an error, never a silently unguarded process."""
    with pytest.raises(failcore.PolicyError, match="mode"):
        failcore.install("net_safe", mode="enforcing")
    with pytest.raises(failcore.PolicyError):
        failcore.install({"network": {"default": "open"}})
    assert socket.getaddrinfo is _originals.getaddrinfo


def test_internal_error_fails_closed_and_is_logged(monkeypatch, listener, caplog):
    """If the engine itself breaks, the connect is denied with rule guard.error."""
    policy = failcore.install(LOOPBACK_ALLOWED)

    def broken(*args, **kwargs):
        raise RuntimeError("engine exploded")

    monkeypatch.setattr(type(policy), "check_ip", broken)
    with caplog.at_level(logging.WARNING, logger="failcore"):
        with socket.socket() as client, pytest.raises(failcore.SecurityError) as info:
            client.connect(listener.getsockname())
    assert info.value.decision.rule == "guard.error"
    assert "engine exploded" in info.value.decision.reason
    assert any(getattr(r, "rule", None) == "guard.error" for r in caplog.records)
    assert not pending(listener)


def test_security_error_shape():
    """SecurityError is a PermissionError with EACCES, the decision, and the reason as text."""
    decision = failcore.presets.net_safe().check_connect("169.254.169.254", 80)
    error = failcore.SecurityError(decision)
    assert isinstance(error, PermissionError) and error.errno == errno.EACCES
    assert str(error) == "Access to private IP range 169.254.0.0/16 is blocked."
    assert pickle.loads(pickle.dumps(error)).decision == decision


@pytest.fixture
def structlog_reset():
    yield
    structlog.reset_defaults()  # capture_logs leaves structlog marked as configured


def test_structlog_pipeline_receives_the_decision_fields(listener, structlog_reset):
    """An application that configured structlog gets one event per deny with every field."""
    failcore.install("net_safe")
    with structlog.testing.capture_logs() as events:
        with socket.socket() as client, pytest.raises(failcore.SecurityError):
            client.connect(listener.getsockname())
    [event] = events
    assert event["event"] == "failcore.decision" and event["outcome"] == "deny"
    assert {"action", "op", "target", "rule", "reason", "mode"} <= set(event)


def test_failcore_configures_no_logging(listener):
    """Denies are logged without touching the root logger or structlog's configuration."""
    root_handlers = list(logging.getLogger().handlers)
    failcore.install("net_safe")
    with socket.socket() as client, pytest.raises(failcore.SecurityError):
        client.connect(listener.getsockname())
    assert logging.getLogger().handlers == root_handlers
    assert not structlog.is_configured()


def test_a_socket_subclass_cannot_lie_about_its_family(listener):
    """The guard reads the C-level family, not a property a subclass can override."""

    class Liar(socket.socket):
        @property
        def family(self):
            return socket.AF_UNIX

    failcore.install("net_safe")
    with Liar(socket.AF_INET, socket.SOCK_STREAM) as client:
        with pytest.raises(failcore.SecurityError) as info:
            client.connect(listener.getsockname())
    assert info.value.decision.rule == "network.public"
    assert not pending(listener)


def test_every_section_is_enforced_without_warnings(recwarn, tmp_path):
    """No section is validated-but-ignored any more: nothing warns, and each one bites."""
    secret = tmp_path / "secret"
    secret.write_text("canary")
    failcore.install({"filesystem": {"deny": [str(secret)]}, "process": {"shell": "deny"}})
    assert not recwarn.list
    with pytest.raises(failcore.SecurityError):
        secret.read_text()
    with pytest.raises(failcore.SecurityError):
        os.system("true")


@pytest.mark.parametrize("module", ["_interpreters", "_xxsubinterpreters"])
def test_subinterpreters_cannot_be_imported_under_a_restricting_policy(module):
    """Subinterpreters escape every hook: their modules cannot be imported, even if loaded."""
    try:
        __import__(module)
    except ImportError:
        pytest.skip(f"{module} does not exist on this Python")
    failcore.install("net_safe")
    with pytest.raises(failcore.SecurityError) as info:
        __import__(module)
    assert info.value.decision.rule == "process.subinterpreter"
    failcore.uninstall()
    assert __import__(module).__name__ == module
    failcore.install({"network": {"default": "allow", "unix": "allow"}})  # restricts nothing
    assert __import__(module).__name__ == module


def test_a_subinterpreter_module_loaded_earlier_cannot_create_one(caplog):
    """On 3.10-3.12 creating an interpreter raises an audit event, which is denied
    (CPython reports the hook's refusal as a RuntimeError)."""
    module = None
    for name in ("_xxsubinterpreters", "_interpreters"):
        try:
            module = __import__(name)
            break
        except ImportError:
            pass
    if module is None or sys.version_info >= (3, 12):
        pytest.skip("3.12+: refusing the audit event would crash CPython; the import is denied")
    failcore.install("net_safe")
    with caplog.at_level(logging.WARNING, logger="failcore"):
        with pytest.raises((failcore.SecurityError, RuntimeError)):
            module.create()
    assert [r.rule for r in caplog.records] == ["process.subinterpreter"]


def test_remembered_decisions_expire_when_an_address_gains_a_name(listener):
    """A connect allowed (and remembered) before a denied name resolved to the
    same address is denied after it: hostname rules apply to resolved addresses."""
    port = listener.getsockname()[1]
    rule = f"localhost:{port}"  # port-specific: the name still resolves
    failcore.install({"version": 1, "network": {"default": "allow", "deny": [rule]}})
    connect(listener)
    connect(listener)  # served from the guard's memo
    with pytest.raises(failcore.SecurityError):
        socket.getaddrinfo("localhost", port)  # resolves, then every record is denied
    with socket.socket() as client, pytest.raises(failcore.SecurityError) as info:
        client.connect(listener.getsockname())
    assert info.value.decision.rule == f"network.deny[{rule}]"
    assert not pending(listener)

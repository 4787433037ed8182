"""The filesystem rules: precedence, roots, globs, placeholders, presets (pure)."""

import os
import sys
import tempfile

import pytest

from failcore import Policy, PolicyError, presets

HOME = os.path.expanduser("~")
CWD = os.getcwd()
TMP = os.path.realpath(tempfile.gettempdir())


def policy(**section):
    return Policy.from_dict({"filesystem": section})


@pytest.mark.parametrize("op, path, action, rule", [
    ("fs.read", f"{HOME}/.ssh/id_rsa", "deny", "filesystem.deny[~/.ssh]"),
    ("fs.read", f"{HOME}/.aws/credentials", "deny", "filesystem.deny[~/.aws]"),
    ("fs.read", f"{HOME}/.docker/config.json", "deny", "filesystem.deny[~/.docker/config.json]"),
    ("fs.read", "/etc/shadow", "deny", "filesystem.deny[/etc/shadow]"),
    ("fs.read", f"{CWD}/app/.env", "deny", "filesystem.deny[**/.env]"),
    ("fs.read", "/etc/hosts", "allow", "filesystem.read[/]"),
    ("fs.list", "/usr/lib", "allow", "filesystem.read[/]"),
    ("fs.write", "/etc/hosts", "deny", "filesystem.default"),
    ("fs.delete", f"{HOME}/.bashrc", "deny", "filesystem.default"),
    ("fs.write", f"{CWD}/out/report.txt", "allow", "filesystem.write[{cwd}]"),
    ("fs.write", f"{TMP}/scratch", "allow", "filesystem.write[{tmp}]"),
    ("fs.metadata", f"{CWD}/x", "allow", "filesystem.write[{cwd}]"),
    ("fs.write", f"{sys.base_prefix}/lib/evil.py", "deny", "filesystem.default"),
])
def test_fs_safe(op, path, action, rule):
    """fs_safe: reads anywhere but secrets, changes only in the workspace and temp."""
    if path.startswith((CWD, TMP)) and sys.base_prefix.startswith((CWD, TMP)):
        pytest.skip("the interpreter lives inside the workspace here")
    decision = presets.fs_safe().check_path(op, path)
    assert (decision.action.value, decision.rule) == (action, rule)


def test_agent_safe_is_all_three_presets():
    """agent_safe: net_safe's addresses, fs_safe's files, proc_safe's programs."""
    agent = presets.agent_safe()
    assert agent.check_path("fs.read", f"{HOME}/.ssh/id_rsa").rule == "filesystem.deny[~/.ssh]"
    assert agent.check_path("fs.write", "/etc/cron.d/x").rule == "filesystem.default"
    assert agent.check_path("fs.write", f"{CWD}/out.txt").allowed
    assert agent.check_path("fs.write", "/dev/null").allowed
    assert agent.check_connect("10.0.0.5", 80).rule == "network.public"
    assert agent.check_exec(["curl", "x"], lambda name: ("/usr/bin/curl", "/usr/bin/curl")) \
        .rule == "process.deny[curl]"
    assert agent.check_exec(["ls"], lambda name: (None, None), shell=True).rule == "process.shell"
    assert agent.config == {**presets.net_safe().config, **presets.fs_safe().config,
                            **presets.proc_safe().config}


@pytest.mark.parametrize("op, path, action", [
    ("fs.read", f"{CWD}/data.csv", "allow"),
    ("fs.read", os.path.join(os.path.dirname(os.__file__), "json", "__init__.py"), "allow"),
    ("fs.read", "/etc/ssl/certs/ca-certificates.crt", "allow"),
    ("fs.read", "/etc/hostname", "deny"),
    ("fs.read", f"{HOME}/notes.txt", "deny"),
])
def test_fs_safe_strict_limits_reads(op, path, action):
    """Strict: reads only in the workspace, temp, the interpreter and what Python needs."""
    if HOME.startswith(CWD) or CWD.startswith(HOME + "/notes"):
        pytest.skip("home and workspace overlap here")
    assert presets.fs_safe(strict=True).check_path(op, path).action.value == action


def test_precedence_deny_beats_write_beats_default(tmp_path):
    """A deny inside a writable root wins; a write root implies read."""
    pol = policy(default="deny", write=[str(tmp_path)], deny=[f"{tmp_path}/secret"])
    assert pol.check_path("fs.read", f"{tmp_path}/secret/k").rule == f"filesystem.deny[{tmp_path}/secret]"
    assert pol.check_path("fs.read", f"{tmp_path}/a").rule == f"filesystem.write[{tmp_path}]"
    assert pol.check_path("fs.read", "/elsewhere").rule == "filesystem.default"


def test_read_roots_do_not_grant_writes():
    """A read root lets you read and list, not change."""
    pol = policy(default="deny", read=["/srv/data"])
    assert pol.check_path("fs.list", "/srv/data").allowed
    assert not pol.check_path("fs.write", "/srv/data/x").allowed
    assert not pol.check_path("fs.read", "/srv/database").allowed  # a sibling, not a child


def test_roots_are_resolved_at_compile_time(tmp_path):
    """A root that is a symlink is matched by where it leads, as the guard sees paths."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    pol = policy(default="deny", write=[str(tmp_path / "link")])
    assert pol.check_path("fs.write", str(tmp_path / "real" / "f")).allowed


@pytest.mark.parametrize("pattern, path, matches", [
    ("**/.env", "/a/b/.env", True),
    ("**/.env", "/a/b/.envrc", False),
    ("*.pem", "/x/y/key.pem", True),
    ("/home/*/.ssh", "/home/u/.ssh/id_rsa", True),
    ("/home/*/.ssh", "/home/u/x/.ssh", False),
    ("**/secrets/**", "/srv/app/secrets/db/pass", True),
    ("/data/[ab]?.txt", "/data/a1.txt", True),
    ("/data/[!ab]?.txt", "/data/a1.txt", False),
])
def test_deny_globs(pattern, path, matches):
    """Globs: ** any directories, * and ? within a name, classes; relative = any depth."""
    decision = policy(deny=[pattern]).check_path("fs.read", path)
    assert (decision.rule == f"filesystem.deny[{pattern}]") is matches


def test_python_placeholder_covers_the_stdlib():
    """{python} expands to the interpreter's stdlib and site-packages."""
    pol = policy(default="deny", read=["{python}"])
    assert pol.check_path("fs.read", os.path.realpath(os.__file__)).allowed


@pytest.mark.parametrize("section, key, fragment", [
    ({"read": ["relative/dir"]}, "filesystem.read[0]", "absolute path"),
    ({"deny": ["{workspace}/x"]}, "filesystem.deny[0]", "unknown placeholder"),
    ({"deny": ["/data/[ab"]}, "filesystem.deny[0]", "unclosed"),
    ({"default": "maybe"}, "filesystem.default", "expected one of"),
])
def test_bad_filesystem_rules_are_errors(section, key, fragment):
    """Bad entries fail at load, naming the key."""
    with pytest.raises(PolicyError) as info:
        Policy.from_dict({"filesystem": section})
    assert info.value.key == key and fragment in str(info.value)


@pytest.mark.parametrize("op, action", [("fs.rename", "deny"), ("fs.delete", "deny"),
                                        ("fs.write", "allow"), ("fs.list", "allow")])
def test_moving_or_deleting_a_directory_above_a_denied_place_is_denied(op, action):
    """Renaming ~/.config would take ~/.config/gcloud out from under its rule."""
    decision = policy(default="allow", deny=["~/.config/gcloud"]).check_path(op, f"{HOME}/.config")
    assert decision.action.value == action
    if action == "deny":
        assert decision.rule == "filesystem.deny[~/.config/gcloud]"

"""The process rules: resolution, launchers, shells, presets (pure: a fake PATH)."""

import re

import pytest

from failcore import Policy, PolicyError, presets

FAKE_PATH = {
    "curl": "/usr/bin/curl", "wget": "/usr/bin/busybox", "busybox": "/usr/bin/busybox",
    "fetcher": "/usr/bin/curl", "git": "/usr/bin/git", "python3": "/usr/bin/python3.11",
    "sh": "/usr/bin/dash", "bash": "/usr/bin/bash", "env": "/usr/bin/env",
    "timeout": "/usr/bin/timeout", "nice": "/usr/bin/nice", "xargs": "/usr/bin/xargs",
    "nohup": "/usr/bin/nohup", "sudo": "/usr/bin/sudo", "ls": "/usr/bin/ls",
    "flock": "/usr/bin/flock", "stdbuf": "/usr/bin/stdbuf",
}


def locate(name):
    """PATH lookup and realpath over FAKE_PATH: links named after their target's alias."""
    if "/" in name:
        base = name.rsplit("/", 1)[1]
        return name, FAKE_PATH.get(base, name.replace("/./", "/"))
    real = FAKE_PATH.get(name)
    return (f"/usr/bin/{name}", real) if real else (None, None)


PROC_SAFE = presets.proc_safe()
ALLOW_LIST = Policy.from_dict({"process": {"default": "deny", "allow": ["git", "python3"]}})


@pytest.mark.parametrize("argv, action, rule", [
    (["git", "--version"], "allow", "process.default"),
    (["curl", "http://x"], "deny", "process.deny[curl]"),
    (["/usr/bin/./curl"], "deny", "process.deny[curl]"),
    (["fetcher", "http://x"], "deny", "process.deny[curl]"),          # a symlink named fetcher
    (["./bin/curl"], "deny", "process.deny[curl]"),                   # a relative path
    (["wget", "http://x"], "deny", "process.deny[wget]"),             # a busybox applet link
    (["busybox", "wget", "http://x"], "deny", "process.deny[wget]"),
    (["env", "-i", "A=1", "curl", "x"], "deny", "process.deny[curl]"),
    (["env", "-S", "curl -s x"], "deny", "process.deny[curl]"),
    (["nohup", "curl", "x"], "deny", "process.deny[curl]"),
    (["timeout", "-s", "KILL", "5", "curl", "x"], "deny", "process.deny[curl]"),
    (["nice", "-n", "10", "curl", "x"], "deny", "process.deny[curl]"),
    (["xargs", "-n", "1", "curl"], "deny", "process.deny[curl]"),
    (["sudo", "-u", "root", "curl"], "deny", "process.deny[curl]"),
    (["env", "nice", "timeout", "3", "curl"], "deny", "process.deny[curl]"),
    (["stdbuf", "-o", "L", "git", "log"], "allow", "process.default"),
    (["sh", "-c", "ls"], "deny", "process.shell"),
    (["bash", "script.sh"], "deny", "process.shell"),
    (["flock", "/tmp/l", "-c", "ls"], "deny", "process.shell"),
    (["python3", "-c", "print(1)"], "allow", "process.default"),
    (["timeout"], "deny", "process.launcher"),
    ([], "deny", "process.invalid"),
])
def test_proc_safe(argv, action, rule):
    """Programs are judged by name, PATH location and real path; launchers by what they run."""
    decision = PROC_SAFE.check_exec(argv, locate)
    assert (decision.action.value, decision.rule) == (action, rule)


def test_shell_true_is_a_shell():
    """shell=True (os.system, os.popen) is denied under shell = "deny"."""
    assert PROC_SAFE.check_exec(["ls -l"], locate, shell=True).rule == "process.shell"


@pytest.mark.parametrize("line, action, rule", [
    ("ls -l | git log", "deny", "process.default"),
    ("git status && python3 x.py", "allow", "process.allow[git]"),
    ("FOO=1 git log > out.txt 2>&1", "allow", "process.allow[git]"),
    ("git log; curl x", "deny", "process.default"),
    ("echo $(curl x)", "deny", "process.shell"),
    ("git log `id`", "deny", "process.shell"),
    ("git 'unclosed", "deny", "process.shell"),
])
def test_shell_lines_judge_every_command_when_shells_are_allowed(line, action, rule):
    """With shell = "allow", each simple command is judged; substitutions fail closed."""
    pol = Policy.from_dict({"process": {"default": "deny", "allow": ["git", "python3"],
                                        "shell": "allow"}})
    decision = pol.check_exec([line], locate, shell=True)
    assert (decision.action.value, decision.rule) == (action, rule)


@pytest.mark.parametrize("argv, action, rule", [
    (["git", "status"], "allow", "process.allow[git]"),
    (["python3", "x.py"], "allow", "process.allow[python3]"),
    (["ls"], "deny", "process.default"),
    (["nohup", "git", "gc"], "allow", "process.allow[git]"),
    (["missing-program"], "deny", "process.default"),
])
def test_allow_list_with_default_deny(argv, action, rule):
    """default = "deny": only listed programs start, also through launchers."""
    decision = ALLOW_LIST.check_exec(argv, locate)
    assert (decision.action.value, decision.rule) == (action, rule)


def test_path_entries_match_the_real_path(tmp_path):
    """An entry with a slash matches the resolved real path, or anything below a directory."""
    pol = Policy.from_dict({"process": {"deny": ["/usr/bin/curl", "/opt/tools/"]}})
    assert pol.check_exec(["fetcher"], locate).rule == "process.deny[/usr/bin/curl]"
    assert pol.check_exec(["/opt/tools/x"], lambda n: (n, n)).rule == "process.deny[/opt/tools/]"


@pytest.mark.parametrize("section, key", [
    ({"allow": ["bin/curl"]}, "process.allow[0]"),
    ({"deny": [" curl"]}, "process.deny[0]"),
    ({"shell": "sometimes"}, "process.shell"),
])
def test_bad_process_rules_are_errors(section, key):
    """Relative paths, padded names and bad values are rejected at load."""
    with pytest.raises(PolicyError, match=re.escape(key)):
        Policy.from_dict({"process": section})

"""`failcore trace show|verify|diff|check` and `failcore run --trace`, on real
traces written by programs run in subprocesses.

Nothing here leaves the machine: the programs write files under the test's
own directory, are denied a `~/.ssh` file (HOME points into the test
directory), run `true`, and are denied a connect to 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from failcore import _trace_read

BASE_POLICY = """\
version = 1
[network]
default = "public"
[filesystem]
default = "allow"
deny = ["~/.ssh"]
[process]
default = "allow"
deny = ["curl"]
"""
# The same, and `true` may not run. (The base policy restricts processes at
# all, or launches would not be intercepted, nor recorded, nor re-judged.)
STRICTER_POLICY = BASE_POLICY.replace('deny = ["curl"]', 'deny = ["curl", "true"]')
# The same, without the ~/.ssh deny.
LOOSER_POLICY = BASE_POLICY.replace('deny = ["~/.ssh"]\n', "")
assert STRICTER_POLICY != BASE_POLICY != LOOSER_POLICY

# For `failcore run --trace`: one operation of each kind.
RUN_PROGRAM = """\
import os, socket, subprocess, sys
here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "out.txt"), "w") as f:
    f.write(sys.argv[1])
try:
    open(os.path.expanduser("~/.ssh/id_test")).close()
except PermissionError:
    print("read denied")
subprocess.run(["true"], check=True)
s = socket.socket()
try:
    s.connect(("127.0.0.1", 9))
except PermissionError:
    print("connect denied")
except OSError:
    pass
finally:
    s.close()
"""

# A session with tools: declared effects, an undeclared one (block), one
# put to an approver (ask). The trace and policy come from the environment,
# so that argv is the program's only input.
SESSION_PROGRAM = """\
import os, subprocess, sys
from failcore import DefaultPolicy, SecurityError, Session, SideEffect, ToolMetadata

work = os.environ["WORK"]

def save(name, text):
    with open(os.path.join(work, name), "w") as f:
        f.write(text)
    return len(text)

def read_key():
    with open(os.path.expanduser("~/.ssh/id_test")) as f:
        return f.read()

def run_true():
    return subprocess.run(["true"]).returncode

session = Session(policy=os.environ["POLICY"], trace=os.environ["TRACE"],
                  approver=lambda request: request.target.endswith("approved.txt"))
session.register("save", save, ToolMetadata(side_effect=SideEffect.FS_WRITE))
session.register("read_key", read_key, ToolMetadata(side_effect=SideEffect.FS_READ))
session.register("run_true", run_true, ToolMetadata(side_effect=SideEffect.PROCESS))
session.register("sneaky", save)  # declares nothing: its write is undeclared, blocked
session.register("asking", save, ToolMetadata(default_policy=DefaultPolicy.ASK))
calls = [("save", {"name": "note.txt", "text": sys.argv[1]}), ("read_key", {}),
         ("run_true", {}), ("sneaky", {"name": "sneaky.txt", "text": "x"}),
         ("asking", {"name": "approved.txt", "text": "y"})]
for name, kwargs in calls:
    try:
        print(name, session.call(name, **kwargs))
    except SecurityError as exc:
        print(name, "denied", exc.decision.rule)
session.close()
"""


class Lab:
    """A directory with the programs, the policies and a fake HOME."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.work.mkdir()
        (root / "home").mkdir()
        for name, text in [("base.toml", BASE_POLICY), ("stricter.toml", STRICTER_POLICY),
                           ("looser.toml", LOOSER_POLICY), ("prog.py", RUN_PROGRAM),
                           ("agent.py", SESSION_PROGRAM)]:
            (root / name).write_text(text)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FAILCORE_")}
        self.env.update(HOME=str(root / "home"), WORK=str(self.work),
                        POLICY=str(root / "base.toml"))

    def run(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=self.root, capture_output=True,
                              text=True, timeout=60, env={**self.env, **(env or {})})

    def failcore(self, *args: str) -> subprocess.CompletedProcess:
        return self.run("-m", "failcore", *args)

    def trace(self, *args: str) -> subprocess.CompletedProcess:
        return self.failcore("trace", *args)

    def session_trace(self, name: str, text: str) -> str:
        path = str(self.root / name)
        done = self.run(str(self.root / "agent.py"), text, env={"TRACE": path})
        assert done.returncode == 0, done.stderr
        return path


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Lab:
    return Lab(tmp_path_factory.mktemp("trace_cli"))


@pytest.fixture(scope="module")
def run_trace(lab: Lab) -> str:
    path = str(lab.root / "run.jsonl")
    done = lab.failcore("run", "--trace", path, "--policy", str(lab.root / "base.toml"),
                        str(lab.root / "prog.py"), "hello")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["read", "denied", "connect", "denied"]
    return path


@pytest.fixture(scope="module")
def session_traces(lab: Lab) -> dict[str, str]:
    return {"hello": lab.session_trace("s1.jsonl", "hello"),
            "hello again": lab.session_trace("s2.jsonl", "hello"),
            "world": lab.session_trace("s3.jsonl", "world")}


def _lines(path: str) -> list[bytes]:
    return Path(path).read_bytes().splitlines(keepends=True)


def _tampered(lab: Lab, name: str, lines: list[bytes]) -> str:
    path = lab.root / name
    path.write_bytes(b"".join(lines))
    return str(path)


# -- run --trace -------------------------------------------------------------------


def test_run_trace_records_every_decision_of_the_program(run_trace):
    """`failcore run --trace T` writes a trace of the script's decisions, with the
    script's own argv in run.start (not failcore's options)."""
    events = _trace_read.read(run_trace)
    assert events[0]["event"] == "run.start" and events[-1]["event"] == "run.end"
    assert events[0]["argv"][1:] == ["hello"]
    assert events[0]["argv"][0].endswith("prog.py")
    decisions = [(e["op"], e["outcome"]) for e in events if e["event"] == "guard.decision"]
    assert ("fs.write", "allow") in decisions and ("fs.read", "deny") in decisions
    assert ("proc.exec", "allow") in decisions and ("net.connect", "deny") in decisions


# -- verify ------------------------------------------------------------------------


def test_verify_accepts_an_intact_trace(lab, run_trace):
    """verify exits 0 on a trace as written, and says it is intact."""
    done = lab.trace("verify", run_trace)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "intact" in done.stdout


def _edit_value(lines: list[bytes]) -> list[bytes]:
    """The first denied decision turned into an allow, still valid JSON."""
    for i, line in enumerate(lines):
        event = json.loads(line)
        if event.get("outcome") == "deny":
            event["action"] = event["outcome"] = "allow"
            lines[i] = json.dumps(event, separators=(",", ":")).encode() + b"\n"
            return lines
    raise AssertionError("no denied decision to edit")


TAMPERING = {
    "edited line": (_edit_value, "prev does not match"),
    "deleted middle line": (lambda ls: ls[:2] + ls[3:], "seq is"),
    "swapped lines": (lambda ls: ls[:1] + [ls[2], ls[1]] + ls[3:], "seq is"),
    "deleted last line": (lambda ls: ls[:-1], "did not finish"),
    "deleted first line": (lambda ls: ls[1:], "not run.start"),
}


@pytest.mark.parametrize("case", list(TAMPERING))
def test_verify_detects_tampering(lab, run_trace, case):
    """verify exits 1 on an edited, deleted or moved line, naming what is wrong."""
    change, expected = TAMPERING[case]
    path = _tampered(lab, f"tampered-{case.replace(' ', '-')}.jsonl",
                     change(_lines(run_trace)))
    done = lab.trace("verify", path)
    assert done.returncode == 1, done.stdout
    assert expected in done.stdout
    assert all(line.startswith(f"{path}: line ") for line in done.stdout.splitlines())


def test_verify_reports_a_run_that_crashed_mid_line(lab, run_trace):
    """A half-written last line is left out, and verify exits 1 saying the run did
    not finish."""
    lines = _lines(run_trace)
    path = _tampered(lab, "crashed.jsonl", lines[:-2] + [lines[-2][:25]])
    assert len(_trace_read.read(path)) == len(lines) - 2
    done = lab.trace("verify", path)
    assert done.returncode == 1
    assert "did not finish" in done.stdout
    assert "without a newline" in done.stdout


def test_verify_json_is_one_document(lab, run_trace):
    """verify --json prints one JSON object with ok and the problems."""
    intact = json.loads(lab.trace("verify", "--json", run_trace).stdout)
    assert intact == {"ok": True, "trace": run_trace, "events": len(_lines(run_trace)),
                      "problems": []}
    cut = _tampered(lab, "cut.jsonl", _lines(run_trace)[:-1])
    done = lab.trace("verify", "--json", cut)
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert report["ok"] is False and any("run.end" in p for p in report["problems"])


def test_verify_of_an_unreadable_trace_exits_1_naming_the_file(lab, run_trace):
    """A missing file, or a line that is not JSON, is exit 1 with the file named."""
    missing = str(lab.root / "no-such.jsonl")
    done = lab.trace("verify", missing)
    assert done.returncode == 1 and missing in done.stderr
    lines = _lines(run_trace)
    broken = _tampered(lab, "broken.jsonl", lines[:2] + [b"{not json\n"] + lines[3:])
    done = lab.trace("verify", broken)
    assert done.returncode == 1
    assert broken in done.stderr and "line 3" in done.stderr


# -- diff --------------------------------------------------------------------------


def test_diff_of_two_runs_of_the_same_program_is_empty(lab, session_traces):
    """Two runs with the same input differ only in times, run ids and the chain:
    diff exits 0."""
    done = lab.trace("diff", session_traces["hello"], session_traces["hello again"])
    assert done.returncode == 0, done.stdout
    assert done.stdout.startswith("same:")


def test_diff_names_the_first_differing_field(lab, session_traces):
    """Runs with a different argument: diff exits 1 and names the first field
    that differs, with both values."""
    done = lab.trace("diff", session_traces["hello"], session_traces["world"])
    assert done.returncode == 1
    assert "event 0, field argv[1]" in done.stdout
    assert '"hello"' in done.stdout and '"world"' in done.stdout
    report = json.loads(lab.trace("diff", "--json", session_traces["hello"],
                                  session_traces["world"]).stdout)
    assert report["same"] is False
    assert report["difference"] == {"index": 0, "path": "argv[1]", "a": "hello", "b": "world"}


def test_diff_reports_a_trace_that_is_longer(lab, session_traces):
    """One trace ending earlier is a difference at the first event the other has more."""
    lines = _lines(session_traces["hello"])
    short = _tampered(lab, "short.jsonl", lines[:-1])
    done = lab.trace("diff", "--json", short, session_traces["hello again"])
    assert done.returncode == 1
    difference = json.loads(done.stdout)["difference"]
    assert difference["index"] == len(lines) - 1 and difference["path"] == ""
    assert "a" not in difference and difference["b"]["event"] == "run.end"
    assert "fails verification" in done.stderr  # the short one has no run.end


def test_diff_ignores_times_run_ids_and_the_chain():
    """diff sets aside "t", run_id and prev, and compares everything else by JSON type."""
    a = [{"seq": 0, "event": "run.start", "prev": None, "run_id": "1", "t": {"wall": "x"}},
         {"seq": 1, "event": "tool.result", "prev": "aa", "result": 1, "t": {"wall": "y"}}]
    b = [{"seq": 0, "event": "run.start", "prev": None, "run_id": "2", "t": {"wall": "z"}},
         {"seq": 1, "event": "tool.result", "prev": "bb", "result": 1, "t": {"wall": "w"}}]
    assert _trace_read.diff(a, b) is None
    b[1]["result"] = True
    assert _trace_read.diff(a, b) == (1, "result", 1, True)


# -- check -------------------------------------------------------------------------


def test_check_under_the_same_policy_changes_nothing(lab, session_traces):
    """Re-judged under the policy it ran with (tool metadata and the approver's
    recorded answer included), nothing changes: exit 0."""
    events = _trace_read.read(session_traces["hello"])
    assert any(e.get("approved") is True for e in events)
    assert any(e.get("rule") == "tool.undeclared" for e in events)
    done = lab.trace("check", session_traces["hello"], "--policy", str(lab.root / "base.toml"))
    assert done.returncode == 0, done.stdout
    assert "0 would change" in done.stdout


def test_check_under_a_stricter_policy_lists_the_new_denial(lab, session_traces):
    """A policy that forbids `true`: check exits 1 and lists the launch as now denied."""
    done = lab.trace("check", session_traces["hello"], "--policy",
                     str(lab.root / "stricter.toml"))
    assert done.returncode == 1
    changed = [line for line in done.stdout.splitlines() if "->" in line]
    assert len(changed) == 1
    assert "allow -> DENY" in changed[0] and "proc.exec true" in changed[0]
    assert "run_true" in changed[0] and "[process.deny[true]]" in changed[0]


def test_check_judges_with_the_tools_recorded_metadata(lab, session_traces):
    """Under a looser policy the declared read becomes allowed, but the tool that
    declared nothing is still denied its write by its default policy."""
    done = lab.trace("check", "--json", session_traces["hello"], "--policy",
                     str(lab.root / "looser.toml"))
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert [(c["tool"], c["op"], c["recorded"], c["action"], c["rule"])
            for c in report["changes"]] == [
        ("read_key", "fs.read", "deny", "allow", "filesystem.default")]
    assert report["judged"] >= 4 and report["not_rejudged"] == []


def test_check_with_a_bad_policy_exits_78(lab, session_traces):
    """A policy that does not load is a configuration error, 78, before any reading."""
    bad = lab.root / "bad.toml"
    bad.write_text('version = 1\n[network]\ndefault = "sometimes"\n')
    done = lab.trace("check", session_traces["hello"], "--policy", str(bad))
    assert done.returncode == 78
    assert "bad.toml" in done.stderr


def test_rejudge_leaves_failcore_own_verdicts_alone():
    """Decisions no policy makes (guard.* refusals) are listed as not re-judged and
    are never a change."""
    from failcore import Policy

    events = [{"seq": 1, "event": "guard.decision", "op": "net.connect", "target": "(unknown)",
               "action": "deny", "outcome": "deny", "rule": "guard.error", "reason": "x"},
              {"seq": 2, "event": "guard.decision", "op": "net.connect",
               "target": "[::1]:443", "action": "deny", "outcome": "deny",
               "rule": "network.public", "reason": "y"}]
    result = _trace_read.check(events, Policy.load({"network": {"default": "allow"}}))
    assert [n.seq for n in result.not_rejudged] == [1]
    assert [(c.seq, c.action, c.rule) for c in result.changes] == [
        (2, "allow", "network.default")]


def _call(call_id: str, effects: list[str], default: str, parent: str | None = None) -> dict:
    event = {"event": "tool.call", "call_id": call_id, "tool": f"tool_{call_id}",
             "risk_level": "medium", "args": {}, "side_effect": effects,
             "default_policy": default}
    return {**event, "parent_call_id": parent} if parent else event


def _write_denied(call_id: str, **extra: object) -> dict:
    return {"seq": 9, "event": "guard.decision", "call_id": call_id, "op": "fs.write",
            "target": "/w/x", "action": "deny", "outcome": "deny",
            "rule": "filesystem.deny[/w]", "reason": "x", **extra}


@pytest.mark.parametrize("events, changed", [
    # declared by the call and the call it was made from: allowed now
    ([_call("c1", ["fs_write"], "block"), _call("c2", ["fs_write"], "block", "c1"),
      _write_denied("c2")], True),
    # the outer call did not declare it: its default policy still blocks it
    ([_call("c1", ["network"], "block"), _call("c2", ["fs_write"], "block", "c1"),
      _write_denied("c2")], False),
    # undeclared, ask, and the trace holds no answer (the policy denied first): no
    ([_call("c1", [], "ask"), _write_denied("c1")], False),
    # undeclared, default allow: left to the policy
    ([_call("c1", [], "allow"), _write_denied("c1")], True),
])
def test_check_judges_nested_calls_and_unanswered_asks(events, changed):
    """Inside nested calls each enclosing call's metadata applies too; an ask with
    no recorded answer counts as no."""
    from failcore import Policy

    result = _trace_read.check(events, Policy.load({"filesystem": {"default": "allow"}}))
    assert result.judged == 1
    assert [(c.seq, c.action) for c in result.changes] == ([(9, "allow")] if changed else [])


# -- show --------------------------------------------------------------------------


def test_show_lists_every_event_aligned(lab, session_traces):
    """show prints one line per event: seq, event, call and what happened."""
    path = session_traces["hello"]
    done = lab.trace("show", path)
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert len(lines) == len(_lines(path))
    assert lines[0].split()[:2] == ["0", "run.start"]
    assert any("DENY" in line and "[tool.undeclared]" in line and "c4 sneaky" in line
               for line in lines)
    assert len({line.index("run.") for line in (lines[0], lines[-1])}) == 1  # aligned
    assert "\033[" not in done.stdout  # not a terminal: no colour


def test_show_denied_lists_only_denials(lab, run_trace, session_traces):
    """--denied keeps the decisions that were not allowed (and the calls they were in)."""
    for path in (run_trace, session_traces["hello"]):
        done = lab.trace("show", "--denied", path)
        assert done.returncode == 0
        decisions = [line for line in done.stdout.splitlines() if "guard.decision" in line]
        assert decisions and all(" DENY " in line for line in decisions)
        assert "ALLOW" not in done.stdout
        assert {line.split()[1] for line in done.stdout.splitlines()} <= {
            "guard.decision", "tool.call"}


def test_show_json_is_one_array_of_the_events(lab, session_traces):
    """show --json prints the events, as recorded, as one JSON array; with
    --denied only the denials and their calls."""
    path = session_traces["hello"]
    events = json.loads(lab.trace("show", "--json", path).stdout)
    assert events == [dict(e) for e in _trace_read.read(path)]
    denied = json.loads(lab.trace("show", "--json", "--denied", path).stdout)
    assert {e["event"] for e in denied} == {"guard.decision", "tool.call"}
    assert all(e["outcome"] != "allow" for e in denied if e["event"] == "guard.decision")


# -- usage -------------------------------------------------------------------------


@pytest.mark.parametrize("args", [(), ("frob", "x"), ("check", "t.jsonl"), ("diff", "a"),
                                  ("show", "t.jsonl", "--bogus")])
def test_trace_usage_errors_exit_2(lab, args):
    """A missing subcommand, argument or --policy, or an unknown option, is exit 2."""
    done = lab.trace(*args)
    assert done.returncode == 2, done.stderr
    assert "usage:" in done.stderr


def test_usage_lists_the_trace_commands():
    """The usage text names every trace subcommand and run's --trace."""
    from failcore._cli import USAGE

    assert "run [--policy P] [--mode M] [--trace T]" in USAGE
    for line in ("trace show T [--denied] [--json]", "trace verify T [--json]",
                 "trace diff A B [--json]", "trace check T --policy P [--json]"):
        assert line in USAGE

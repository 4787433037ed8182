"""Sessions: tools, metadata, the call's scope, the trace and replay (SPEC §6, §7).

Operations here are on files and processes under the test's own directory;
the network side runs in the lab (test_session_scenarios.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import failcore
from failcore import (DefaultPolicy, ReplayMismatch, RiskLevel, SecurityError, Session,
                      SideEffect, ToolError, ToolMetadata)
from failcore import _trace_read

SCHEMA = json.loads((Path(failcore.__file__).parent / "trace.schema.json").read_text())


def policy_denying(*paths: Path) -> dict:
    return {"version": 1, "filesystem": {"default": "allow", "deny": [str(p) for p in paths]}}


def events(path: Path) -> list[dict]:
    """The trace's events, each checked against the schema."""
    import jsonschema

    found = [json.loads(line) for line in path.read_text().splitlines()]
    for event in found:
        jsonschema.validate(event, SCHEMA)
    return found


def comparable(path: Path) -> list[dict]:
    """The trace without what may differ between two runs."""
    out = []
    for event in events(path):
        event = {k: v for k, v in event.items() if k not in ("t", "prev", "run_id")}
        out.append(event)
    return out


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    directory = tmp_path / "secret"
    directory.mkdir()
    (directory / "key").write_text("canary-key-material")
    return directory


def read_file(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_file(path: str, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    return "written"


READS = ToolMetadata(RiskLevel.LOW, SideEffect.FS_READ, DefaultPolicy.BLOCK)
WRITES = ToolMetadata(RiskLevel.MEDIUM, SideEffect.FS, DefaultPolicy.BLOCK)


# -- metadata and registration -----------------------------------------------------


def test_side_effect_is_a_flag_enum_with_fs_as_both_file_categories():
    """SideEffect combines with |, and FS is FS_READ | FS_WRITE."""
    assert SideEffect.FS == SideEffect.FS_READ | SideEffect.FS_WRITE
    assert SideEffect.NETWORK | SideEffect.PROCESS & SideEffect.PROCESS
    assert (SideEffect.FS | SideEffect.NETWORK).names() == ["fs_read", "fs_write", "network"]


def test_tool_metadata_defaults_declare_nothing_and_block():
    """ToolMetadata() is medium risk, no side effects, undeclared ones blocked."""
    metadata = ToolMetadata()
    assert (metadata.risk_level, metadata.side_effect, metadata.default_policy) == (
        RiskLevel.MEDIUM, SideEffect.NONE, DefaultPolicy.BLOCK)


@pytest.mark.parametrize("kwargs, named", [
    ({"risk_level": "extreme"}, "risk_level"),
    ({"side_effect": 64}, "side_effect"),
    ({"side_effect": "network"}, "side_effect"),
    ({"default_policy": "warn"}, "default_policy"),
])
def test_bad_tool_metadata_names_the_field(kwargs, named):
    """A bad metadata value is a TypeError naming the field and what it takes."""
    with pytest.raises(TypeError, match=named):
        ToolMetadata(**kwargs)


def test_tool_metadata_is_immutable_and_takes_values_by_name():
    """Metadata cannot change after it is made; enum values are accepted as strings."""
    metadata = ToolMetadata("high", SideEffect.NETWORK, "ask")
    assert metadata == ToolMetadata(RiskLevel.HIGH, SideEffect.NETWORK, DefaultPolicy.ASK)
    with pytest.raises(AttributeError):
        metadata.risk_level = RiskLevel.LOW


def test_registration_errors_are_tool_errors():
    """A duplicate name, an empty name, a non-callable and bad metadata are ToolErrors."""
    session = Session()
    session.register("read", read_file, metadata=READS)
    with pytest.raises(ToolError, match="already registered"):
        session.register("read", read_file)
    with pytest.raises(ToolError, match="non-empty"):
        session.register("", read_file)
    with pytest.raises(ToolError, match="not callable"):
        session.register("x", 42)
    with pytest.raises(ToolError, match="ToolMetadata"):
        session.register("y", read_file, metadata={"risk_level": "low"})


def test_decorator_registers_under_the_function_name_or_the_given_one():
    """@session.tool and @session.tool(name=..., metadata=...) register and return the function."""
    session = Session()

    @session.tool
    def double(x):
        return 2 * x

    @session.tool(name="triple", metadata=ToolMetadata(RiskLevel.LOW))
    def times_three(x):
        return 3 * x

    assert double(2) == 4
    assert session.call("double", x=5) == 10
    assert session.call("triple", x=5) == 15
    assert session.tools["triple"].risk_level is RiskLevel.LOW


@pytest.mark.parametrize("call, message", [
    (lambda s: s.call("missing"), "unknown tool 'missing'"),
    (lambda s: s.call("count", n=1, extra=2), "unknown argument extra"),
    (lambda s: s.call("count"), "missing argument n"),
])
def test_bad_calls_are_tool_errors_and_never_run_the_tool(call, message):
    """An unknown tool or arguments that do not fit its signature fail before it runs."""
    ran = []
    session = Session()
    session.register("count", lambda n, step=1: ran.append(n))
    with pytest.raises(ToolError, match=message):
        call(session)
    assert ran == []


def test_call_returns_the_tools_value_and_raises_its_own_errors():
    """call gives back exactly what the tool returned; the tool's own errors pass unchanged."""
    session = Session()
    value = object()
    session.register("give", lambda: value)
    session.register("fail", lambda: int("x"))
    assert session.call("give") is value
    with pytest.raises(ValueError, match="invalid literal"):
        session.call("fail")


# -- the policy in force inside calls ---------------------------------------------


def test_session_policy_is_in_force_only_inside_its_calls(secret):
    """Without install(), the session's policy judges its tools' calls and nothing else."""
    session = Session(policy=policy_denying(secret))
    session.register("read", read_file, metadata=READS)
    with pytest.raises(SecurityError) as caught:
        session.call("read", path=str(secret / "key"))
    assert caught.value.decision.rule == f"filesystem.deny[{secret}]"
    assert read_file(str(secret / "key")) == "canary-key-material"  # outside a call


def test_undeclared_write_is_blocked_before_it_happens(tmp_path):
    """A tool that declared only reads cannot write: the file is never created."""
    session = Session(policy=policy_denying())
    session.register("write", write_file, metadata=READS)
    target = tmp_path / "out.txt"
    with pytest.raises(SecurityError) as caught:
        session.call("write", path=str(target), text="x")
    assert caught.value.decision.rule == "tool.undeclared"
    assert not target.exists()


def test_undeclared_process_is_blocked_before_it_starts(tmp_path):
    """A tool that declared only files cannot start a process: it never runs."""
    marker = tmp_path / "ran"
    session = Session(policy=policy_denying())
    session.register("run", lambda: subprocess.run(["touch", str(marker)]), metadata=WRITES)
    with pytest.raises(SecurityError):
        session.call("run")
    assert not marker.exists()


def test_default_policy_allow_leaves_undeclared_effects_to_the_policy(tmp_path, secret):
    """With ALLOW, an undeclared operation is judged by the policy alone."""
    session = Session(policy=policy_denying(secret))
    session.register("write", write_file,
                     metadata=ToolMetadata(side_effect=SideEffect.NONE,
                                           default_policy=DefaultPolicy.ALLOW))
    assert session.call("write", path=str(tmp_path / "ok.txt"), text="x") == "written"
    with pytest.raises(SecurityError):
        session.call("write", path=str(secret / "new"), text="x")
    assert not (secret / "new").exists()


def test_imports_inside_a_tool_are_not_side_effects(tmp_path, monkeypatch):
    """A tool with no declared effects may import modules, from the stdlib or the project."""
    (tmp_path / "project_helper.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("project_helper", None)

    def compute():
        import project_helper  # noqa: F401 (a read of the project's file, by the import system)
        import wave  # noqa: F401 (a stdlib module not imported yet)

        return project_helper.VALUE

    session = Session(policy=policy_denying())
    session.register("compute", compute)
    assert session.call("compute") == 7


def test_ask_without_an_approver_denies(tmp_path):
    """ASK with no approver on the session denies the undeclared operation."""
    session = Session(policy=policy_denying())
    session.register("write", write_file,
                     metadata=ToolMetadata(side_effect=SideEffect.FS_READ,
                                           default_policy=DefaultPolicy.ASK))
    with pytest.raises(SecurityError, match="no approver"):
        session.call("write", path=str(tmp_path / "a.txt"), text="x")
    assert not (tmp_path / "a.txt").exists()


def test_ask_with_an_approver_is_decided_by_it(tmp_path):
    """The approver sees the tool, op and target, is asked once per target, and decides."""
    asked = []

    def approver(request):
        asked.append((request.tool, request.op, request.target, request.metadata.default_policy))
        return request.target.endswith("yes.txt")

    session = Session(policy=policy_denying(), approver=approver)
    session.register("write", write_file,
                     metadata=ToolMetadata(side_effect=SideEffect.NONE,
                                           default_policy=DefaultPolicy.ASK))
    assert session.call("write", path=str(tmp_path / "yes.txt"), text="x") == "written"
    with pytest.raises(SecurityError, match="approver did not allow"):
        session.call("write", path=str(tmp_path / "no.txt"), text="x")
    assert (tmp_path / "yes.txt").exists() and not (tmp_path / "no.txt").exists()
    assert asked == [("write", "fs.write", str(tmp_path / "yes.txt"), DefaultPolicy.ASK),
                     ("write", "fs.write", str(tmp_path / "no.txt"), DefaultPolicy.ASK)]


def test_an_approver_that_fails_denies(tmp_path):
    """An approver that raises is a no: the operation is denied."""
    def approver(request):
        raise RuntimeError("approval service down")

    session = Session(policy=policy_denying(), approver=approver)
    session.register("write", write_file, metadata=ToolMetadata(default_policy="ask"))
    with pytest.raises(SecurityError):
        session.call("write", path=str(tmp_path / "a.txt"), text="x")
    assert not (tmp_path / "a.txt").exists()


def test_a_swallowed_denial_still_surfaces_from_call(secret):
    """A tool that catches the SecurityError and returns normally still fails with it."""
    def careless(path):
        try:
            return read_file(path)
        except Exception:
            return "fallback"

    session = Session(policy=policy_denying(secret))
    session.register("read", careless, metadata=READS)
    with pytest.raises(SecurityError) as caught:
        session.call("read", path=str(secret / "key"))
    assert caught.value.decision.target == str(secret / "key")


def test_a_wrapped_denial_surfaces_as_security_error(secret):
    """A tool that turns the denial into its own error raises SecurityError from call,
    chained to the tool's error."""
    def wrapping(path):
        try:
            return read_file(path)
        except OSError as exc:
            raise RuntimeError("could not read") from exc

    session = Session(policy=policy_denying(secret))
    session.register("read", wrapping, metadata=READS)
    with pytest.raises(SecurityError) as caught:
        session.call("read", path=str(secret / "key"))
    assert isinstance(caught.value.__cause__, RuntimeError)


def test_threads_and_executors_started_in_a_call_follow_its_policy(secret):
    """A thread the tool starts, and a job it submits to an executor made before the
    call, run under the call's policy; their denial surfaces from call."""
    pool = ThreadPoolExecutor(max_workers=1)
    pool.submit(lambda: None).result()  # the worker thread exists before the call
    results: list = []

    def in_thread(path):
        thread = threading.Thread(target=lambda: results.append(_try_read(path)))
        thread.start()
        thread.join()
        return "done"

    def in_pool(path):
        return pool.submit(_try_read, path).result()

    session = Session(policy=policy_denying(secret))
    session.register("in_thread", in_thread, metadata=READS)
    session.register("in_pool", in_pool, metadata=READS)
    with pytest.raises(SecurityError):
        session.call("in_thread", path=str(secret / "key"))
    assert results == ["denied"]
    with pytest.raises(SecurityError):
        session.call("in_pool", path=str(secret / "key"))
    assert pool.submit(_try_read, str(secret / "key")).result() == "canary-key-material"
    pool.shutdown()


def _try_read(path: str) -> str:
    try:
        return read_file(path)
    except SecurityError:
        return "denied"


def test_acall_awaits_async_tools_and_runs_sync_ones_under_the_policy(secret):
    """acall awaits an async tool and runs a sync tool in a thread, both under the policy."""
    async def async_read(path):
        await asyncio.sleep(0)
        return await asyncio.get_running_loop().run_in_executor(None, read_file, path)

    session = Session(policy=policy_denying(secret))
    session.register("async_read", async_read, metadata=READS)
    session.register("sync_read", read_file, metadata=READS)

    async def main():
        ok = await session.acall("sync_read", path=__file__)
        for name in ("async_read", "sync_read"):
            with pytest.raises(SecurityError):
                await session.acall(name, path=str(secret / "key"))
        return ok

    assert "Sessions" in asyncio.run(main())
    with pytest.raises(ToolError, match="async"):
        session.call("async_read", path=__file__)


def test_global_install_and_session_must_both_allow(tmp_path, secret):
    """Inside a call, a deny of the global guard stops it too; outside, the session does not."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "f").write_text("x")
    failcore.install(policy_denying(other))
    session = Session(policy=policy_denying(secret))
    session.register("read", read_file, metadata=READS)
    for path in (secret / "key", other / "f"):
        with pytest.raises(SecurityError):
            session.call("read", path=str(path))
    assert read_file(str(secret / "key")) == "canary-key-material"
    with pytest.raises(SecurityError):
        read_file(str(other / "f"))


def test_sessions_work_again_after_uninstall(secret):
    """uninstall() removes every patch; the next session call puts them back."""
    session = Session(policy=policy_denying(secret))
    session.register("read", read_file, metadata=READS)
    with pytest.raises(SecurityError):
        session.call("read", path=str(secret / "key"))
    failcore.uninstall()
    assert not failcore._guard._engaged
    with pytest.raises(SecurityError):
        session.call("read", path=str(secret / "key"))


def test_a_nested_call_is_judged_by_both_and_its_denial_reaches_the_outer_call(secret):
    """A tool calling another tool: the inner call is judged by the inner tool's
    metadata and the outer call's too, and is recorded with its parent."""
    session = Session(policy=policy_denying(secret))
    session.register("read", read_file, metadata=READS)
    session.register("outer", lambda path: session.call("read", path=path),
                     metadata=ToolMetadata(side_effect=SideEffect.NONE))
    with pytest.raises(SecurityError) as caught:
        session.call("outer", path=__file__)  # the outer tool declared no reads
    assert caught.value.decision.rule == "tool.undeclared"


# -- the trace -----------------------------------------------------------------------


def test_trace_records_calls_and_decisions_under_the_schema(tmp_path, secret):
    """Every event validates; seq is contiguous; events of a call carry its id, tool and
    risk level; the chain verifies once the session is closed."""
    path = tmp_path / "t.jsonl"
    session = Session(policy=policy_denying(secret), trace=path)
    session.register("read", read_file, metadata=READS)
    session.register("write", write_file, metadata=READS)
    assert session.call("read", path=__file__).startswith('"""Sessions')
    with pytest.raises(SecurityError):
        session.call("read", path=str(secret / "key"))
    with pytest.raises(SecurityError):
        session.call("write", path=str(tmp_path / "x"), text="y")
    session.close()
    found = events(path)
    assert [e["seq"] for e in found] == list(range(len(found)))
    assert [e["event"] for e in found] == [
        "run.start",
        "tool.call", "guard.decision", "tool.result",
        "tool.call", "guard.decision", "tool.error",
        "tool.call", "guard.decision", "tool.error",
        "run.end"]
    for event in found[1:-1]:
        assert event["risk_level"] == "low" and event["call_id"].startswith("c")
    assert [e["outcome"] for e in found if e["event"] == "guard.decision"] == \
        ["allow", "deny", "deny"]
    assert found[-1] | {"t": None} == {**found[-1], "calls": 3, "denied": 2, "errors": 2,
                                       "t": None}
    assert _trace_read.verify(_trace_read.read(str(path))) == []


PROGRAM = """
import json, sys
from failcore import Session, ToolMetadata, SideEffect, RiskLevel, DefaultPolicy
session = Session(policy={policy!r}, trace=sys.argv[1])
def write(path, text):
    import agent_helper  # the project's own module: bytecode written on the first run
    with open(path, "a") as f:
        f.write(text)
    return {{"path": path, "size": len(text)}}
def read(path):
    with open(path) as f:
        return f.read()
session.register("write", write, metadata=ToolMetadata(RiskLevel.HIGH, SideEffect.FS))
session.register("read", read, metadata=ToolMetadata(RiskLevel.LOW, SideEffect.FS_READ))
print(session.call("write", path={out!r}, text="hello"))
print(session.call("read", path={out!r}))
try:
    session.call("read", path={denied!r})
except Exception as e:
    print(type(e).__name__)
"""


def run_program(tmp_path: Path, trace: Path, secret: Path) -> subprocess.CompletedProcess:
    script = tmp_path / "agent.py"
    script.write_text(PROGRAM.format(policy=policy_denying(secret), out=str(tmp_path / "o.txt"),
                                     denied=str(secret / "key")))
    (tmp_path / "agent_helper.py").write_text("NAME = 'helper'\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return subprocess.run([sys.executable, str(script), str(trace)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_two_runs_of_the_same_program_give_the_same_trace(tmp_path, secret):
    """Apart from "t", the run id and the chain, the same program gives the same trace
    (the second run finds bytecode the first one wrote: no difference)."""
    traces = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
    for trace in traces:
        (tmp_path / "o.txt").unlink(missing_ok=True)
        result = run_program(tmp_path, trace, secret)
        assert result.returncode == 0, result.stderr
    assert list((tmp_path / "__pycache__").glob("agent_helper*.pyc"))
    first, second = (comparable(t) for t in traces)
    first[0].pop("argv"), second[0].pop("argv")  # the trace's own name is an argument
    assert first == second
    assert {e["event"] for e in first} >= {"tool.call", "tool.result", "tool.error",
                                           "guard.decision"}


def test_no_secret_reaches_the_trace(tmp_path):
    """Secrets in arguments, results, errors and decisions are redacted before writing."""
    secrets = ["hunter2-pw", "s3cr3t-api-key", "tok-abcdefghijkl", "ghp_" + "a" * 36,
               "userpass99", "qtoken-777", "cookie-val-123"]
    path = tmp_path / "t.jsonl"

    def fetch(url, headers, password):
        raise ValueError(f"failed for {url} with Authorization: Bearer {secrets[2]}")

    def login(user):
        return {"user": user, "api_key": secrets[1], "note": f"token {secrets[3]}"}

    session = Session(policy=policy_denying(), trace=path)
    session.register("fetch", fetch)
    session.register("login", login)
    with pytest.raises(ValueError):
        session.call("fetch", url=f"https://bob:{secrets[4]}@example.test/x?token={secrets[5]}",
                     headers={"Authorization": f"Bearer {secrets[2]}",
                              "Cookie": secrets[6]}, password=secrets[0])
    session.call("login", user="bob")
    session.close()
    text = path.read_text()
    assert "bob" in text and "[REDACTED]" in text
    for value in secrets:
        assert value not in text


def test_a_crash_leaves_every_complete_line_readable(tmp_path):
    """A process killed mid-run leaves whole lines; verify says the run did not finish."""
    path = tmp_path / "t.jsonl"
    code = (f"import os\nfrom failcore import Session\ns = Session(trace={str(path)!r})\n"
            f"s.register('a', lambda: 1)\ns.call('a')\nos._exit(3)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert result.returncode == 3
    found = _trace_read.read(str(path))
    assert [e["event"] for e in found] == ["run.start", "tool.call", "tool.result"]
    assert any("did not finish" in p for p in _trace_read.verify(found))


def test_global_trace_records_decisions_and_session_calls(tmp_path, secret):
    """install(trace=) records the global guard's decisions, and a session without a
    trace of its own records its calls there."""
    path = tmp_path / "g.jsonl"
    failcore.install(policy_denying(secret), trace=path)
    with pytest.raises(SecurityError):
        read_file(str(secret / "key"))
    session = Session(policy=policy_denying())
    session.register("read", read_file, metadata=READS)
    session.call("read", path=__file__)
    failcore.uninstall()
    found = events(path)
    kinds = [(e["event"], e.get("outcome"), "call_id" in e) for e in found]
    assert kinds[0] == ("run.start", None, False) and kinds[-1] == ("run.end", None, False)
    assert ("guard.decision", "deny", False) in kinds
    assert ("tool.call", None, True) in kinds and ("guard.decision", "allow", True) in kinds


def test_children_do_not_inherit_the_trace(tmp_path):
    """A guarded child gets an empty FAILCORE_TRACE: it cannot truncate the parent's trace."""
    path = tmp_path / "g.jsonl"
    failcore.install("agent_safe", trace=path)
    out = subprocess.run([sys.executable, "-c",
                          "import os; print(repr(os.environ.get('FAILCORE_TRACE')))"],
                         capture_output=True, text=True, timeout=60).stdout
    failcore.uninstall()
    assert out.strip() == "''"
    assert [e["event"] for e in events(path)][-1] == "run.end"


# -- replay ----------------------------------------------------------------------------


def recorded(tmp_path: Path, secret: Path) -> Path:
    path = tmp_path / "rec.jsonl"
    result = run_program(tmp_path, path, secret)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[2] == "SecurityError"
    return path


def replay_session(path: Path, ran: list, trace: Path | None = None) -> Session:
    session = Session(policy=policy_denying(), replay=path, trace=trace)

    def write(path, text):
        ran.append(("write", path))

    def read(path):
        ran.append(("read", path))

    session.register("write", write, metadata=ToolMetadata(RiskLevel.HIGH, SideEffect.FS))
    session.register("read", read, metadata=ToolMetadata(RiskLevel.LOW, SideEffect.FS_READ))
    return session


def test_replay_serves_results_and_errors_without_running_tools(tmp_path, secret):
    """Each call is answered from the recording (results and the recorded SecurityError);
    no tool runs, and no side effect is repeated."""
    path = recorded(tmp_path, secret)
    out = tmp_path / "o.txt"
    assert out.read_text() == "hello"
    ran: list = []
    session = replay_session(path, ran)
    assert session.call("write", path=str(out), text="hello") == {"path": str(out), "size": 5}
    assert session.call("read", path=str(out)) == "hello"
    with pytest.raises(SecurityError) as caught:
        session.call("read", path=str(secret / "key"))
    assert caught.value.decision.rule == f"filesystem.deny[{secret}]"
    assert ran == [] and out.read_text() == "hello"


def test_a_replays_own_trace_matches_the_recording(tmp_path, secret):
    """Replaying with a trace gives the recording's events again; its run.start names
    the recording under "t" (argv differs here: the replay is this test process)."""
    path = recorded(tmp_path, secret)
    again = tmp_path / "again.jsonl"
    session = replay_session(path, [], trace=again)
    session.call("write", path=str(tmp_path / "o.txt"), text="hello")
    session.call("read", path=str(tmp_path / "o.txt"))
    with pytest.raises(SecurityError):
        session.call("read", path=str(secret / "key"))
    session.close()
    original, replayed = comparable(path), comparable(again)
    assert events(again)[0]["t"]["replay"] == {"file": "rec.jsonl",
                                               "run_id": events(path)[0]["run_id"]}
    assert original[1:] == replayed[1:]


@pytest.mark.parametrize("call", [
    lambda s, tmp: s.call("write", path=str(tmp / "o.txt"), text="changed"),
    lambda s, tmp: s.call("read", path=str(tmp / "o.txt")),
])
def test_a_call_that_does_not_match_raises_replay_mismatch(tmp_path, secret, call):
    """A different tool or different arguments than recorded raise ReplayMismatch; the tool never runs."""
    ran: list = []
    session = replay_session(recorded(tmp_path, secret), ran)
    with pytest.raises(ReplayMismatch, match="does not match the recording"):
        call(session, tmp_path)
    assert ran == []


def test_calls_past_the_end_of_the_recording_raise_replay_mismatch(tmp_path):
    """A call the recording does not have is a mismatch, not a real call."""
    path = tmp_path / "r.jsonl"
    with Session(trace=path) as session:
        session.register("one", lambda: 1)
        session.call("one")
    ran: list = []
    replay = Session(replay=path)
    replay.register("one", lambda: ran.append(1))
    assert replay.call("one") == 1
    with pytest.raises(ReplayMismatch, match="was not recorded"):
        replay.call("one")
    assert ran == []


def test_unrecordable_and_redacted_results_fail_closed_on_replay(tmp_path):
    """A result the trace could not hold (bytes) or held only redacted is a ReplayMismatch."""
    path = tmp_path / "r.jsonl"
    with Session(trace=path) as session:
        session.register("blob", lambda: b"\x00bytes")
        session.register("creds", lambda: {"token": "abc-123-secret"})
        session.register("oops", lambda: {}["missing"])
        assert session.call("blob") == b"\x00bytes"
        session.call("creds")
        with pytest.raises(KeyError):
            session.call("oops")
    found = events(path)
    assert {"unrecordable": "builtins.bytes"}.items() <= found[2].items()
    replay = Session(replay=path)
    for name in ("blob", "creds", "oops"):
        replay.register(name, lambda: None)
    with pytest.raises(ReplayMismatch, match="builtins.bytes"):
        replay.call("blob")
    with pytest.raises(ReplayMismatch, match="secrets"):
        replay.call("creds")
    with pytest.raises(KeyError, match="missing"):
        replay.call("oops")


def test_a_tampered_recording_is_refused(tmp_path):
    """A recording whose chain does not verify cannot be replayed."""
    path = tmp_path / "r.jsonl"
    with Session(trace=path) as session:
        session.register("price", lambda: 10)
        session.call("price")
    path.write_text(path.read_text().replace('"result":10', '"result":1000'))
    with pytest.raises(ReplayMismatch, match="fails verification"):
        Session(replay=path)


def test_failcore_disable_switches_sessions_off_too(secret, monkeypatch):
    """With FAILCORE_DISABLE=1 a session's tools run unjudged."""
    monkeypatch.setenv("FAILCORE_DISABLE", "1")
    session = Session(policy=policy_denying(secret))
    session.register("read", read_file, metadata=READS)
    assert session.call("read", path=str(secret / "key")) == "canary-key-material"


def test_a_closed_session_refuses_calls_and_leaves_a_shared_trace_open(tmp_path):
    """close() ends the session and its trace; a trace shared with install() ends only
    when both are done with it."""
    path = tmp_path / "t.jsonl"
    failcore.install("agent_safe", trace=path)
    session = Session(trace=path)
    session.register("one", lambda: 1)
    session.call("one")
    session.close()
    session.close()
    with pytest.raises(ToolError, match="closed"):
        session.call("one")
    assert "run.end" not in path.read_text()
    failcore.uninstall()
    # (the test's own read of the trace above is a guard.decision of the global guard)
    assert [e["event"] for e in events(path) if e["event"] != "guard.decision"] == [
        "run.start", "tool.call", "tool.result", "run.end"]


def test_what_a_module_does_at_import_is_the_tools_own_side_effect(tmp_path, monkeypatch):
    """Importing is the interpreter's own, but a module's top-level code writing a file
    during a tool's import is an undeclared side effect like any other."""
    (tmp_path / "noisy_module.py").write_text(
        f"open({str(tmp_path / 'dropped')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("noisy_module", None)

    def compute():
        import noisy_module  # noqa: F401

    session = Session(policy=policy_denying())
    session.register("compute", compute)
    with pytest.raises(SecurityError):
        session.call("compute")
    assert not (tmp_path / "dropped").exists()
    sys.modules.pop("noisy_module", None)


def test_a_global_guard_in_audit_mode_only_reports_inside_a_call(tmp_path, secret):
    """With install(mode="audit"), a global deny inside a call is a would-deny in the
    global trace and the call goes on; the session's own deny still stops it."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "f").write_text("audited")
    path = tmp_path / "g.jsonl"
    failcore.install(policy_denying(other), mode="audit", trace=path)
    session = Session(policy=policy_denying(secret))
    session.register("read", read_file, metadata=READS)
    assert session.call("read", path=str(other / "f")) == "audited"
    with pytest.raises(SecurityError):
        session.call("read", path=str(secret / "key"))
    failcore.uninstall()
    outcomes = [(e["outcome"], e["target"], e.get("call_id")) for e in events(path)
                if e["event"] == "guard.decision" and e["outcome"] != "allow"]
    assert outcomes == [("would-deny", str(other / "f"), None),
                        ("deny", str(secret / "key"), "c2")]


def test_each_launch_is_one_decision_in_the_trace(tmp_path):
    """subprocess.run and os.posix_spawn are judged once each: their patch marks the
    call, so neither the audit event nor the layer below judges it again."""
    path = tmp_path / "t.jsonl"
    failcore.install("proc_safe", trace=path)
    subprocess.run(["true"], check=True)
    os.waitpid(os.posix_spawn("/bin/true", ["true"], os.environ), 0)
    failcore.uninstall()
    launches = [(e["op"], e["target"]) for e in events(path) if e["event"] == "guard.decision"
                and e["op"] == "proc.exec"]
    assert launches == [("proc.exec", "true"), ("proc.exec", "/bin/true")]


def test_a_trace_records_operations_the_policy_does_not_restrict(tmp_path):
    """With a trace, files and launches are judged and recorded even under a policy
    that restricts only the network, so `trace check` can re-judge them."""
    path = tmp_path / "t.jsonl"
    failcore.install("net_safe", trace=path)
    (tmp_path / "f").write_text("x")
    subprocess.run(["true"], check=True)
    failcore.uninstall()
    recorded = {(e["op"], e["target"], e["outcome"]) for e in events(path)
                if e["event"] == "guard.decision"}
    assert ("fs.write", str(tmp_path / "f"), "allow") in recorded
    assert ("proc.exec", "true", "allow") in recorded
    result = subprocess.run([sys.executable, "-m", "failcore", "trace", "check", str(path),
                             "--policy", "proc_safe"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout  # proc_safe allows `true`
    strict = tmp_path / "strict.toml"
    strict.write_text('version = 1\n[process]\ndefault = "deny"\n')
    result = subprocess.run([sys.executable, "-m", "failcore", "trace", "check", str(path),
                             "--policy", str(strict)], capture_output=True, text=True)
    assert result.returncode == 1 and "true" in result.stdout, result.stdout


# -- found in review: robustness of the trace, the call's reach, replay ------------------


def test_an_event_made_while_a_line_is_written_follows_it(tmp_path, monkeypatch):
    """An event from a signal handler or a finaliser run mid-write (same thread) is
    written after the line in progress: no deadlock, the chain intact."""
    from failcore import _trace

    path = tmp_path / "t.jsonl"
    session = Session(trace=path)
    writer = session._trace
    wall, nested = _trace._wall, []

    def interrupting_wall():
        if not nested:
            nested.append(True)
            writer.emit("guard.decision", {"op": "fs.read", "target": "/x", "action": "allow",
                                           "outcome": "allow", "rule": "r", "reason": "r"})
        return wall()

    monkeypatch.setattr(_trace, "_wall", interrupting_wall)
    session.register("one", lambda: 1)
    assert session.call("one") == 1
    session.close()
    assert [e["event"] for e in events(path)] == ["run.start", "tool.call", "guard.decision",
                                                  "tool.result", "run.end"]
    assert _trace_read.verify(_trace_read.read(str(path))) == []


def test_run_end_counts_are_checked_by_verify(tmp_path):
    """run.end has no line after it to chain it: verify checks its counts instead."""
    path = tmp_path / "t.jsonl"
    with Session(policy=policy_denying(tmp_path / "secret"), trace=path) as session:
        session.register("read", read_file, metadata=READS)
        with pytest.raises(OSError):
            session.call("read", path=str(tmp_path / "secret" / "nothing"))
    path.write_text(path.read_text().replace('"denied":1', '"denied":0'))
    assert any("run.end says denied 0" in p for p in _trace_read.verify(_trace_read.read(str(path))))


def test_a_pool_thread_started_in_a_call_does_not_keep_its_policy(secret):
    """A ThreadPoolExecutor's worker created by a submit inside a call serves later
    jobs outside any call unjudged by that call; the job itself was judged."""
    pool = ThreadPoolExecutor(max_workers=1)
    session = Session(policy=policy_denying(secret))
    session.register("use_pool", lambda path: pool.submit(_try_read, path).result(),
                     metadata=READS)
    with pytest.raises(SecurityError):
        session.call("use_pool", path=str(secret / "key"))
    assert pool.submit(_try_read, str(secret / "key")).result() == "canary-key-material"
    pool.shutdown()


def test_a_done_callback_added_in_a_call_runs_in_it(tmp_path):
    """A future's callback, run by the pool's thread after the job, is judged by the call."""
    pool = ThreadPoolExecutor(max_workers=1)
    pool.submit(lambda: None).result()
    target = tmp_path / "from-callback"

    def tool():
        future = pool.submit(lambda: 42)
        future.add_done_callback(lambda f: write_file(str(target), "x"))
        value = future.result()
        pool.submit(lambda: None).result()  # the callback has run by now
        return value

    session = Session(policy=policy_denying())
    session.register("tool", tool)
    with pytest.raises(SecurityError):
        session.call("tool")
    assert not target.exists()
    pool.shutdown()


def test_a_result_that_runs_later_is_refused(tmp_path):
    """A generator (or a coroutine from a sync wrapper) would run after the call, outside
    its policy: call refuses it without running it."""
    target = tmp_path / "later"

    def lazy():
        write_file(str(target), "x")
        yield 1

    session = Session(policy=policy_denying())
    session.register("lazy", lazy)
    with pytest.raises(SecurityError, match="after the call"):
        session.call("lazy")
    assert not target.exists()


def test_the_denial_wins_over_the_tools_sys_exit(secret):
    """A tool that swallows a denial and then calls sys.exit() still raises the denial."""
    def leave(path):
        _try_read(path)
        sys.exit(0)

    session = Session(policy=policy_denying(secret))
    session.register("leave", leave, metadata=READS)
    with pytest.raises(SecurityError):
        session.call("leave", path=str(secret / "key"))


def test_a_trace_opened_inside_a_call_is_the_tools_write(tmp_path):
    """Session(trace=...) inside a tool writes a file: judged like the tool's other writes."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    outer = Session(policy=policy_denying())
    outer.register("make", lambda: Session(trace=victim))
    with pytest.raises(SecurityError):
        outer.call("make")
    assert victim.read_text() == "precious"


def test_bytecode_the_import_system_cannot_write_does_not_fail_the_call(tmp_path, monkeypatch):
    """A denied __pycache__ write, which importlib skips, is not the tool's denial."""
    package = tmp_path / "lib"
    package.mkdir()
    (package / "readonly_helper.py").write_text("VALUE = 3\n")
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    sys.modules.pop("readonly_helper", None)

    def compute():
        import readonly_helper

        return readonly_helper.VALUE

    session = Session(policy={"version": 1, "filesystem": {
        "default": "allow", "deny": [str(package / "__pycache__")]}})
    session.register("compute", compute)
    assert session.call("compute") == 3
    sys.modules.pop("readonly_helper", None)


def test_replay_tells_arguments_apart_by_json_type_and_path(tmp_path):
    """true is not 1, and a different path (str or Path) is a different call."""
    path = tmp_path / "r.jsonl"
    with Session(trace=path) as session:
        session.register("f", lambda x: "recorded")
        session.call("f", x=1)
        session.call("f", x=str(tmp_path / "a"))
    replay = Session(replay=path)
    replay.register("f", lambda x: "ran")
    with pytest.raises(ReplayMismatch):
        replay.call("f", x=True)
    replay = Session(replay=path)
    replay.register("f", lambda x: "ran")
    assert replay.call("f", x=1) == "recorded"
    with pytest.raises(ReplayMismatch):
        replay.call("f", x=tmp_path / "b")


def test_replayed_errors_keep_their_arguments(tmp_path):
    """An OSError comes back with its errno and file name, a KeyError with its key."""
    path = tmp_path / "r.jsonl"
    with Session(policy=policy_denying(), trace=path) as session:
        session.register("missing", read_file, metadata=READS)
        session.register("lookup", lambda: {}["b"])
        with pytest.raises(FileNotFoundError):
            session.call("missing", path=str(tmp_path / "nope"))
        with pytest.raises(KeyError):
            session.call("lookup")
    replay = Session(replay=path)
    replay.register("missing", read_file, metadata=READS)
    replay.register("lookup", lambda: None)
    with pytest.raises(FileNotFoundError) as caught:
        replay.call("missing", path=str(tmp_path / "nope"))
    assert (caught.value.errno, caught.value.filename) == (2, str(tmp_path / "nope"))
    with pytest.raises(KeyError) as key_error:
        replay.call("lookup")
    assert key_error.value.args == ("b",)


@pytest.mark.parametrize("value, secret", [
    ({"headers": [("Authorization", "abc123xyz")]}, "abc123xyz"),
    ({"cmd": ["psql", "--password", "hunter2x"]}, "hunter2x"),
    ({"env": "PGPASSWORD=pgsecret1 psql"}, "pgsecret1"),
    ({"body": '{"password": "jsonsecret"}'}, "jsonsecret"),
    ({"header": "Cookie: sessionid=cookiesecret"}, "cookiesecret"),
    ({b"password": "bytessecret"}, "bytessecret"),
    ({"passphrase": "phrasesecret"}, "phrasesecret"),
])
def test_more_secret_shapes_are_redacted(tmp_path, value, secret):
    """Header pairs, argv flags, environment assignments, JSON text, cookies, bytes keys."""
    path = tmp_path / "t.jsonl"
    with Session(trace=path) as session:
        session.register("take", lambda data: None)
        session.call("take", data=value)
    assert secret not in path.read_text()


def test_ordinary_fields_are_not_redacted(tmp_path):
    """Counting tokens and naming an author are not secrets."""
    path = tmp_path / "t.jsonl"
    with Session(trace=path) as session:
        session.register("complete", lambda max_tokens, author: {"prompt_tokens": 12})
        session.call("complete", max_tokens=5, author="ann")
    found = events(path)
    assert found[1]["args"] == {"max_tokens": 5, "author": "ann"}
    assert found[2]["result"] == {"prompt_tokens": 12} and "redacted" not in found[2]


def test_arguments_that_cannot_be_recorded_never_break_the_call(tmp_path):
    """Circular arguments, and values that raise when compared, are recorded as markers."""
    class Prickly:
        def __eq__(self, other):
            raise ValueError("ambiguous")

        __ne__ = __eq__
        __hash__ = object.__hash__

    loop: list = []
    loop.append(loop)
    path = tmp_path / "t.jsonl"
    with Session(trace=path) as session:
        session.register("take", lambda data: "ok")
        assert session.call("take", data=loop) == "ok"
        assert session.call("take", data={"password": Prickly()}) == "ok"
    assert [e["event"] for e in events(path)].count("tool.result") == 2


@pytest.mark.parametrize("text, secret", [
    ("login failed for alice with password 'quotedpw1'", "quotedpw1"),
    ("('api_key', 'tuplerepr99')", "tuplerepr99"),
    ("stripe sk_live_51HabcdefSECRET12", "sk_live_51HabcdefSECRET12"),
])
def test_secrets_in_error_messages_are_redacted(tmp_path, text, secret):
    """An error message quoting a secret (quoted, in a tuple repr, a known format) is redacted."""
    path = tmp_path / "t.jsonl"

    def fail():
        raise RuntimeError(text)

    with Session(trace=path) as session:
        session.register("fail", fail)
        with pytest.raises(RuntimeError):
            session.call("fail")
    assert secret not in path.read_text()


def test_a_connection_reused_by_another_call_is_judged_under_its_policy():
    """A keep-alive connection opened by a call a lenient session allowed cannot carry
    data for a call whose session denies that address: the send is judged too."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    received: list[bytes] = []

    def serve():
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(1024):
                received.append(data)

    listener = threading.Thread(target=serve)
    listener.start()
    shared: dict = {}

    def open_and_send():
        shared["conn"] = socket.create_connection(server.getsockname())
        shared["conn"].sendall(b"first;")
        return "sent"

    def reuse():
        shared["conn"].sendall(b"second;")
        return "sent"

    network = ToolMetadata(side_effect=SideEffect.NETWORK)
    lenient = Session(policy={"version": 1, "network": {"allow": ["127.0.0.1"]}})
    lenient.register("open", open_and_send, metadata=network)
    strict = Session(policy="net_safe")
    strict.register("reuse", reuse, metadata=network)
    assert lenient.call("open") == "sent"
    with pytest.raises(SecurityError) as caught:
        strict.call("reuse")
    assert caught.value.decision.op == "net.send"
    shared["conn"].close()
    listener.join(timeout=10)
    server.close()
    assert b"".join(received) == b"first;"

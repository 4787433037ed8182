"""Scenarios: sessions and tools in the network lab (SPEC §6, §7, §10).

The seed snippet runs verbatim; `Session.call` raises `SecurityError` through
every client library, whether the tool let the library's wrapped error escape
or swallowed it; undeclared side effects are stopped before they happen;
concurrent calls of sessions with different policies each keep their own
(threads they start, executor jobs they submit and asyncio tasks included);
one trace shared by many concurrent calls stays well formed; and a global
`install()` and a session must both allow.

Every blocked attack aims at a lab server and asserts that the server
received nothing; every control reads the canary the server serves.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import urllib.error
from typing import Any, Callable
from urllib.parse import urlsplit

import aiohttp
import httpx
import jsonschema
import pytest
import requests

import failcore
from failcore import (DefaultPolicy, RiskLevel, SecurityError, Session, SideEffect, ToolMetadata,
                      _trace_read, presets)
from tests import netlab
from tests.test_scenarios_clients import (
    _no_proxies,  # noqa: F401  (autouse fixture: no proxies from the environment)
    assert_served,
    assert_untouched,
    security_error_in,
    url_for,
    via_urllib,
)

TIMEOUT = 5
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METADATA = netlab.LAB_ADDRESSES["metadata"]  # 169.254.169.254
INTERNAL = netlab.LAB_ADDRESSES["internal"]  # 10.0.0.5
PUBLIC = netlab.PUBLIC                       # 93.184.215.14, api.github.com in the lab
NETWORK_TOOL = ToolMetadata(risk_level=RiskLevel.HIGH, side_effect=SideEffect.NETWORK,
                            default_policy=DefaultPolicy.BLOCK)
# Public addresses and 10.0.0.5 as well: the policy that differs from net_safe.
ALLOWS_INTERNAL = {"version": 1, "network": {"default": "public", "allow": [INTERNAL]}}


def _session(policy: Any, **tools: Callable[..., Any]) -> Session:
    """A session under `policy` with `tools` registered as network tools."""
    session = Session(policy=policy)
    for name, fn in tools.items():
        session.register(name, fn, metadata=NETWORK_TOOL)
    return session


def _served(body: str, host: str, port: int = 80) -> bool:
    return netlab.CANARY in body and f"from {host}:{port}" in body


# -- 1. the seed snippet, verbatim ---------------------------------------------------

# SPEC §6, copied exactly: it must work as written.
SEED_SNIPPET = '''\
from failcore import (Session, presets, ToolMetadata, RiskLevel, SideEffect,
                      DefaultPolicy, SecurityError)

session = Session(validator=presets.net_safe(strict=True))
session.register("http_get", http_get, metadata=ToolMetadata(
    risk_level=RiskLevel.HIGH, side_effect=SideEffect.NETWORK,
    default_policy=DefaultPolicy.BLOCK))
try:
    session.call("http_get", url="http://169.254.169.254/latest/meta-data/")
except SecurityError as e:
    print(f"Attack Neutralized: {e}")
result = session.call("http_get", url="https://api.github.com")
'''

# The tool the snippet expects to find, defined before it as a user would.
SEED_TOOL = '''\
import urllib.request


def http_get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


'''

SEED_REPORT = 'print(f"Result: {result}")\n'


def test_seed_snippet_is_the_specs():
    """The snippet run here is, character for character, the one in SPEC §6."""
    candidates = [os.path.join(REPO, "..", "shared", "SPEC.md"), "/work/shared/SPEC.md"]
    spec = next((path for path in candidates if os.path.exists(path)), None)
    if spec is None:
        pytest.skip("SPEC.md is not next to this checkout")
    with open(spec, encoding="utf-8") as f:
        assert f"```python\n{SEED_SNIPPET}```" in f.read()


def test_seed_snippet_blocks_metadata_and_serves_the_real_call(lab, tmp_path):
    """SPEC §6 verbatim: metadata hears nothing; api.github.com (a lab TLS server) answers."""
    script = tmp_path / "seed.py"
    script.write_text(SEED_TOOL + SEED_SNIPPET + SEED_REPORT)
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("FAILCORE_") and name.lower() not in
           ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update(SSL_CERT_FILE=lab.ca_path, PYTHONPATH=REPO)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Attack Neutralized: Access to private IP range 169.254.0.0/16 is blocked."
    assert lines[1] == f"Result: {netlab.CANARY} from {PUBLIC}:443"
    assert not lab.server(METADATA).touched()
    assert lab.server(PUBLIC, 443).touched()
    assert lab.touched_servers() == [f"{PUBLIC}:443"]


# -- 2. SecurityError through every HTTP client ------------------------------------------


def _requests(url: str) -> str:
    return requests.get(url, timeout=TIMEOUT).text


def _httpx(url: str) -> str:
    return httpx.get(url, timeout=TIMEOUT).text


async def _httpx_async(url: str) -> str:
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        return (await client.get(url)).text


async def _aiohttp(url: str) -> str:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as client:
        async with client.get(url) as response:
            return await response.text()


# client: (fetch(url), the error the library wraps a refused connect in)
CLIENTS: dict[str, tuple[Callable[[str], Any], type[BaseException]]] = {
    "urllib": (via_urllib, urllib.error.URLError),
    "requests": (_requests, requests.exceptions.ConnectionError),
    "httpx": (_httpx, httpx.ConnectError),
    "httpx-async": (_httpx_async, httpx.ConnectError),
    "aiohttp": (_aiohttp, aiohttp.ClientConnectorError),
}
# (client, session method): sync clients through call and acall (a worker thread).
CLIENT_CALLS = [("urllib", "call"), ("urllib", "acall"), ("requests", "call"),
                ("requests", "acall"), ("httpx", "call"), ("httpx", "acall"),
                ("httpx-async", "acall"), ("aiohttp", "acall")]


def _tool(fetch: Callable[[str], Any], swallow: bool) -> Callable[..., Any]:
    """A tool around `fetch`: lets its error escape, or catches everything and returns."""
    if asyncio.iscoroutinefunction(fetch):
        async def async_tool(url: str) -> str:
            try:
                return await fetch(url)
            except Exception as exc:
                if not swallow:
                    raise
                return f"could not fetch: {type(exc).__name__}"
        return async_tool

    def tool(url: str) -> str:
        try:
            return fetch(url)
        except Exception as exc:
            if not swallow:
                raise
            return f"could not fetch: {type(exc).__name__}"
    return tool


def _run(session: Session, how: str, name: str, **kwargs: Any) -> Any:
    if how == "call":
        return session.call(name, **kwargs)
    return asyncio.run(session.acall(name, **kwargs))


@pytest.mark.parametrize("client,how", CLIENT_CALLS, ids=[f"{c}-{h}" for c, h in CLIENT_CALLS])
def test_wrapped_denial_surfaces_as_security_error(lab, client, how):
    """A tool that lets its library's wrapped error escape makes the call raise SecurityError."""
    fetch, wrapped = CLIENTS[client]
    session = _session(presets.net_safe(), fetch=_tool(fetch, swallow=False))
    with pytest.raises(SecurityError) as excinfo:
        _run(session, how, "fetch", url=url_for(INTERNAL))
    assert type(excinfo.value) is SecurityError
    assert excinfo.value.decision.rule == "network.public"
    assert excinfo.value.decision.target == f"{INTERNAL}:80"
    assert isinstance(excinfo.value.__cause__, wrapped), repr(excinfo.value.__cause__)
    assert security_error_in(excinfo.value.__cause__) is not None
    assert_untouched(lab, INTERNAL)


@pytest.mark.parametrize("client,how", CLIENT_CALLS, ids=[f"{c}-{h}" for c, h in CLIENT_CALLS])
def test_swallowed_denial_surfaces_as_security_error(lab, client, how):
    """A tool that catches every exception and returns still makes the call raise SecurityError."""
    fetch, _ = CLIENTS[client]
    session = _session(presets.net_safe(), fetch=_tool(fetch, swallow=True))
    with pytest.raises(SecurityError) as excinfo:
        _run(session, how, "fetch", url=url_for(INTERNAL))
    assert excinfo.value.decision.rule == "network.public"
    assert excinfo.value.decision.target == f"{INTERNAL}:80"
    assert_untouched(lab, INTERNAL)


@pytest.mark.parametrize("client,how", CLIENT_CALLS, ids=[f"{c}-{h}" for c, h in CLIENT_CALLS])
def test_control_allowed_call_returns_the_tools_value(lab, client, how):
    """The same tools reach the public stand-in through the session and return its body."""
    fetch, _ = CLIENTS[client]
    session = _session(presets.net_safe(), fetch=_tool(fetch, swallow=True))
    assert_served(lab, _run(session, how, "fetch", url=url_for(PUBLIC)), PUBLIC)


# -- 3. undeclared side effects --------------------------------------------------------


def _write_file(path: str) -> str:
    with open(path, "w") as f:
        f.write("written by the tool")
    return "written"


def _start_process(marker: str) -> str:
    subprocess.run(["touch", marker], check=True, timeout=TIMEOUT)
    return "started"


def _connect(url: str) -> str:
    return via_urllib(url)


class Effect:
    """One side effect a tool has without declaring it, and how to see that it happened."""

    def __init__(self, name: str, tmp_path: Any, lab: netlab.Lab) -> None:
        self.name = name
        if name == "fs-write":
            self.fn, self.declared, self.op = _write_file, SideEffect.NETWORK, "fs.write"
            self.evidence = tmp_path / "written.txt"
            self.kwargs = {"path": str(self.evidence)}
            self.target = os.path.realpath(self.evidence)
        elif name == "process":
            self.fn, self.declared, self.op = _start_process, SideEffect.NETWORK, "proc.exec"
            self.evidence = tmp_path / "marker"
            self.kwargs = {"marker": str(self.evidence)}
            self.target = "touch"
        else:
            self.fn, self.declared, self.op = _connect, SideEffect.FS, "net.connect"
            self.kwargs = {"url": url_for(PUBLIC)}
            self.target = f"{PUBLIC}:80"
            self.server = lab.server(PUBLIC)

    def happened(self) -> bool:
        if self.name == "network":
            return self.server.touched()
        return self.evidence.exists()

    def session(self, default_policy: DefaultPolicy, approver: Any = None) -> Session:
        """A session under net_safe (which allows all three) with the tool registered."""
        session = Session(validator=presets.net_safe(), approver=approver)
        session.register("tool", self.fn, metadata=ToolMetadata(
            risk_level=RiskLevel.MEDIUM, side_effect=self.declared,
            default_policy=default_policy))
        return session


EFFECTS = ["fs-write", "process", "network"]


@pytest.mark.parametrize("effect", EFFECTS)
def test_undeclared_side_effect_is_blocked_before_it_happens(lab, tmp_path, effect):
    """DefaultPolicy.BLOCK: an undeclared write, launch or connect is denied and never happens."""
    effect = Effect(effect, tmp_path, lab)
    with pytest.raises(SecurityError) as excinfo:
        effect.session(DefaultPolicy.BLOCK).call("tool", **effect.kwargs)
    decision = excinfo.value.decision
    assert (decision.rule, decision.op) == ("tool.undeclared", effect.op)
    assert effect.target in decision.target
    assert not effect.happened()
    assert_untouched(lab)


@pytest.mark.parametrize("effect", EFFECTS)
def test_default_allow_leaves_undeclared_side_effects_to_the_policy(lab, tmp_path, effect):
    """DefaultPolicy.ALLOW: an undeclared write, launch or connect the policy allows happens."""
    effect = Effect(effect, tmp_path, lab)
    assert effect.session(DefaultPolicy.ALLOW).call("tool", **effect.kwargs)
    assert effect.happened()


def _spawn(marker: str) -> int:
    touch = shutil.which("touch")
    assert touch is not None
    pid = os.posix_spawn(touch, ["touch", marker], dict(os.environ))
    return os.waitpid(pid, 0)[1]


# launcher: tool(marker) that has `touch` create `marker`
LAUNCHERS = {
    "subprocess": _start_process,
    "subprocess-env": lambda marker: subprocess.run(
        ["touch", marker], env={"PATH": os.defpath}, check=True).returncode,
    "posix_spawn": _spawn,
    "system": lambda marker: os.system(f"touch {shlex.quote(marker)}"),
}


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_control_declared_launch_runs_under_restricting_process_rules(tmp_path, launcher):
    """A tool declaring PROCESS runs `touch` in a session whose process rules deny only curl."""
    marker = tmp_path / "marker"
    session = Session(policy={"version": 1, "process": {"deny": ["curl"]}})
    session.register("tool", LAUNCHERS[launcher], metadata=ToolMetadata(
        risk_level=RiskLevel.HIGH, side_effect=SideEffect.PROCESS,
        default_policy=DefaultPolicy.BLOCK))
    session.call("tool", marker=str(marker))
    assert marker.exists()


def test_default_allow_still_denies_what_the_policy_denies(lab):
    """Under DefaultPolicy.ALLOW an undeclared connect the policy denies is still denied."""
    session = Session(validator=presets.net_safe())
    session.register("tool", _connect, metadata=ToolMetadata(
        risk_level=RiskLevel.MEDIUM, side_effect=SideEffect.FS,
        default_policy=DefaultPolicy.ALLOW))
    with pytest.raises(SecurityError) as excinfo:
        session.call("tool", url=url_for(INTERNAL))
    assert excinfo.value.decision.rule == "network.public"
    assert_untouched(lab, INTERNAL)


def _approver_saying(answer: Any, asked: list) -> Callable[[Any], bool]:
    def approver(request: failcore.ApprovalRequest) -> bool:
        asked.append(request)
        if isinstance(answer, BaseException):
            raise answer
        return answer
    return approver


# approver: (how it answers, or None for no approver; whether the effect happens)
APPROVERS = {
    "none": (None, False),
    "yes": (True, True),
    "no": (False, False),
    "raises": (RuntimeError("the approver broke"), False),
}


@pytest.mark.parametrize("approver", APPROVERS)
@pytest.mark.parametrize("effect", EFFECTS)
def test_default_ask_puts_undeclared_side_effects_to_the_approver(lab, tmp_path, effect, approver):
    """Under DefaultPolicy.ASK only an approver returning True lets an undeclared effect happen."""
    effect = Effect(effect, tmp_path, lab)
    answer, happens = APPROVERS[approver]
    asked: list[failcore.ApprovalRequest] = []
    session = effect.session(DefaultPolicy.ASK, None if answer is None
                             else _approver_saying(answer, asked))
    if happens:
        assert session.call("tool", **effect.kwargs)
        assert effect.happened()
    else:
        with pytest.raises(SecurityError) as excinfo:
            session.call("tool", **effect.kwargs)
        decision = excinfo.value.decision
        assert (decision.rule, decision.op) == ("tool.undeclared", effect.op)
        assert not effect.happened()
        assert_untouched(lab)
    if answer is None:
        return
    request = next(request for request in asked if request.op == effect.op)
    assert request.tool == "tool"
    assert effect.target in request.target
    assert request.metadata.default_policy is DefaultPolicy.ASK
    assert request.metadata.side_effect is effect.declared
    # `decision` is the deny the operation gets unless the approver returns True.
    assert request.decision.action is failcore.Action.DENY
    assert (request.decision.rule, request.decision.op) == ("tool.undeclared", request.op)
    assert request.decision.target == request.target
    assert all(r.tool == "tool" for r in asked)


def test_one_launch_is_put_to_the_approver_once(tmp_path):
    """One undeclared subprocess.run asks the approver once and leaves one decision in the trace."""
    path = tmp_path / "run.jsonl"
    marker = tmp_path / "marker"
    asked: list[failcore.ApprovalRequest] = []
    with Session(validator=presets.net_safe(), trace=str(path),
                 approver=_approver_saying(True, asked)) as session:
        session.register("tool", _start_process, metadata=ToolMetadata(
            risk_level=RiskLevel.MEDIUM, side_effect=SideEffect.NONE,
            default_policy=DefaultPolicy.ASK))
        session.call("tool", marker=str(marker))
    assert marker.exists()
    launches = [event for event in _trace_read.read(str(path))
                if event["event"] == "guard.decision" and event["op"] == "proc.exec"]
    assert [(r.op, r.target) for r in asked] == [("proc.exec", f"touch {marker}")]
    assert [(e["target"], e["rule"]) for e in launches] == [(f"touch {marker}", "tool.approved")]


# -- 4. concurrency --------------------------------------------------------------------


def test_sessions_keep_their_own_policies_in_concurrent_threads(lab):
    """Calls of two sessions running at once in a thread pool are each judged by their own."""
    parties = 8
    barrier = threading.Barrier(parties)

    def fetch(url: str) -> str:
        barrier.wait(TIMEOUT)  # every call is inside its session at once
        return via_urllib(url)

    allowing = _session(ALLOWS_INTERNAL, fetch=fetch)
    denying = _session(presets.net_safe(), fetch=fetch)

    def one(i: int) -> tuple[str, str]:
        try:
            return "served", (allowing if i % 2 == 0 else denying).call(
                "fetch", url=url_for(INTERNAL))
        except SecurityError as exc:
            return "denied", exc.decision.rule

    with concurrent.futures.ThreadPoolExecutor(parties) as pool:
        outcomes = list(pool.map(one, range(parties)))
    for i, (outcome, detail) in enumerate(outcomes):
        if i % 2 == 0:
            assert outcome == "served" and _served(detail, INTERNAL), (i, outcome, detail)
        else:
            assert (outcome, detail) == ("denied", "network.public"), i
    assert len(lab.server(INTERNAL).connections) == parties // 2
    assert lab.touched_servers() == [f"{INTERNAL}:80"]


async def _asyncio_get(url: str) -> str:
    """GET `url` over asyncio streams, in the calling task (no worker thread)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(parts.hostname, parts.port or 80), TIMEOUT)
    try:
        writer.write(f"GET / HTTP/1.0\r\nHost: {parts.hostname}\r\n\r\n".encode())
        return (await asyncio.wait_for(reader.read(), TIMEOUT)).decode("latin-1")
    finally:
        writer.close()


def test_sessions_keep_their_own_policies_in_concurrent_tasks(lab):
    """acall of two sessions gathered on one event loop: each task is judged by its own session."""
    parties = 8

    async def main() -> list[tuple[str, str]]:
        everyone_in = asyncio.Event()
        entered = 0

        async def fetch(url: str) -> str:
            nonlocal entered
            entered += 1
            if entered == parties:
                everyone_in.set()
            await asyncio.wait_for(everyone_in.wait(), TIMEOUT)
            return await _asyncio_get(url)

        allowing = _session(ALLOWS_INTERNAL, fetch=fetch)
        denying = _session(presets.net_safe(), fetch=fetch)

        async def one(i: int) -> tuple[str, str]:
            try:
                return "served", await (allowing if i % 2 == 0 else denying).acall(
                    "fetch", url=url_for(INTERNAL))
            except SecurityError as exc:
                return "denied", exc.decision.rule

        return await asyncio.gather(*(one(i) for i in range(parties)))

    outcomes = asyncio.run(main())
    for i, (outcome, detail) in enumerate(outcomes):
        if i % 2 == 0:
            assert outcome == "served" and _served(detail, INTERNAL), (i, outcome, detail)
        else:
            assert (outcome, detail) == ("denied", "network.public"), i
    assert len(lab.server(INTERNAL).connections) == parties // 2
    assert lab.touched_servers() == [f"{INTERNAL}:80"]


class Offload:
    """A tool that does its fetching in another thread and swallows whatever happened there."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.errors: list[BaseException] = []
        # Made and warmed BEFORE any call: its worker thread exists already.
        self.pool = concurrent.futures.ThreadPoolExecutor(1)
        self.pool.submit(int).result(TIMEOUT)

    def close(self) -> None:
        self.pool.shutdown()

    def _fetch(self, url: str) -> str:
        try:
            return via_urllib(url)
        except Exception as exc:
            self.errors.append(exc)
            return "nothing"

    def sync_tool(self, url: str) -> str:
        if self.how == "thread":
            box: list[str] = []
            thread = threading.Thread(target=lambda: box.append(self._fetch(url)))
            thread.start()
            thread.join(TIMEOUT)
            return box[0]
        return self.pool.submit(self._fetch, url).result(TIMEOUT)

    async def async_tool(self, url: str) -> str:
        loop = asyncio.get_running_loop()
        executor = self.pool if self.how == "run_in_executor-pool" else None
        return await loop.run_in_executor(executor, self._fetch, url)

    def call(self, session: Session, url: str) -> str:
        if self.how in ("thread", "pool-made-before"):
            return session.call("tool", url=url)

        async def main() -> str:
            # The loop's default executor is warmed outside the call, too.
            await asyncio.get_running_loop().run_in_executor(None, int)
            return await session.acall("tool", url=url)
        return asyncio.run(main())

    def session(self, policy: Any) -> Session:
        session = Session(policy=policy)
        tool = self.sync_tool if self.how in ("thread", "pool-made-before") else self.async_tool
        session.register("tool", tool, metadata=NETWORK_TOOL)
        return session


OFFLOADS = ["thread", "pool-made-before", "run_in_executor-default", "run_in_executor-pool"]


@pytest.mark.parametrize("how", OFFLOADS)
def test_work_a_tool_offloads_to_another_thread_is_judged_by_the_call(lab, how):
    """A denied connect in a thread or executor the tool used fails there and the call raises."""
    offload = Offload(how)
    try:
        with pytest.raises(SecurityError) as excinfo:
            offload.call(offload.session(presets.net_safe()), url_for(INTERNAL))
        assert excinfo.value.decision.rule == "network.public"
        assert len(offload.errors) == 1 and security_error_in(offload.errors[0])
        assert_untouched(lab, INTERNAL)
        # Outside the call, with no global guard, the same pool thread is not held back.
        assert_served(lab, offload.pool.submit(via_urllib, url_for(INTERNAL)).result(TIMEOUT),
                      INTERNAL)
    finally:
        offload.close()


@pytest.mark.parametrize("how", OFFLOADS)
def test_control_offloaded_work_follows_an_allowing_call(lab, how):
    """In a session allowing 10.0.0.5 the offloaded fetch reaches it: the call's own policy."""
    offload = Offload(how)
    try:
        assert_served(lab, offload.call(offload.session(ALLOWS_INTERNAL), url_for(INTERNAL)),
                      INTERNAL)
        assert offload.errors == []
    finally:
        offload.close()


def _schema_validator() -> jsonschema.Draft202012Validator:
    with open(os.path.join(os.path.dirname(failcore.__file__), "trace.schema.json")) as f:
        schema = json.load(f)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_shared_trace_of_concurrent_calls_is_well_formed(lab, tmp_path):
    """Concurrent calls of two sessions in one trace: valid lines, seq, call ids, intact chain."""
    path = str(tmp_path / "run.jsonl")
    parties = 8
    barrier = threading.Barrier(parties)

    def fetch(url: str, n: int) -> str:
        barrier.wait(TIMEOUT)
        return f"{n}:{via_urllib(url)}"

    async def afetch(url: str, n: int) -> str:
        await asyncio.sleep(0)
        return f"{n}:{await _asyncio_get(url)}"

    denying = Session(validator=presets.net_safe(), trace=path)
    allowing = Session(policy=ALLOWS_INTERNAL, trace=path)
    for session in (denying, allowing):
        session.register("fetch", fetch, metadata=NETWORK_TOOL)
        session.register("afetch", afetch, metadata=NETWORK_TOOL)

    def plan(n: int) -> tuple[Session, str, bool]:
        """Call n: its session, its URL, and whether it is denied."""
        session = denying if n % 3 == 0 else allowing
        host = INTERNAL if n % 2 else PUBLIC
        return session, url_for(host), session is denying and host == INTERNAL

    def one(n: int) -> None:
        session, url, _ = plan(n)
        try:
            session.call("fetch", url=url, n=n)
        except SecurityError:
            pass

    async def one_async(n: int) -> None:
        session, url, _ = plan(n)
        try:
            await session.acall("afetch", url=url, n=n)
        except SecurityError:
            pass

    async def tasks() -> None:
        await asyncio.gather(*(one_async(n) for n in range(24, 40)))

    try:
        with concurrent.futures.ThreadPoolExecutor(parties) as pool:
            waited = [pool.submit(one, n) for n in range(24)]
            asyncio.run(tasks())
            for future in waited:
                future.result(TIMEOUT * 4)
    finally:
        denying.close()
        allowing.close()

    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    validator = _schema_validator()
    events = []
    for number, line in enumerate(lines):
        event = json.loads(line)
        errors = sorted(validator.iter_errors(event), key=str)
        assert not errors, f"line {number + 1}: {errors[0].message}"
        events.append(event)
    assert [e["seq"] for e in events] == list(range(len(events)))
    assert events[0]["event"] == "run.start" and events[-1]["event"] == "run.end"
    assert _trace_read.verify(_trace_read.read(path)) == []

    calls = [e for e in events if e["event"] == "tool.call"]
    assert sorted(e["args"]["n"] for e in calls) == list(range(40))
    assert len({e["call_id"] for e in calls}) == 40
    by_call: dict[str, list[dict]] = {e["call_id"]: [] for e in calls}
    for event in events:
        if event["event"] in ("run.start", "run.end"):
            assert "call_id" not in event
        else:
            by_call[event["call_id"]].append(event)  # no event outside a known call
    denied_total = 0
    open_calls = most_open = 0
    for event in events:  # calls really overlapped
        open_calls += {"tool.call": 1, "tool.result": -1, "tool.error": -1}.get(event["event"], 0)
        most_open = max(most_open, open_calls)
    assert most_open >= parties
    for call_id, own in by_call.items():
        first, *middle, last = own
        n = first["args"]["n"]
        _, url, denied = plan(n)
        target = urlsplit(url).netloc
        assert first["event"] == "tool.call"
        assert first["tool"] == ("fetch" if n < 24 else "afetch")
        assert {(e["tool"], e["risk_level"]) for e in own} == {(first["tool"], "high")}
        assert all(e["event"] == "guard.decision" for e in middle), own
        connects = [e for e in middle if e["op"] == "net.connect"]
        if denied:
            denied_total += 1
            assert last["event"] == "tool.error", own
            assert last["error"]["decision"]["rule"] == "network.public"
            assert [(e["target"], e["outcome"]) for e in connects] == [(target, "deny")]
        else:
            assert last["event"] == "tool.result", own
            assert last["result"].startswith(f"{n}:") and netlab.CANARY in last["result"]
            assert [(e["target"], e["outcome"]) for e in connects] == [(target, "allow")]
    assert events[-1]["calls"] == 40
    assert events[-1]["errors"] == denied_total
    assert events[-1]["denied"] == sum(1 for e in events if e["event"] == "guard.decision"
                                       and e["outcome"] != "allow")
    assert len(lab.server(INTERNAL).connections) == sum(
        1 for n in range(40) if plan(n)[1] == url_for(INTERNAL) and not plan(n)[2])


# -- 5. a global install() and a session -----------------------------------------------


def test_global_allow_does_not_open_what_the_session_denies(lab):
    """install() allows 10.0.0.5, a session denies it: denied inside the call, allowed outside."""
    failcore.install(ALLOWS_INTERNAL)
    session = _session(presets.net_safe(), fetch=via_urllib)
    with pytest.raises(SecurityError) as excinfo:
        session.call("fetch", url=url_for(INTERNAL))
    assert excinfo.value.decision.rule == "network.public"
    assert_untouched(lab, INTERNAL)
    assert_served(lab, via_urllib(url_for(INTERNAL)), INTERNAL)


def test_global_deny_applies_inside_a_session_that_allows(lab):
    """A session allowing 10.0.0.5 is denied it once install() denies it, even installed later."""
    session = _session(ALLOWS_INTERNAL, fetch=via_urllib)
    assert_served(lab, session.call("fetch", url=url_for(INTERNAL)), INTERNAL)
    lab.reset()
    failcore.install("net_safe")
    with pytest.raises(SecurityError) as excinfo:
        session.call("fetch", url=url_for(INTERNAL))
    assert excinfo.value.decision.rule == "network.public"
    assert_untouched(lab, INTERNAL)
    with pytest.raises(urllib.error.URLError) as outside:
        via_urllib(url_for(INTERNAL))
    assert security_error_in(outside.value) is not None
    assert_untouched(lab, INTERNAL)
    assert_served(lab, session.call("fetch", url=url_for(PUBLIC)), PUBLIC)


# A Python child that connects to 10.0.0.5:80 and says how that went.
CHILD_CONNECT = f"""\
import socket
try:
    socket.create_connection(({INTERNAL!r}, 80), timeout=5).close()
    print("connected")
except PermissionError as exc:
    print("denied", type(exc).__name__, exc.decision.rule)
"""


@pytest.mark.parametrize("own_env", [False, True], ids=["inherited-env", "own-env"])
def test_child_started_in_a_call_carries_the_global_guard(lab, own_env):
    """A Python child launched inside a call comes up under install()'s policy, own env= or not."""
    failcore.install("net_safe")

    def launch() -> str:
        env = {"PATH": os.defpath} if own_env else None
        return subprocess.run([sys.executable, "-c", CHILD_CONNECT], capture_output=True,
                              text=True, timeout=30, env=env, check=True).stdout

    session = Session(policy=ALLOWS_INTERNAL)  # allows 10.0.0.5; launches unrestricted
    session.register("launch", launch, metadata=ToolMetadata(
        risk_level=RiskLevel.HIGH, side_effect=SideEffect.PROCESS,
        default_policy=DefaultPolicy.BLOCK))
    assert session.call("launch").split() == ["denied", "SecurityError", "network.public"]
    assert_untouched(lab, INTERNAL)

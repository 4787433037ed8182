"""failcore's performance budget (SPEC §9), measured as ratios in one run.

    python benchmarks/run.py [--json PATH] [--quick] [--check] [--only NAME ...]

Every comparison times the unguarded and the guarded call in the same
process, in alternating rounds (ABBA order, so drift and machine noise fall
on both sides alike), and reports the median per-call time of each side and
their ratio. Nothing here asserts an absolute time: the exit code is 0 unless
`--check` is given and a budget is exceeded (1), or the guard could not be
measured at all (2).

A benchmark is one function registered with `@benchmark`; it takes the
`Config` and returns a `Row` (or a list, when one measurement feeds
several rows). Only loopback traffic is ever made, apart from the one-time
`pip install failcore==0.1.3` (from PyPI) of the `session` benchmark's
comparison, which `--skip-0.1.3` leaves out.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import failcore
from failcore import _addresses

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_JSON = os.path.join(HERE, "results.json")
# Where the virtual environment holding FailCore 0.1.3 (the `session` rows'
# comparison) is made once and kept.
DEFAULT_CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                             "failcore-benchmarks")

# What the guarded side runs under: allowed by an explicit rule, so the
# measured path is the whole allow path (judge, then call the original).
CONNECT_POLICY = failcore.Policy.from_dict(
    {"version": 1, "network": {"default": "public", "allow": ["127.0.0.1"]}},
    source="<benchmarks: connect>")
RESOLVE_POLICY = failcore.Policy.from_dict(
    {"version": 1, "network": {"default": "public", "allow": ["127.0.0.1", "::1"]}},
    source="<benchmarks: resolve>")

PUBLIC_IP = "93.184.215.14"

# SO_LINGER {on, 0 s}: close() resets the connection, so tens of thousands
# of loopback connects leave no TIME_WAIT sockets behind to exhaust ports.
_LINGER_RESET = struct.pack("ii", 1, 0)


# -- results -----------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """A limit from SPEC §9: a ratio, an absolute time, or a time above the bare call."""

    kind: str      # "ratio" | "ns" | "extra_ns"
    limit: float

    @classmethod
    def ratio(cls, limit: float) -> Budget:
        return cls("ratio", limit)

    @classmethod
    def ns(cls, limit: float) -> Budget:
        return cls("ns", limit)

    @classmethod
    def extra_ns(cls, limit: float) -> Budget:
        return cls("extra_ns", limit)

    def text(self) -> str:
        if self.kind == "ratio":
            return f"<= {self.limit:g}x"
        if self.kind == "ns":
            return f"<= {_fmt_ns(self.limit)}"
        return f"<= +{_fmt_ns(self.limit)}"

    def holds(self, row: Row) -> bool:
        if self.kind == "ratio":
            return row.ratio is not None and row.ratio <= self.limit
        if self.kind == "ns":
            return row.guarded_ns <= self.limit
        return row.unguarded_ns is not None and row.guarded_ns - row.unguarded_ns <= self.limit


@dataclass
class Row:
    """One line of the table: medians of the per-call times over all rounds."""

    name: str
    description: str
    guarded: list[float]                  # per-call ns, one sample per round
    unguarded: list[float] | None = None  # None: nothing to compare with
    budget: Budget | None = None
    calls_per_round: int = 0
    notes: list[str] = field(default_factory=list)
    unavailable: str | None = None        # why it could not be measured (no samples then)

    @classmethod
    def not_measured(cls, name: str, description: str, reason: str,
                     budget: Budget | None = None) -> Row:
        """A row that shows "unavailable: <reason>" in place of figures."""
        return cls(name, description, [], None, budget, 0, unavailable=reason)

    @property
    def guarded_ns(self) -> float | None:
        return statistics.median(self.guarded) if self.guarded else None

    @property
    def unguarded_ns(self) -> float | None:
        return statistics.median(self.unguarded) if self.unguarded else None

    @property
    def ratio(self) -> float | None:
        base, guarded = self.unguarded_ns, self.guarded_ns
        return guarded / base if base and guarded is not None else None

    @property
    def extra_ns(self) -> float | None:
        """Time above the unguarded call (the difference of the medians)."""
        base, guarded = self.unguarded_ns, self.guarded_ns
        return guarded - base if base is not None and guarded is not None else None

    @property
    def ok(self) -> bool | None:
        return self.budget.holds(self) if self.budget and self.guarded else None

    def to_dict(self) -> dict[str, Any]:
        paired = ([g / u for g, u in zip(self.guarded, self.unguarded)]
                  if self.unguarded else None)
        return {
            "name": self.name,
            "description": self.description,
            "unguarded_ns": _round(self.unguarded_ns),
            "guarded_ns": _round(self.guarded_ns),
            "extra_ns": _round(self.extra_ns),
            "ratio": _round(self.ratio, 4),
            "budget": None if self.budget is None else {
                "kind": self.budget.kind, "limit": self.budget.limit,
                "text": self.budget.text()},
            "ok": self.ok,
            "calls_per_round": self.calls_per_round,
            "samples_ns": {
                "unguarded": [_round(x) for x in self.unguarded] if self.unguarded else None,
                "guarded": [_round(x) for x in self.guarded],
            },
            "ratio_per_round": [_round(r, 4) for r in paired] if paired else None,
            "notes": self.notes,
            "unavailable": self.unavailable,
        }


def _round(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def _fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "-"
    if ns < 1_000:
        return f"{ns:.0f} ns"
    if ns < 1_000_000:
        return f"{ns / 1_000:.2f} us"
    return f"{ns / 1_000_000:.2f} ms"


# -- timing --------------------------------------------------------------------

# A timed block: run the operation `n` times and return the elapsed ns.
Block = Callable[[int], int]


@dataclass(frozen=True)
class Config:
    """How long to measure: `rounds` per side, each a block of about `block_s` seconds."""

    rounds: int
    block_s: float
    quick: bool
    cache_dir: str = DEFAULT_CACHE  # where the FailCore 0.1.3 venv is kept
    pypi_baseline: bool = True      # measure FailCore 0.1.3 (installed from PyPI once)


class GuardNotActive(RuntimeError):
    """install() did not leave the guard on (FAILCORE_DISABLE=1, for instance)."""


def _install(policy: failcore.Policy) -> None:
    """The guard on, in enforce mode, or GuardNotActive."""
    failcore.install(policy, mode="enforce")
    if failcore.installed_mode() is not failcore.Mode.ENFORCE:
        failcore.uninstall()
        raise GuardNotActive("failcore.install() left the guard off; is FAILCORE_DISABLE set?")


class _Guarded:
    """`with _Guarded(policy):` - the guard on, in enforce mode, for one block."""

    def __init__(self, policy: failcore.Policy) -> None:
        self.policy = policy

    def __enter__(self) -> None:
        _install(self.policy)

    def __exit__(self, *exc: object) -> None:
        failcore.uninstall()


class _Unguarded:
    def __enter__(self) -> None:
        failcore.uninstall()

    def __exit__(self, *exc: object) -> None:
        pass


def _timed(block: Block, n: int) -> float:
    """Per-call ns of one block, with the collector off (as timeit does)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return block(n) / n
    finally:
        if enabled:
            gc.enable()


def _calibrate(block: Block, block_s: float, cap: int | None = None) -> int:
    """How many calls fill a block of about `block_s` seconds."""
    n = 1
    while True:
        elapsed = block(n)
        if elapsed >= 20_000_000 or (cap is not None and n >= cap):  # 20 ms is enough to scale from
            break
        n *= 4
    per_call = elapsed / n
    n = max(1, int(block_s * 1e9 / per_call))
    return min(n, cap) if cap is not None else n


def compare(cfg: Config, block: Block, policy: failcore.Policy) -> tuple[list[float], list[float], int]:
    """Alternate unguarded and guarded blocks; per-call ns of each round, and calls per block.

    A short untimed block of each side comes first, so caches on both sides
    (the policy's memo, the resolver, the allocator) are warm.
    """
    n = _calibrate(block, cfg.block_s)
    sides = {"unguarded": _Unguarded(), "guarded": _Guarded(policy)}
    for side in sides.values():
        with side:
            block(max(1, n // 10))
    samples: dict[str, list[float]] = {"unguarded": [], "guarded": []}
    for i in range(cfg.rounds):
        order = ("unguarded", "guarded") if i % 2 == 0 else ("guarded", "unguarded")
        for name in order:
            with sides[name]:
                samples[name].append(_timed(block, n))
    return samples["unguarded"], samples["guarded"], n


def compare_calls(cfg: Config, bare: Block, wrapped: Block) -> tuple[list[float], list[float],
                                                                   int, int]:
    """Alternate two blocks that need no install() (a function bare, and called
    through something); per-call ns of each round, and calls per block of each.

    Each side is calibrated on its own, so both blocks last about `block_s`
    however far apart their per-call times are. Each side runs once, untimed,
    first (warm caches).
    """
    blocks = (bare, wrapped)
    counts = (_calibrate(bare, cfg.block_s), _calibrate(wrapped, cfg.block_s))
    for block, n in zip(blocks, counts):
        block(max(1, n // 10))
    samples: tuple[list[float], list[float]] = ([], [])
    for i in range(cfg.rounds):
        for side in ((0, 1) if i % 2 == 0 else (1, 0)):
            samples[side].append(_timed(blocks[side], counts[side]))
    return samples[0], samples[1], counts[0], counts[1]


def measure(cfg: Config, block: Block, *, cap: int | None = None,
            setup: Callable[[], None] | None = None) -> tuple[list[float], int]:
    """Per-call ns of `block` alone, over `cfg.rounds` blocks; `setup` runs before each."""
    if setup:
        setup()
    n = _calibrate(block, cfg.block_s, cap)
    if setup:
        setup()
    block(max(1, n // 10))
    samples = []
    for _ in range(cfg.rounds):
        if setup:
            setup()
        samples.append(_timed(block, n))
    return samples, n


# -- fixtures ------------------------------------------------------------------


class _LoopbackServer:
    """A listening TCP socket on 127.0.0.1 with an ephemeral port."""

    def __enter__(self) -> socket.socket:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        return self.sock

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def _connect_block(server: socket.socket) -> Block:
    """connect + accept + close of one loopback connection, `n` times.

    `sock.connect` is looked up on every call, so the same code runs the
    original or failcore's wrapper depending on what is installed.
    """
    address = server.getsockname()
    accept = server.accept

    def block(n: int) -> int:
        new = socket.socket
        start = time.perf_counter_ns()
        for _ in range(n):
            client = new(socket.AF_INET, socket.SOCK_STREAM)
            client.connect(address)
            peer, _ = accept()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            client.close()
            peer.close()
        return time.perf_counter_ns() - start

    return block


def _repeat_block(call: Callable[[], Any]) -> Block:
    """`call()`, `n` times."""

    def block(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            call()
        return time.perf_counter_ns() - start

    return block


# -- the benchmarks ----------------------------------------------------------------

# A benchmark returns its row (or, when one measurement feeds several, its rows).
Benchmark = Callable[[Config], "Row | list[Row]"]
BENCHMARKS: dict[str, Benchmark] = {}


def benchmark(name: str) -> Callable[[Benchmark], Benchmark]:
    """Register a benchmark under `name` (what `--only` selects); rows print in this order."""

    def register(fn: Benchmark) -> Benchmark:
        BENCHMARKS[name] = fn
        return fn

    return register


@benchmark("connect")
def bench_connect(cfg: Config) -> Row:
    with _LoopbackServer() as server:
        unguarded, guarded, n = compare(cfg, _connect_block(server), CONNECT_POLICY)
    return Row("connect 127.0.0.1", "socket(); connect; accept; close both (SO_LINGER 0)",
               guarded, unguarded, Budget.ratio(1.2), n)


@benchmark("decision-memo")
def bench_decision_memo(cfg: Config) -> Row:
    policy = CONNECT_POLICY
    check = policy.check_connect
    check(PUBLIC_IP, 443)

    def block(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            check(PUBLIC_IP, 443)
        return time.perf_counter_ns() - start

    samples, n = measure(cfg, block)
    return Row("decision: memoised", f"policy.check_connect({PUBLIC_IP!r}, 443), repeated",
               samples, None, Budget.ns(1_000), n)


@benchmark("decision-judge")
def bench_decision_judge(cfg: Config) -> Row:
    policy = CONNECT_POLICY
    ip = _addresses.parse_ip(PUBLIC_IP)
    judge = policy._judge_ip

    def block(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            judge(ip, 443, (), "net.connect")
        return time.perf_counter_ns() - start

    samples, n = measure(cfg, block)
    return Row("decision: first judgement", f"policy._judge_ip({PUBLIC_IP}, 443), no memo",
               samples, None, Budget.ns(1_000), n,
               notes=["format_ip's lru_cache is warm: the same address every call"])


@benchmark("decision-cold")
def bench_decision_cold(cfg: Config) -> Row:
    # A different public address on every call, every cache emptied before
    # each block: parse, judge, format and memoise from nothing.
    texts = [f"93.{b}.{c}.{d}" for b in range(184, 188) for c in range(16) for d in range(1, 129)]
    state = {"policy": CONNECT_POLICY}

    def setup() -> None:
        state["policy"] = failcore.Policy.from_dict(CONNECT_POLICY.config, source="<cold>")
        _addresses.parse_ip.cache_clear()
        _addresses.format_ip.cache_clear()

    def block(n: int) -> int:
        check = state["policy"].check_connect
        start = time.perf_counter_ns()
        for text in texts[:n]:
            check(text, 443)
        return time.perf_counter_ns() - start

    samples, n = measure(cfg, block, cap=min(len(texts), 4096), setup=setup)
    return Row("decision: new IP, cold", "check_connect on a new address, all caches empty",
               samples, None, None, n,
               notes=["informational: what the first connect to an address pays"])


@benchmark("getaddrinfo")
def bench_getaddrinfo(cfg: Config) -> Row:
    block = _repeat_block(lambda: socket.getaddrinfo("localhost", 80))
    unguarded, guarded, n = compare(cfg, block, RESOLVE_POLICY)
    return Row("getaddrinfo localhost", 'socket.getaddrinfo("localhost", 80) (hosts file)',
               guarded, unguarded, None, n,
               notes=["informational: SPEC §9 sets no budget for resolving"])


@benchmark("subprocess")
def bench_subprocess(cfg: Config) -> Row:
    block = _repeat_block(lambda: subprocess.run(["true"]))
    unguarded, guarded, n = compare(cfg, block, failcore.presets.proc_safe())
    return Row('subprocess.run(["true"])', "under proc_safe: PATH lookup, realpath, rules",
               guarded, unguarded, Budget.ratio(1.05), n)


@benchmark("open")
def bench_open(cfg: Config) -> list[Row]:
    """open()+close() of a file in the workspace, reading and writing, under fs_safe."""
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, "data.txt")
        with open(path, "w") as f:
            f.write("x")
        policy = failcore.presets.fs_safe(root=root)
        rows = []
        for mode, what in (("r", "read"), ("a", "append")):
            unguarded, guarded, n = compare(cfg, _repeat_block(lambda: open(path, mode).close()),
                                            policy)
            rows.append(Row(f'open(path, "{mode}").close()',
                            f"under fs_safe: {what}, the opened file judged via /proc/self/fd",
                            guarded, unguarded, Budget.ratio(1.5), n))
    return rows


@benchmark("stat")
def bench_stat(cfg: Config) -> Row:
    with tempfile.TemporaryDirectory() as root:
        path = os.path.join(root, "data.txt")
        open(path, "w").close()
        unguarded, guarded, n = compare(cfg, _repeat_block(lambda: os.stat(path)),
                                        failcore.presets.fs_safe(root=root))
    return Row("os.stat(path)", "under fs_safe: not intercepted (no patch, no audit event)",
               guarded, unguarded, Budget.ratio(1.05), n,
               notes=["SPEC §9: untouched; the ratio is the noise of the run"])


# -- sessions (SPEC §9: Session.call with trace on <= 25 us above the bare function) --


def _lookup(query: str, limit: int = 10) -> dict[str, Any]:
    """The session rows' tool: pure, two keyword arguments, a small dict back.
    (Not `key=`: a key named like a secret is redacted in the trace, which is
    not the common path.)"""
    return {"query": query, "n": limit}


def _read_file(path: str) -> str:
    """The guarded-operation tool: one open() and read of a small file."""
    with open(path, encoding="utf-8") as f:
        return f.read()


_PURE_TOOL = failcore.ToolMetadata(risk_level=failcore.RiskLevel.LOW,
                                   side_effect=failcore.SideEffect.NONE,
                                   default_policy=failcore.DefaultPolicy.BLOCK)
_READ_TOOL = failcore.ToolMetadata(risk_level=failcore.RiskLevel.LOW,
                                   side_effect=failcore.SideEffect.FS_READ,
                                   default_policy=failcore.DefaultPolicy.BLOCK)


def _trace_calls(path: str) -> int | None:
    """How many tool calls a closed trace records (its `run.end` line)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            return int(json.loads(f.read().splitlines()[-1])["calls"])
    except (OSError, ValueError, KeyError, IndexError):
        return None


def _session_row(cfg: Config, name: str, description: str, trace: str | None, tool: str,
                 fn: Callable[..., Any], metadata: failcore.ToolMetadata,
                 kwargs: dict[str, Any], budget: Budget | None,
                 denied: dict[str, Any] | None = None) -> Row:
    """`session.call(tool, **kwargs)` against `fn(**kwargs)`, in a session of its own.
    `denied`: arguments the session must refuse (a check that the guard is on)."""
    notes = []
    session = failcore.Session(policy="agent_safe", trace=trace)
    try:
        session.register(tool, fn, metadata=metadata)
        result = session.call(tool, **kwargs)
        if result != fn(**kwargs):
            raise RuntimeError(f"Session.call({tool!r}) returned {result!r}, not the tool's "
                               f"result")
        if denied is not None:
            log = logging.getLogger("failcore")  # the denial is expected: not on stderr
            was_disabled, log.disabled = log.disabled, True
            try:
                session.call(tool, **denied)
            except failcore.SecurityError:
                pass
            else:
                notes.append(f"WARNING: the session did not deny {tool}({denied}): the "
                             f"guard is not judging this tool's operations")
                print(f"  session: {notes[-1]}", file=sys.stderr)
            finally:
                log.disabled = was_disabled
        call = session.call
        bare, wrapped, n_bare, n = compare_calls(
            cfg, _repeat_block(lambda: fn(**kwargs)),
            _repeat_block(lambda: call(tool, **kwargs)))
    finally:
        session.close()
    notes.append(f"bare side: {n_bare} calls per round")
    if trace is not None:
        size, calls = os.path.getsize(trace), _trace_calls(trace)
        per_call = f", {size / calls:.0f} bytes per call" if calls else ""
        notes.append(f"trace: {size} bytes for {calls} calls{per_call}")
    return Row(name, description, wrapped, bare, budget, n, notes)


@benchmark("session")
def bench_session(cfg: Config) -> list[Row]:
    """Session.call against the bare tool function, trace off and on, and the
    same with FailCore 0.1.3 (from PyPI, in a venv of its own), side by side."""
    kwargs = {"query": "a", "limit": 3}
    with tempfile.TemporaryDirectory(prefix="failcore-bench-session-") as root:
        note = os.path.join(root, "note.txt")
        with open(note, "w", encoding="utf-8") as f:
            f.write("hello\n")
        secret = os.path.join(root, ".env")  # agent_safe denies reading any .env
        with open(secret, "w", encoding="utf-8") as f:
            f.write("TOKEN=not-a-real-one\n")
        ours = [
            _session_row(cfg, "Session.call, trace off", "Session(policy='agent_safe')"
                         ".call('lookup', ...) vs lookup(...) bare", None, "lookup", _lookup,
                         _PURE_TOOL, kwargs, None),
            _session_row(cfg, "Session.call, trace on", "the same, with trace= a file "
                         "(2 events a call, each written and flushed)",
                         os.path.join(root, "trace-on.jsonl"), "lookup", _lookup, _PURE_TOOL,
                         kwargs, Budget.extra_ns(25_000)),
            _session_row(cfg, "Session.call + file read, trace on", "a tool (FS_READ) that "
                         "opens and reads a small file, judged by the guard, vs bare",
                         os.path.join(root, "read-trace-on.jsonl"), "read_file", _read_file,
                         _READ_TOOL, {"path": note}, None, denied={"path": secret}),
        ]
    failcore.uninstall()  # a session's first call engaged the guard; leave it as found
    ours[2].notes.append("informational; the bare read pays the guard's idle hooks too "
                         "(engaged since the session's first call)")
    theirs = _failcore013_rows(cfg)
    for mine, other in zip(ours, theirs):
        if mine.extra_ns and other.extra_ns is not None:
            other.notes.insert(0, f"{other.extra_ns / mine.extra_ns:.1f}x our time above bare "
                                  f"({_fmt_extra(other.extra_ns)} vs {_fmt_extra(mine.extra_ns)})")
    return [row for pair in zip(ours, theirs) for row in pair]


# -- FailCore 0.1.3, from PyPI, in a virtual environment of its own ------------------------

# 0.1.3 installs under the import name `failcore` too, so it runs in its own
# interpreter: benchmarks/failcore013.py, in a venv made here once (pip
# install from PyPI, the wheel pinned by its hash) and kept in the cache dir.
BASELINE_VERSION = "0.1.3"
BASELINE_REQUIREMENT = ("failcore==0.1.3 --hash=sha256:"
                        "78f5415b18c5b31b5a573119918ec2789b42f4e9c462b6536514697375d9bccf")
BASELINE_SCRIPT = os.path.join(HERE, "failcore013.py")
BASELINE_ROWS = (
    ("trace_off", "FailCore 0.1.3: Session.call, trace off",
     "0.1.3's Session(trace=None, validator=combined_safe(strict=True)).call vs bare"),
    ("trace_on", "FailCore 0.1.3: Session.call, trace on",
     "the same, with trace= a file"),
    ("read_trace_on", "FailCore 0.1.3: Session.call + file read, trace on",
     "0.1.3, read_file (SideEffect.FS: path checked against its sandbox) vs bare"),
)


class _Unavailable(Exception):
    """FailCore 0.1.3 could not be installed or measured; the message says why."""


def _base_python() -> str:
    """The interpreter this one's virtual environment was made from. (Python
    3.10 reports the venv's own python as `sys._base_executable`.)"""
    base = getattr(sys, "_base_executable", sys.executable)
    if sys.prefix != sys.base_prefix:
        version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
        candidate = os.path.join(sys.base_prefix, "bin", version)
        if os.path.realpath(os.path.dirname(base)) == os.path.realpath(
                os.path.dirname(sys.executable)) and os.path.exists(candidate):
            return candidate
    return base


def _step(what: str, argv: list[str], timeout: float, **kwargs: Any) -> str:
    """Run one step; its stdout, or _Unavailable with the last line it printed."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _Unavailable(f"{what}: {exc}") from None
    if done.returncode != 0:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()] or \
            [line.strip() for line in done.stdout.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")]  # pip's own
        why = (errors or lines or [""])[0 if errors else -1]
        raise _Unavailable(f"{what} failed (exit {done.returncode})" + (f": {why}" if why else ""))
    return done.stdout


def _baseline_python(cache_dir: str) -> str:
    """<cache_dir>/failcore-0.1.3-pyX.Y-venv with FailCore 0.1.3 from PyPI and
    nothing else; made on first use and kept. Its python."""
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    venv = os.path.join(os.path.abspath(cache_dir), f"failcore-{BASELINE_VERSION}-py{version}-venv")
    python = os.path.join(venv, "bin", "python")
    ready = os.path.join(venv, ".failcore-benchmarks-ready")
    if os.path.exists(ready) and os.path.exists(python):
        return python
    print(f"  session: making {venv} (pip install failcore=={BASELINE_VERSION}, once) ...",
          file=sys.stderr, flush=True)
    if os.path.isdir(venv):  # left half-made by an earlier run
        shutil.rmtree(venv)
    try:
        os.makedirs(os.path.dirname(venv), exist_ok=True)
    except OSError as exc:
        raise _Unavailable(f"cannot create {os.path.dirname(venv)}: {exc}") from None
    env = _clean_env()
    _step("python -m venv", [_base_python(), "-m", "venv", venv], 300, env=env)
    requirements = os.path.join(venv, "requirements.txt")
    with open(requirements, "w", encoding="utf-8") as f:
        f.write(BASELINE_REQUIREMENT + "\n")
    _step(f"pip install failcore=={BASELINE_VERSION}",
          [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
           "--only-binary=:all:", "--require-hashes", "-r", requirements], 900, env=env)
    open(ready, "w").close()
    return python


def _failcore013_rows(cfg: Config) -> list[Row]:
    """The 0.1.3 rows: measured by failcore013.py in 0.1.3's venv, or "unavailable"."""
    if not cfg.pypi_baseline:
        return [Row.not_measured(name, description, "skipped (--skip-0.1.3)")
                for _, name, description in BASELINE_ROWS]
    try:
        python = _baseline_python(cfg.cache_dir)
        with tempfile.TemporaryDirectory(prefix="failcore-0.1.3-bench-") as root:
            root = os.path.realpath(root)
            # 0.1.3 writes .failcore/ (session manifests, a SQLite cost
            # database) under its project root: the temp dir, as cwd and as
            # FAILCORE_PROJECT_ROOT (HOME too, its fallback). No OTEL_*: it
            # would export spans.
            env = {k: v for k, v in _clean_env(FAILCORE_PROJECT_ROOT=root, HOME=root).items()
                   if not k.startswith("OTEL_")}
            out = _step("the FailCore 0.1.3 measurement",
                        [python, "-I", BASELINE_SCRIPT, "--root", root,
                         "--rounds", str(cfg.rounds), "--block-s", str(cfg.block_s)],
                        60 + cfg.rounds * cfg.block_s * 6 * 20, cwd=root, env=env)
        report = json.loads(out)
    except (_Unavailable, ValueError) as exc:
        reason = str(exc) if isinstance(exc, _Unavailable) else f"bad output: {exc}"
        print(f"  session: FailCore {BASELINE_VERSION} unavailable: {reason}", file=sys.stderr)
        return [Row.not_measured(name, description, reason)
                for _, name, description in BASELINE_ROWS]
    rows = []
    for key, name, description in BASELINE_ROWS:
        result = report["results"][key]
        notes = [f"failcore {report['failcore']} on Python {report['python']}, in "
                 f"{os.path.dirname(os.path.dirname(python))}",
                 f"bare side: {result['bare_calls_per_round']} calls per round"]
        if "trace_bytes" in result:
            size, calls = result["trace_bytes"], result.get("trace_calls")
            per_call = f", {size / calls:.0f} bytes per call" if calls else ""
            notes.append(f"trace: {size} bytes for {calls} calls{per_call}")
        if result.get("checks"):
            notes.append(f"guard check: {result['checks']}")
        rows.append(Row(name, description, result["session"], result["bare"], None,
                        result["session_calls_per_round"], notes))
    return rows


@benchmark("connect-fresh")
def bench_connect_fresh(cfg: Config) -> list[Row]:
    """What the in-process `connect` row cannot see: the audit hook stays once added.

    Each sample is a fresh interpreter that never installed (the baseline),
    installed then uninstalled (only the idle audit hook differs), or runs
    guarded. Noisier than in-process rounds; the order rotates every round.
    """
    rounds = max(3, min(cfg.rounds, 7))
    with _LoopbackServer() as server:  # each child times 3 blocks of n and keeps the median
        n = max(1, _calibrate(_connect_block(server), cfg.block_s) // 3)
    modes = ["bare", "idle", "guarded"]
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for i in range(rounds):
        for mode in modes[i % 3:] + modes[:i % 3]:
            samples[mode].append(_child_sample(f"connect-{mode}", n))
    return [
        Row("connect, idle hook (fresh)", "fresh processes: never installed vs installed+uninstalled",
            samples["idle"], samples["bare"], None, n,
            notes=["informational: the in-process 'unguarded' connect already pays this"]),
        Row("connect, guarded (fresh)", "fresh processes: never installed vs guarded",
            samples["guarded"], samples["bare"], None, n,
            notes=["informational: the whole cost, audit hook included, against no failcore"]),
    ]


# -- interpreter start-up (SPEC §9: <= 10 ms guarded, nothing measurable when absent) --


def _start_block(argv: list[str], env: dict[str, str]) -> Block:
    def block(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            subprocess.run(argv, env=env, check=True)
        return time.perf_counter_ns() - start

    return block


def _compare_starts(cfg: Config, base: Block, other: Block) -> tuple[list[float], list[float], int]:
    """Per-start ns of `base` and `other`, in alternating rounds (ABBA)."""
    n = 2 if cfg.quick else 4
    base(1), other(1)  # warm the page cache and the .pyc files
    samples: tuple[list[float], list[float]] = ([], [])
    for i in range(cfg.rounds * 2):
        for side in ((0, 1) if i % 2 == 0 else (1, 0)):
            samples[side].append(_timed((base, other)[side], n))
    return samples[0], samples[1], n


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without FAILCORE_*, and writing bytecode (a stale .pyc
    would be compiled again at every start)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FAILCORE_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra)
    return env


def _bare_venv(root: str, with_pth: str | None) -> str:
    """A virtual environment with nothing installed (and `with_pth` copied into
    its site-packages): the interpreter, as on a machine without failcore."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", root], check=True)
    python = os.path.join(root, "bin", "python")
    if with_pth:
        site_dir = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                                  check=True, capture_output=True, text=True).stdout.strip()
        with open(with_pth, "rb") as src, open(os.path.join(site_dir, "failcore.pth"), "wb") as dst:
            dst.write(src.read())
    return python


def _installed_pth() -> str | None:
    import site

    for directory in site.getsitepackages():
        path = os.path.join(directory, "failcore.pth")
        if os.path.exists(path):
            return path
    return None


@benchmark("startup")
def bench_startup(cfg: Config) -> list[Row]:
    """`python -c pass` in fresh interpreters: guarded by FAILCORE_POLICY against
    the variable unset, and failcore.pth present (variable unset) against a
    virtual environment without failcore."""
    bare = _start_block([sys.executable, "-c", "pass"], _clean_env())
    rows = []
    pth = _installed_pth()
    if pth is None:
        rows.append(Row("start, FAILCORE_POLICY=agent_safe", "failcore.pth is not installed "
                        "here (pip install the project)", [0.0], None, None, 0,
                        notes=["not measured"]))
        return rows
    guarded = _start_block([sys.executable, "-c", "pass"], _clean_env(FAILCORE_POLICY="agent_safe"))
    unguarded, guarded_ns, n = _compare_starts(cfg, bare, guarded)
    rows.append(Row("start, FAILCORE_POLICY=agent_safe", "python -c pass, guarded by the "
                    "start-up hook, against the same interpreter without the variable",
                    guarded_ns, unguarded, Budget.extra_ns(10_000_000), n))
    with tempfile.TemporaryDirectory() as root:
        without = _bare_venv(os.path.join(root, "without"), None)
        with_pth = _bare_venv(os.path.join(root, "with"), pth)
        unguarded, absent, n = _compare_starts(cfg, _start_block([without, "-c", "pass"], _clean_env()),
                                               _start_block([with_pth, "-c", "pass"], _clean_env()))
    rows.append(Row("start, variable unset", "python -c pass with failcore.pth and no "
                    "FAILCORE_POLICY, against a virtual environment without failcore",
                    absent, unguarded, Budget.extra_ns(500_000), n,
                    notes=["SPEC §9: nothing measurable; the budget is the noise of a start"]))
    for module in ("failcore", "wrapt", "netaddr", "structlog"):
        block = _start_block([sys.executable, "-c", f"import {module}"], _clean_env())
        unguarded, imported, n = _compare_starts(cfg, bare, block)
        rows.append(Row(f"start + import {module}", f"what `import {module}` adds to a start "
                        f"(failcore's start-up hook imports none of the others)",
                        imported, unguarded, None, n, notes=["informational"]))
    return rows


# -- child processes (for what one process cannot measure) -------------------------


def _child_sample(mode: str, n: int) -> float:
    """Per-call ns of `mode`, measured in a fresh interpreter."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", mode,
                          "--number", str(n)], check=True, capture_output=True, text=True)
    return float(json.loads(out.stdout)["per_call_ns"])


def _child_main(mode: str, n: int) -> int:
    if mode not in ("connect-bare", "connect-idle", "connect-guarded"):
        print(f"unknown child mode {mode!r}", file=sys.stderr)
        return 2
    if mode == "connect-idle":
        _install(CONNECT_POLICY)
        failcore.uninstall()  # the audit hook stays, idle
    elif mode == "connect-guarded":
        _install(CONNECT_POLICY)  # on until the process exits
    with _LoopbackServer() as server:
        block = _connect_block(server)
        block(max(1, n // 10))
        per_call = statistics.median(_timed(block, n) for _ in range(3))
    print(json.dumps({"mode": mode, "per_call_ns": per_call}))
    return 0


# -- output ----------------------------------------------------------------------


def _fmt_extra(ns: float | None) -> str:
    if ns is None:
        return "-"
    return ("+" if ns >= 0 else "-") + _fmt_ns(abs(ns))


def _table(rows: list[Row]) -> str:
    header = ("benchmark", "unguarded", "guarded", "above", "ratio", "budget", "ok?")
    lines = [header]
    for row in rows:
        if row.unavailable is not None:
            continue
        ok = row.ok
        lines.append((
            row.name,
            _fmt_ns(row.unguarded_ns),
            _fmt_ns(row.guarded_ns),
            _fmt_extra(row.extra_ns),
            "-" if row.ratio is None else f"{row.ratio:.3f}x",
            row.budget.text() if row.budget else "-",
            "-" if ok is None else ("yes" if ok else "NO"),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    widths[0] = max(widths[0], *(len(row.name) for row in rows))
    left = {0, 5}

    def fmt(line: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(line, widths))).rstrip()

    out = [fmt(lines[0]), "  ".join("-" * w for w in widths)]
    measured = iter(lines[1:])
    for row in rows:
        out.append(f"{row.name.ljust(widths[0])}  unavailable: {row.unavailable}"
                   if row.unavailable is not None else fmt(next(measured)))
    return "\n".join(out)


def _environment(cfg: Config) -> dict[str, Any]:
    return {
        "failcore": failcore.__version__,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "quick": cfg.quick,
        "rounds": cfg.rounds,
        "block_s": cfg.block_s,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# -- main --------------------------------------------------------------------------


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="failcore's overhead as ratios against the unguarded call (SPEC §9).")
    parser.add_argument("--json", metavar="PATH", default=DEFAULT_JSON,
                        help="where to write the results (default: benchmarks/results.json)")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (~10 s)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a budget is exceeded (default: always exit 0)")
    parser.add_argument("--only", metavar="NAME", action="append", choices=list(BENCHMARKS),
                        help="run only this benchmark (repeatable)")
    parser.add_argument("--cache-dir", metavar="DIR", default=DEFAULT_CACHE,
                        help="where the FailCore 0.1.3 venv of the session rows is kept "
                             "(default: %(default)s)")
    parser.add_argument("--skip-0.1.3", dest="pypi_baseline", action="store_false",
                        help="do not install or measure FailCore 0.1.3 (session rows)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--number", type=int, default=1000, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _run(cfg: Config, names: list[str]) -> Iterator[Row]:
    for name in names:
        print(f"  {name} ...", file=sys.stderr, flush=True)
        result = BENCHMARKS[name](cfg)
        yield from result if isinstance(result, list) else [result]


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.child:
        return _child_main(args.child, args.number)
    cfg = (Config(rounds=5, block_s=0.03, quick=True) if args.quick
           else Config(rounds=15, block_s=0.15, quick=False))
    cfg = dataclasses.replace(cfg, cache_dir=args.cache_dir, pypi_baseline=args.pypi_baseline)
    names = args.only or list(BENCHMARKS)
    started = time.perf_counter()
    try:
        rows = list(_run(cfg, names))
    except GuardNotActive as exc:
        print(f"benchmarks: cannot measure: {exc}", file=sys.stderr)
        return 2
    finally:
        failcore.uninstall()
    elapsed = time.perf_counter() - started

    print(f"failcore {failcore.__version__} on {platform.python_implementation()} "
          f"{platform.python_version()}, {cfg.rounds} rounds, {elapsed:.1f} s")
    print(_table(rows))
    failed = [row.name for row in rows if row.ok is False]
    result = {"environment": _environment(cfg), "elapsed_s": round(elapsed, 2),
              "budgets_ok": not failed, "rows": [row.to_dict() for row in rows]}
    with open(args.json, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"wrote {args.json}")
    if failed:
        print(f"over budget: {', '.join(failed)}")
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())

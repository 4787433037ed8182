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
several rows). Only loopback traffic is ever made.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
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

DEFAULT_JSON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json")

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

    @property
    def guarded_ns(self) -> float:
        return statistics.median(self.guarded)

    @property
    def unguarded_ns(self) -> float | None:
        return statistics.median(self.unguarded) if self.unguarded else None

    @property
    def ratio(self) -> float | None:
        base = self.unguarded_ns
        return self.guarded_ns / base if base else None

    @property
    def ok(self) -> bool | None:
        return self.budget.holds(self) if self.budget else None

    def to_dict(self) -> dict[str, Any]:
        paired = ([g / u for g, u in zip(self.guarded, self.unguarded)]
                  if self.unguarded else None)
        return {
            "name": self.name,
            "description": self.description,
            "unguarded_ns": _round(self.unguarded_ns),
            "guarded_ns": _round(self.guarded_ns),
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


def _table(rows: list[Row]) -> str:
    header = ("benchmark", "unguarded", "guarded", "ratio", "budget", "ok?")
    lines = [header]
    for row in rows:
        ok = row.ok
        lines.append((
            row.name,
            _fmt_ns(row.unguarded_ns),
            _fmt_ns(row.guarded_ns),
            "-" if row.ratio is None else f"{row.ratio:.3f}x",
            row.budget.text() if row.budget else "-",
            "-" if ok is None else ("yes" if ok else "NO"),
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    left = {0, 4}

    def fmt(line: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(w) if i in left else cell.rjust(w)
                         for i, (cell, w) in enumerate(zip(line, widths))).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(lines[0]), rule, *(fmt(line) for line in lines[1:])])


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

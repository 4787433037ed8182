"""FailCore 0.1.3 (the PyPI release) timed like `run.py`'s `session` rows.

    <venv>/bin/python -I benchmarks/failcore013.py --root DIR --rounds N --block-s S

`run.py --only session` runs this in a virtual environment of its own that
holds `failcore==0.1.3` and nothing else: 0.1.3 installs under the same
import name as this project, so the two cannot share an interpreter. It
imports nothing from this repository (`-I` keeps the repository and
PYTHONPATH off `sys.path`).

It times 0.1.3's `Session.call` against the same function called bare, in
alternating rounds (ABBA), as `run.py` does for ours, and prints one JSON
object on stdout. Everything 0.1.3 writes (its trace, its `.failcore/`
directory with the session manifests and the SQLite cost database) goes
under `--root`, which must be the working directory and
FAILCORE_PROJECT_ROOT (where 0.1.3 puts `.failcore/`), so nothing lands in
a project or in the home directory.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import sys
import time

EXPECTED_VERSION = "0.1.3"


def lookup(query, limit=10):
    return {"query": query, "n": limit}


def read_file(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


# -- timing (the same method as run.py: calibrate, then ABBA rounds) ----------


def _repeat(call):
    def block(n):
        start = time.perf_counter_ns()
        for _ in range(n):
            call()
        return time.perf_counter_ns() - start

    return block


def _timed(block, n):
    enabled = gc.isenabled()
    gc.disable()
    try:
        return block(n) / n
    finally:
        if enabled:
            gc.enable()


def _calibrate(block, block_s):
    n = 1
    while True:
        elapsed = block(n)
        if elapsed >= 20_000_000:
            break
        n *= 4
    return max(1, int(block_s * 1e9 / (elapsed / n)))


def _abba(bare, wrapped, rounds, block_s):
    blocks = (bare, wrapped)
    counts = [_calibrate(b, block_s) for b in blocks]
    for b, n in zip(blocks, counts):
        b(max(1, n // 10))
    samples = ([], [])
    for i in range(rounds):
        for side in ((0, 1) if i % 2 == 0 else (1, 0)):
            samples[side].append(_timed(blocks[side], counts[side]))
    return {"bare": samples[0], "session": samples[1],
            "bare_calls_per_round": counts[0], "session_calls_per_round": counts[1]}


# -- 0.1.3 --------------------------------------------------------------------


def _check_isolated(root):
    """0.1.3 from this venv, and a root it may write in; else exit 2."""
    import failcore

    version = importlib.metadata.version("failcore")
    where = os.path.realpath(failcore.__file__)
    problems = []
    if version != EXPECTED_VERSION:
        problems.append(f"failcore {version} is installed, not {EXPECTED_VERSION}")
    if not where.startswith(os.path.realpath(sys.prefix) + os.sep):
        problems.append(f"failcore is imported from {where}, outside this venv ({sys.prefix})")
    if sys.prefix == sys.base_prefix:
        problems.append("not running in a virtual environment")
    real_root = os.path.realpath(root)
    if os.path.realpath(os.getcwd()) != real_root or \
            os.path.realpath(os.environ.get("FAILCORE_PROJECT_ROOT", "/")) != real_root:
        problems.append("--root must be both the working directory and FAILCORE_PROJECT_ROOT")
    if problems:
        print("failcore013: " + "; ".join(problems), file=sys.stderr)
        sys.exit(2)
    return version, where


def main(argv=None):
    parser = argparse.ArgumentParser(prog="failcore013.py")
    parser.add_argument("--root", required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--block-s", type=float, required=True)
    args = parser.parse_args(argv)
    version, where = _check_isolated(args.root)

    from failcore import presets
    from failcore.api.session import Session
    from failcore.core.tools.metadata import DefaultAction, RiskLevel, SideEffect, ToolMetadata

    root = os.path.realpath(args.root)
    sandbox = os.path.join(root, "sandbox")
    os.makedirs(sandbox, exist_ok=True)
    note = os.path.join(sandbox, "note.txt")
    with open(note, "w", encoding="utf-8") as f:
        f.write("hello\n")
    outside = os.path.join(root, "outside.txt")
    with open(outside, "w", encoding="utf-8") as f:
        f.write("outside\n")

    def session(trace):
        # The closest to ours with policy="agent_safe": 0.1.3's combined
        # preset (fs_safe + net_safe + resource limits), strict, with the
        # sandbox its path checks confine tools to. auto_ingest=False: no
        # copy of the trace into the SQLite database at close.
        return Session(trace=trace, sandbox=sandbox, auto_ingest=False,
                       validator=presets.combined_safe(strict=True, sandbox_root=sandbox))

    # 0.1.3 has no SideEffect.NONE: None is its "declares no side effect".
    pure = ToolMetadata(side_effect=None, risk_level=RiskLevel.LOW,
                        default_action=DefaultAction.BLOCK)
    reads = ToolMetadata(side_effect=SideEffect.FS, risk_level=RiskLevel.LOW,
                         default_action=DefaultAction.BLOCK)

    results = {}
    variants = (
        ("trace_off", None, "lookup", lookup, pure, {"query": "a", "limit": 3}),
        ("trace_on", os.path.join(root, "trace-on.jsonl"), "lookup", lookup, pure,
         {"query": "a", "limit": 3}),
        ("read_trace_on", os.path.join(root, "read-trace-on.jsonl"), "read_file", read_file,
         reads, {"path": note}),
    )
    for key, trace, name, fn, metadata, kwargs in variants:
        s = session(trace)
        s.register(name, fn, metadata=metadata)
        first = s.call(name, **kwargs)
        if first.status.value != "ok" or first.output.value != fn(**kwargs):
            print(f"failcore013: {key}: 0.1.3 did not return the tool's result: {first!r}",
                  file=sys.stderr)
            return 1
        checks = {}
        if name == "read_file":  # the guarded mode is on: a path outside the sandbox is refused
            refused = s.call(name, path=outside)
            checks["outside_sandbox"] = (refused.status.value,
                                         refused.error.error_code if refused.error else None)
            if refused.status.value == "ok":
                print(f"failcore013: {key}: 0.1.3 read a file outside its sandbox",
                      file=sys.stderr)
                return 1
        call = s.call
        measured = _abba(_repeat(lambda: fn(**kwargs)), _repeat(lambda: call(name, **kwargs)),
                         args.rounds, args.block_s)
        s.close()
        measured["checks"] = checks
        if trace is not None:
            measured["trace_bytes"] = os.path.getsize(trace)
            measured["trace_calls"] = s._step_counter  # every call so far is in the trace
        results[key] = measured

    written = sorted(os.path.relpath(os.path.join(d, f), root)
                     for d, _, files in os.walk(root) for f in files)
    print(json.dumps({"failcore": version, "module": where,
                      "python": ".".join(map(str, sys.version_info[:3])),
                      "results": results, "files_written": written}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The `failcore` command line: `main(argv) -> int`.

Exit codes: the script's own for `run`; 0 ok; 1 a denied operation
(`explain`), or findings (`trace verify|diff|check`), or a trace that cannot
be read; 2 usage; 78 a bad policy or configuration.
"""

from __future__ import annotations

import _socket
import argparse
import json
import os
import sys
from typing import Any

from . import _addresses as addr
from ._errors import PolicyError
from ._policy import Policy
from ._processes import locate
from ._types import Decision

EXIT_OK, EXIT_DENIED, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 78
EXIT_FINDINGS = EXIT_DENIED  # trace verify, diff, check found something

USAGE = """\
usage: failcore run [--policy P] [--mode M] [--trace T] script.py|-m module [args...]
       failcore policy check P
       failcore policy show P [--json]
       failcore explain [--policy P] [--json] connect HOST[:PORT]|URL
       failcore explain [--policy P] [--json] open PATH [--write]
       failcore explain [--policy P] [--json] exec CMD [ARGS...]
       failcore trace show T [--denied] [--json]
       failcore trace verify T [--json]
       failcore trace diff A B [--json]
       failcore trace check T --policy P [--json]
"""


class _UsageError(Exception):
    pass


def _error(message: str) -> None:
    print(f"failcore: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return EXIT_OK if args else EXIT_USAGE
    command, rest = args[0], args[1:]
    handlers = {"run": _cmd_run, "policy": _cmd_policy, "explain": _cmd_explain,
                "trace": _cmd_trace}
    if command in ("--version", "version"):
        from . import __version__
        print(f"failcore {__version__}")
        return EXIT_OK
    if command not in handlers:
        _error(f"unknown command {command!r}")
        print(USAGE, end="", file=sys.stderr)
        return EXIT_USAGE
    try:
        return handlers[command](rest)
    except _UsageError as exc:
        _error(str(exc))
        print(USAGE, end="", file=sys.stderr)
        return EXIT_USAGE
    except PolicyError as exc:
        _error(str(exc))
        return EXIT_CONFIG
    except BrokenPipeError:  # `failcore trace show T | head`: the reader has gone
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the flush at exit does not fail again
        return EXIT_DENIED


# -- run ---------------------------------------------------------------------


def _cmd_run(args: list[str]) -> int:
    """Options come before the script; everything after it belongs to the script."""
    options: dict[str, str] = {}
    module = None
    while args:
        arg = args.pop(0)
        if arg == "--":
            break
        name, eq, value = arg.partition("=")
        if name in ("--policy", "--mode", "--trace"):
            if not eq:
                if not args:
                    raise _UsageError(f"{name} needs a value")
                value = args.pop(0)
            options[name[2:]] = value
        elif arg == "-m":
            if not args:
                raise _UsageError("-m needs a module name")
            module = args.pop(0)
            break
        elif arg.startswith("-"):
            raise _UsageError(f"unknown option {arg!r} for run")
        else:
            args.insert(0, arg)
            break
    if module is None and not args:
        raise _UsageError("run needs a script or -m module")
    script = None if module is not None else args.pop(0)
    if script is not None and not os.path.isfile(script):
        _error(f"can't open file {script!r}: no such file")
        return EXIT_USAGE

    from . import _run
    from ._guard import install

    # The trace's run.start records the program's argv, as it will see it,
    # not failcore's own options (the trace's path among them).
    sys.argv = [script if script is not None else module, *args]

    code = None
    if script is not None:
        try:
            code = _run.load_script(script)
        except SyntaxError as exc:  # as Python reports it: no traceback, exit 1
            _run._report_uncaught(exc)
            return 1
    install(options.get("policy"), mode=options.get("mode"), trace=options.get("trace"))
    if code is None:
        return _run.run_module(module, args)
    return _run.run_script(script, code, args)


# -- policy ------------------------------------------------------------------


def _cmd_policy(args: list[str]) -> int:
    parser = _parser("failcore policy")
    parser.add_argument("action", choices=("check", "show"))
    parser.add_argument("policy")
    parser.add_argument("--json", action="store_true")
    ns = _parse(parser, args)
    policy = Policy.load(ns.policy)
    if ns.action == "check":
        if ns.json:
            _print_json({"ok": True, "source": policy.source, "digest": policy.digest})
        else:
            print(f"ok: {policy.source} is a valid policy (sha256 {policy.digest[:16]})")
        return EXIT_OK
    if ns.json:
        _print_json({"source": policy.source, "digest": policy.digest, "rules": policy.config,
                     "builtin": {"non_public": list(addr.NON_PUBLIC_CIDRS),
                                 "metadata_addresses": list(addr.METADATA_IPS),
                                 "metadata_hostnames": sorted(addr.METADATA_HOSTNAMES)}})
        return EXIT_OK
    print(f"# {policy.source}  sha256 {policy.digest}")
    for section, values in policy.config.items():
        print(f"\n[{section}]")
        width = max(len(k) for k in values) if values else 0
        for key, value in values.items():
            print(f"{key.ljust(width)} = {json.dumps(value)}")
    print("\n# built in, always applied:")
    print(f"# non-public ranges: {', '.join(addr.NON_PUBLIC_CIDRS)}")
    print(f"# metadata endpoints: {', '.join(addr.METADATA_IPS)}, "
          f"{', '.join(sorted(addr.METADATA_HOSTNAMES))}")
    return EXIT_OK


# -- explain -----------------------------------------------------------------


def _split_operation(args: list[str]) -> tuple[list[str], str, list[str]]:
    """`[options] OPERATION rest`: the operation is the first word that is not an
    option or the value of --policy (exec's command may look like anything)."""
    i = 0
    while i < len(args):
        if args[i] == "--policy":
            i += 2
        elif args[i] in ("connect", "open", "exec"):
            return args[:i], args[i], args[i + 1:]
        else:
            i += 1
    raise _UsageError("explain needs connect, open or exec")


def _cmd_explain(args: list[str]) -> int:
    options, operation, rest = _split_operation(args)
    parser = _parser("failcore explain")
    parser.add_argument("--policy", default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--write", action="store_true")
    if operation != "exec":  # exec's command is taken verbatim
        parser.add_argument("target")
        options += rest
    ns = _parse(parser, options)
    ns.operation = operation
    if operation == "exec":
        ns.target = rest
    policy = Policy.load(ns.policy or os.environ.get("FAILCORE_POLICY") or "agent_safe")
    note = ""
    if ns.operation == "connect":
        host, port = _split_target(ns.target)
        if port is None and _decides_by_port(policy):
            raise _UsageError(f"this policy decides by port: give {ns.target}:PORT")
        decisions, note = explain_connect(policy, host, port)
        allowed = any(d.allowed and d.op == "net.connect" for d in decisions)
    elif ns.operation == "open":
        path = os.path.realpath(ns.target)
        decisions = [policy.check_path("fs.write" if ns.write else "fs.read", path)]
        allowed = decisions[0].allowed
    else:
        if not ns.target:
            raise _UsageError("explain exec needs a command")
        decisions = [policy.check_exec(list(ns.target), locate)]
        allowed = decisions[0].allowed
    shown = " ".join(ns.target) if isinstance(ns.target, list) else ns.target
    if ns.json:
        _print_json({"operation": ns.operation, "target": shown, "policy": policy.source,
                     "digest": policy.digest, "allowed": allowed, "note": note,
                     "decisions": [d.to_dict() for d in decisions]})
    else:
        _print_decisions(f"{ns.operation} {shown}", policy, decisions, allowed, note)
    return EXIT_OK if allowed else EXIT_DENIED


def _decides_by_port(policy: Policy) -> bool:
    net = policy.network
    rules = (*net.allow_addresses, *net.allow_hosts, *net.deny_addresses, *net.deny_hosts)
    return net.ports is not None or any(rule.port is not None for rule in rules)


def explain_connect(policy: Policy, host: str, port: int | None) -> tuple[list[Decision], str]:
    """The decisions a guarded connect to `host` would meet, and a note if it cannot happen."""
    ip = addr.parse_ip(host)
    if ip is not None:
        return [policy.check_ip(ip, port)], ""
    resolve = policy.check_resolve(host)
    if not resolve.allowed:
        return [resolve], ""
    name = addr.normalise_hostname(host)
    try:
        infos = _socket.getaddrinfo(host, port, 0, 1)  # SOCK_STREAM: one row per address
    except OSError as exc:
        return [resolve], f"{name} does not resolve here ({exc}), so nothing can connect to it."
    decisions = [resolve]
    for info in infos:
        found = addr.parse_ip(info[4][0])
        if found is not None:
            decisions.append(policy.check_ip(found, port, (name,)))
    return decisions, ""


def _split_target(target: str) -> tuple[str, int | None]:
    """HOST, HOST:PORT, [V6]:PORT, bare IPv6, or a URL."""
    if "://" in target:
        from urllib.parse import urlsplit
        url = urlsplit(target)
        if not url.hostname:
            raise _UsageError(f"no host in {target!r}")
        default = {"http": 80, "https": 443, "ws": 80, "wss": 443}.get(url.scheme)
        try:
            return url.hostname, url.port if url.port is not None else default
        except ValueError as exc:
            raise _UsageError(f"bad port in {target!r}: {exc}") from None
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        return host, _port(rest[1:], target) if rest.startswith(":") else None
    if target.count(":") == 1:
        host, _, port = target.partition(":")
        return host, _port(port, target)
    return target, None


def _port(text: str, target: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise _UsageError(f"bad port in {target!r}: expected a number from 1 to 65535")
    return int(text)


def _print_decisions(target: str, policy: Policy, decisions: list[Decision], allowed: bool,
                     note: str) -> None:
    from ._trace_read import paint

    colour = _colour()
    print(f"{target}  (policy: {policy.source})")
    rows = [(d.action.value.upper(), d.op, d.target, d.rule, d.reason) for d in decisions]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(4)]
        cells[0] = paint(cells[0], "32" if row[0] == "ALLOW" else "31", colour)
        print("  " + "  ".join(cells) + "  " + row[4])
    if note:
        print(f"  note: {note}")
    verdict = paint("allowed", "32;1", colour) if allowed else paint("denied", "31;1", colour)
    print(f"verdict: {verdict}")


# -- trace -------------------------------------------------------------------


def _cmd_trace(args: list[str]) -> int:
    """`trace show|verify|diff|check`. A trace that cannot be read is exit 1:
    it is data, not configuration (78), and for verify it is not intact."""
    from . import _trace_read

    if not args or args[0] not in ("show", "verify", "diff", "check"):
        raise _UsageError("trace needs show, verify, diff or check")
    action, rest = args[0], args[1:]
    parser = _parser(f"failcore trace {action}")
    parser.add_argument("--json", action="store_true")
    if action == "diff":
        parser.add_argument("a")
        parser.add_argument("b")
    else:
        parser.add_argument("trace")
    if action == "show":
        parser.add_argument("--denied", action="store_true")
    if action == "check":
        parser.add_argument("--policy", required=True)
    ns = _parse(parser, rest)
    paths = [ns.a, ns.b] if action == "diff" else [ns.trace]
    policy = Policy.load(ns.policy) if action == "check" else None  # 78 before any reading
    traces = []
    for path in paths:
        try:
            traces.append(_trace_read.read(path))
        except (OSError, ValueError) as exc:
            message = f"{path}: cannot read the trace: {exc.strerror or exc}" \
                if isinstance(exc, OSError) else f"{path}: not a trace: {exc}"
            if action == "verify" and ns.json:
                _print_json({"ok": False, "trace": path, "events": 0, "problems": [message]})
            else:
                _error(message)
            return EXIT_FINDINGS
    if action == "show":
        return _trace_show(traces[0], ns.denied, ns.json)
    if action == "verify":
        return _trace_verify(paths[0], traces[0], ns.json)
    for path, events in zip(paths, traces):  # diff and check still work, but say so
        problems = _trace_read.verify(events)
        if problems:
            _error(f"warning: {path} fails verification ({problems[0]}"
                   f"{f'; {len(problems) - 1} more' if len(problems) > 1 else ''})")
    if action == "diff":
        return _trace_diff(paths, traces, ns.json)
    return _trace_check(paths[0], traces[0], policy, ns.json)


def _colour() -> bool:
    return sys.stdout.isatty() and not os.environ.get("NO_COLOR")


def _trace_show(events: list[Any], denied: bool, as_json: bool) -> int:
    """--json prints one JSON array of the events as recorded (like every
    --json here, one document), --denied keeps denials and their calls."""
    from . import _trace_read

    if denied:
        events = _trace_read.denied(events)
    if as_json:
        print(json.dumps([dict(e) for e in events], indent=2))
    else:
        for line in _trace_read.show(events, colour=_colour()):
            print(line)
    return EXIT_OK


def _trace_verify(path: str, events: list[Any], as_json: bool) -> int:
    from . import _trace_read

    problems = _trace_read.verify(events)
    if as_json:
        _print_json({"ok": not problems, "trace": path, "events": len(events),
                     "problems": problems})
    elif problems:
        for problem in problems:
            print(f"{path}: {problem}")
    else:
        print(f"ok: {path} is intact ({len(events)} events, run.start to run.end, "
              f"every line chained to the one before)")
    return EXIT_FINDINGS if problems else EXIT_OK


def _trace_diff(paths: list[str], traces: list[list[Any]], as_json: bool) -> int:
    from . import _trace_read

    found = _trace_read.diff(*traces)
    if as_json:
        _print_json({"same": found is None, "a": paths[0], "b": paths[1],
                     "ignored": list(_trace_read.IGNORED),
                     "difference": found.to_dict() if found is not None else None})
    elif found is None:
        print(f"same: {paths[0]} and {paths[1]} record the same run ({len(traces[0])} events; "
              f"times, the run id and the chain set aside)")
    else:
        print(f"A = {paths[0]}\nB = {paths[1]}\nfirst difference: {found.describe()}")
    return EXIT_OK if found is None else EXIT_FINDINGS


def _trace_check(path: str, events: list[Any], policy: Any, as_json: bool) -> int:
    from . import _trace_read

    result = _trace_read.check(events, policy)
    if as_json:
        _print_json({"trace": path, "policy": policy.source, "digest": policy.digest,
                     "judged": result.judged,
                     "changes": [c.to_dict() for c in result.changes],
                     "not_rejudged": [n.to_dict() for n in result.not_rejudged]})
        return EXIT_FINDINGS if result.changes else EXIT_OK
    colour = _colour()
    print(f"{path} under {policy.source} (sha256 {policy.digest[:16]}): {result.judged} "
          f"decisions re-judged, {len(result.changes)} would change")
    if result.changes:
        rows = [(str(c.seq), f"{c.call_id} {c.tool}" if c.call_id else "-",
                 f"{c.recorded} -> {c.action.upper()}") for c in result.changes]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        for row, change in zip(rows, result.changes):
            cells = [row[0].rjust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2])]
            cells[2] = _trace_read.paint(cells[2], "32" if change.action == "allow" else "31",
                                         colour)
            print(f"  {'  '.join(cells)}  {change.op} {change.target} [{change.rule}] "
                  f"{change.reason}")
    if result.not_rejudged:
        print(f"not re-judged ({len(result.not_rejudged)}, never a change):")
        for item in result.not_rejudged:
            print(f"  seq {item.seq}  {item.op} {item.target} [{item.rule}]: {item.why}")
    return EXIT_FINDINGS if result.changes else EXIT_OK


# -- helpers -----------------------------------------------------------------


def _parser(prog: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, add_help=False, allow_abbrev=False)


def _parse(parser: argparse.ArgumentParser, args: list[str]) -> argparse.Namespace:
    try:
        ns, extra = parser.parse_known_args(args)
    except SystemExit:  # argparse has already printed its message
        raise _UsageError("see the usage above") from None
    if extra:
        raise _UsageError(f"unexpected arguments: {' '.join(extra)}")
    return ns


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))

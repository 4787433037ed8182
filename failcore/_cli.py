"""The `failcore` command line: `main(argv) -> int`.

Exit codes: the script's own for `run`; 0 ok; 1 a denied operation
(`explain`); 2 usage; 78 a bad policy or configuration.
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

USAGE = """\
usage: failcore run [--policy P] [--mode M] script.py|-m module [args...]
       failcore policy check P
       failcore policy show P [--json]
       failcore explain [--policy P] [--json] connect HOST[:PORT]|URL
       failcore explain [--policy P] [--json] open PATH [--write]
       failcore explain [--policy P] [--json] exec CMD [ARGS...]
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
    handlers = {"run": _cmd_run, "policy": _cmd_policy, "explain": _cmd_explain}
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
    if "trace" in options:
        raise _UsageError("--trace is not available in this version")
    script = None if module is not None else args.pop(0)
    if script is not None and not os.path.isfile(script):
        _error(f"can't open file {script!r}: no such file")
        return EXIT_USAGE

    from . import _run
    from ._guard import install

    code = None
    if script is not None:
        try:
            code = _run.load_script(script)
        except SyntaxError as exc:  # as Python reports it: no traceback, exit 1
            _run._report_uncaught(exc)
            return 1
    install(options.get("policy"), mode=options.get("mode"))
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
    colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")

    def paint(text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if colour else text

    print(f"{target}  (policy: {policy.source})")
    rows = [(d.action.value.upper(), d.op, d.target, d.rule, d.reason) for d in decisions]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        cells = [row[i].ljust(widths[i]) for i in range(4)]
        cells[0] = paint(cells[0], "32" if row[0] == "ALLOW" else "31")
        print("  " + "  ".join(cells) + "  " + row[4])
    if note:
        print(f"  note: {note}")
    verdict = paint("allowed", "32;1") if allowed else paint("denied", "31;1")
    print(f"verdict: {verdict}")


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

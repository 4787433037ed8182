"""Reading traces back: parsing, checking the chain, showing, comparing, and
re-judging under another policy (`failcore trace show|verify|diff|check`).

Everything here works on the parsed events and returns data (lines of text,
a `Difference`, a `CheckResult`); printing and exit codes are `_cli`'s.
"""

from __future__ import annotations

import json
import re
from typing import NamedTuple

from . import _trace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Sequence

    from ._policy import Policy
    from ._types import Decision

EVENTS = ("run.start", "run.end", "tool.call", "tool.result", "tool.error", "guard.decision")


class TraceLine(dict):
    """One parsed event; `raw` is the line's bytes as written (for the chain),
    `number` its line number in the file (1-based)."""

    raw: bytes = b""
    number: int = 0


class TraceLines(list):
    """The events of a trace, in file order; `unfinished` holds the bytes after
    the last newline (a line the writer never finished: empty normally)."""

    unfinished: bytes = b""


def read(path: str) -> TraceLines:
    """Every complete line of the trace at `path`, parsed. A last line without
    its newline (a crash mid-write) is not part of the trace and is left out
    (kept in `.unfinished`); anything else that is not a JSON object is a
    ValueError naming the line."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    events = TraceLines()
    events.unfinished = lines.pop()  # after the last newline: empty, or an unfinished line
    for number, raw in enumerate(lines, 1):
        try:
            event = TraceLine(json.loads(raw))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"line {number} is not a JSON object ({exc})") from None
        if not isinstance(event, dict):
            raise ValueError(f"line {number} is not a JSON object")
        event.raw, event.number = raw, number
        events.append(event)
    return events


def verify(events: Sequence[TraceLine]) -> list[str]:
    """What is wrong with the chain, in file order (empty: intact).

    Catches an edited line (the next line's `prev` no longer matches), a
    deleted or reordered line (`seq` out of order, and the chain), a trace
    cut short or never finished (no `run.end` last), and bytes after the last
    complete line (an unfinished line, from `read`).
    """
    problems: list[str] = []
    if not events:
        return ["the trace is empty"]
    previous: bytes | None = None
    for index, event in enumerate(events):
        where = f"line {event.number}"
        if event.get("event") not in EVENTS:
            problems.append(f"{where}: unknown event {event.get('event')!r}")
        if event.get("seq") != index:
            problems.append(f"{where}: seq is {event.get('seq')!r}, expected {index} "
                            f"(a line was deleted, added or moved)")
        expected = None if previous is None else _trace.line_digest(previous)
        if event.get("prev") != expected:
            if previous is None:
                problems.append(f"{where}: the first line must have prev null (lines before "
                                f"it were deleted)")
            else:
                problems.append(f"{where}: prev does not match line {event.number - 1} "
                                f"(that line was edited, or lines were deleted or moved)")
        previous = event.raw
    if events[0].get("event") != "run.start":
        problems.append(f"line {events[0].number}: the first event is not run.start")
    if events[-1].get("event") != "run.end":
        problems.append(f"line {events[-1].number}: the last event is not run.end (the run "
                        f"did not finish, or its end was cut off)")
    else:  # no line follows run.end to chain it: its counts must match what came before
        counted = {"calls": sum(e.get("event") == "tool.call" for e in events),
                   "errors": sum(e.get("event") == "tool.error" for e in events),
                   "denied": sum(e.get("event") == "guard.decision"
                                 and e.get("outcome") != "allow" for e in events)}
        for key, value in counted.items():
            if events[-1].get(key) != value:
                problems.append(f"line {events[-1].number}: run.end says {key} "
                                f"{events[-1].get(key)!r}, the trace has {value} (run.end was "
                                f"edited, or lines were cut and run.end written anew)")
    unfinished = getattr(events, "unfinished", b"")
    if unfinished:
        problems.append(f"line {events[-1].number + 1}: {len(unfinished)} bytes without a "
                        f"newline after the last line, left out (a line the run never "
                        f"finished writing, or bytes added to the file)")
    return problems


# -- show ----------------------------------------------------------------------


def denied(events: Sequence[TraceLine]) -> list[TraceLine]:
    """The guard decisions that were not allowed (deny and would-deny), each
    after the `tool.call` of the call it happened in, for context."""
    denials = [e for e in events
               if e.get("event") == "guard.decision" and e.get("outcome") != "allow"]
    kept = {id(e) for e in denials}
    calls = {e.get("call_id") for e in denials} - {None}
    return [e for e in events if id(e) in kept or (
        e.get("event") == "tool.call" and e.get("call_id") in calls)]


_ACTION_COLOURS = {"ALLOW": "32", "DENY": "31", "WOULD-DENY": "33"}


def paint(text: str, code: str, colour: bool) -> str:
    """`text` in ANSI colour `code`, when `colour`."""
    return f"\033[{code}m{text}\033[0m" if colour else text


def show(events: Sequence[TraceLine], *, colour: bool = False) -> list[str]:
    """The events as aligned lines for people: seq, event, the call (id and
    tool), then what happened. `colour` adds ANSI colours to verdicts."""
    rows = []
    for event in events:
        call = f"{event.get('call_id', '')} {event.get('tool', '')}".strip()
        rows.append((str(event.get("seq", "?")), str(event.get("event", "?")), call,
                     _details(event, colour)))
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return [f"{seq.rjust(widths[0])}  {name.ljust(widths[1])}  "
            f"{call.ljust(widths[2]) + '  ' if widths[2] else ''}{details}".rstrip()
            for seq, name, call, details in rows]


def _details(event: dict[str, Any], colour: bool) -> str:
    kind = event.get("event")
    if kind == "guard.decision":
        outcome = str(event.get("outcome", event.get("action", "?"))).upper()
        shown = paint(outcome.ljust(10), _ACTION_COLOURS.get(outcome, "0"), colour)
        text = (f"{shown} {event.get('op')} {event.get('target')} [{event.get('rule')}] "
                f"{event.get('reason')}")
        if "approved" in event:
            text += f" (approver: {'yes' if event['approved'] else 'no'})"
        return text
    if kind == "tool.call":
        effects = ", ".join(event.get("side_effect") or ()) or "nothing"
        text = (f"args {_compact(event.get('args'))}  declares {effects}, undeclared "
                f"{event.get('default_policy')}, risk {event.get('risk_level')}")
        if "parent_call_id" in event:
            text += f", inside {event['parent_call_id']}"
        return text
    if kind == "tool.result":
        if "unrecordable" in event:
            return f"-> a {event['unrecordable']} (not recordable){_took(event)}"
        return f"-> {_compact(event.get('result'))}" + (
            " (secrets redacted)" if event.get("redacted") else "") + _took(event)
    if kind == "tool.error":
        error = event.get("error") or {}
        return paint(f"{error.get('type')}: {error.get('message')}", "31", colour) + \
            _took(event)
    if kind == "run.start":
        policy = event.get("policy") or {}
        argv = " ".join(event.get("argv") or ())
        return (f"failcore {event.get('failcore')}, python {event.get('python')}, policy "
                f"{policy.get('source')} ({str(policy.get('digest'))[:12]}), mode "
                f"{event.get('mode')}, argv {argv}"
                + (f", replaying {replay.get('file')}"
                   if isinstance(replay := (event.get("t") or {}).get("replay"), dict) else ""))
    if kind == "run.end":
        return (f"{event.get('calls')} calls, {event.get('denied')} denied, "
                f"{event.get('errors')} errors{_took(event)}")
    return _compact({k: v for k, v in event.items() if k not in ("seq", "event", "prev", "t")})


def _took(event: dict[str, Any]) -> str:
    t = event.get("t")
    ms = t.get("duration_ms", t.get("elapsed_ms")) if isinstance(t, dict) else None
    return f"  ({ms} ms)" if isinstance(ms, (int, float)) else ""


def _compact(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- diff ----------------------------------------------------------------------

# What differs between two runs of the same program, and the chain that
# follows from it: set aside when comparing.
IGNORED = ("t", "run_id", "prev")


class _Absent:
    """A field (or event) that one side does not have."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT: Any = _Absent()


class Difference(NamedTuple):
    """The first place two traces differ: event `index` (0-based, the seq it
    should have), the field `path` in it ("" for the whole event, when one
    trace has no event there) and the value on each side, `ABSENT` where a
    side has none."""

    index: int
    path: str
    a: Any
    b: Any

    def to_dict(self) -> dict[str, Any]:
        """As JSON: an absent side is left out."""
        data: dict[str, Any] = {"index": self.index, "path": self.path}
        if self.a is not ABSENT:
            data["a"] = self.a
        if self.b is not ABSENT:
            data["b"] = self.b
        return data

    def describe(self) -> str:
        """One sentence for people."""
        where = f"event {self.index}"
        if self.path == "":
            longer, event = ("B", self.b) if self.a is ABSENT else ("A", self.a)
            shorter = "A" if longer == "B" else "B"
            return (f"{where}: {shorter} ends after {self.index} events; {longer} goes on with "
                    f"{event.get('event')} {_compact(_meaningful(event))}")
        return (f"{where}, field {self.path}: A has {_shown(self.a)}, B has {_shown(self.b)}")


def _shown(value: Any) -> str:
    return "no such field" if value is ABSENT else _compact(value)


def _meaningful(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in IGNORED}


def diff(a_events: Sequence[dict[str, Any]],
         b_events: Sequence[dict[str, Any]]) -> Difference | None:
    """The first difference between two traces, the fields in `IGNORED` set
    aside (at the top of each event); None when they are the same."""
    for index in range(max(len(a_events), len(b_events))):
        if index >= len(a_events):
            return Difference(index, "", ABSENT, dict(b_events[index]))
        if index >= len(b_events):
            return Difference(index, "", dict(a_events[index]), ABSENT)
        found = _first(_meaningful(a_events[index]), _meaningful(b_events[index]), "")
        if found is not None:
            return Difference(index, *found)
    return None


def _first(a: Any, b: Any, path: str) -> tuple[str, Any, Any] | None:
    """The first (path, a, b) where two JSON values differ, in A's key order."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            where = f"{path}.{key}" if path else key
            if key not in b:
                return where, a[key], ABSENT
            if key not in a:
                return where, ABSENT, b[key]
            found = _first(a[key], b[key], where)
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i in range(max(len(a), len(b))):
            where = f"{path}[{i}]"
            if i >= len(a):
                return where, ABSENT, b[i]
            if i >= len(b):
                return where, a[i], ABSENT
            found = _first(a[i], b[i], where)
            if found is not None:
                return found
        return None
    if type(a) is not type(b) or a != b:  # 1, 1.0 and true are different JSON
        return path, a, b
    return None


# -- check ---------------------------------------------------------------------


class Change(NamedTuple):
    """A recorded decision that another policy would decide the other way."""

    seq: int
    op: str
    target: str
    call_id: str | None
    tool: str | None
    recorded: str  # the recorded action: allow or deny
    recorded_rule: str
    action: str  # the new action
    rule: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


class NotRejudged(NamedTuple):
    """A recorded decision `check` cannot decide again, and why."""

    seq: int
    op: str
    target: str
    rule: str
    why: str

    def to_dict(self) -> dict[str, Any]:
        return self._asdict()


class CheckResult(NamedTuple):
    """What `check` found: the `changes`, the decisions it could not re-judge
    (never counted as changes), and how many decisions it re-judged."""

    changes: list[Change]
    not_rejudged: list[NotRejudged]
    judged: int


# Rules no policy decides: failcore's own refusals and facts about the process.
_NOT_POLICY = ("guard.", "process.subinterpreter", "network.invalid",
               "network.unix.unpinnable")
_FAMILY = re.compile(r"(raw )?(AF_[A-Z0-9_]+|[0-9]+)$")


def rejudge(event: dict[str, Any], policy: Policy) -> Decision | str:
    """The decision `policy` makes about the operation a `guard.decision`
    event records, before any tool's metadata; or a str saying why it cannot
    be decided again."""
    from . import _addresses as addr

    op, target, rule = str(event.get("op")), str(event.get("target")), str(event.get("rule"))
    if rule.startswith(_NOT_POLICY):
        return f"{rule} is failcore's own verdict, not a policy's"
    if op == "net.resolve":
        return policy.check_resolve(target)
    if op.startswith("net."):
        if rule.startswith("network.unix") or target.startswith(("/", "@")):
            path = "\0" + target[1:] if target.startswith("@") else target
            decision = policy.check_unix(path, op=op)
            if (rule == "network.unix.system" and decision.allowed
                    and policy.network.unix == "deny-system"):
                # The socket was found to be a system one by what it is (the SSH
                # agent's, or hard-linked), which the trace does not hold.
                from ._types import Action, Decision

                decision = Decision(Action.DENY, op, target, rule, str(event.get("reason")))
            return decision
        family = _FAMILY.match(target)
        if rule == "network.family" or family:
            if family is None:
                return f"{target!r} names no socket family"
            import socket

            name = family.group(2)
            number = int(name) if name.isdigit() else getattr(socket, name, None)
            if not isinstance(number, int):
                return f"{name} is not a socket family on this system"
            return policy.check_family(number, raw=bool(family.group(1)), op=op)
        from ._policy import split_target

        address = split_target(target)
        ip = addr.parse_ip(address[0]) if address is not None else None
        if ip is None:
            return f"{target!r} is not an address with an IP"
        return policy.check_ip(ip, address[1], tuple(event.get("names") or ()), op=op)
    if op.startswith("fs."):
        return policy.check_path(op, target)
    if op == "proc.exec":
        from ._processes import locate

        argv = event.get("argv")
        if not isinstance(argv, list):
            argv = target.split(" ")
        return policy.check_exec(argv, locate, shell=event.get("shell") is True)
    return f"no policy decides {op}"


def check(events: Sequence[dict[str, Any]], policy: Policy) -> CheckResult:
    """Judge every recorded guard decision again under `policy`, as the
    run judged it: first the policy, then (inside a tool call) the recorded
    metadata of that call and of each call it was made from. An operation a
    tool did not declare is denied when its default policy is block; for ask,
    the approver's recorded answer is used (none recorded counts as no).

    A change is a decision whose action (allow/deny) differs from the
    recorded one; a would-deny counts as deny. `policy` stands in for every
    policy of the recorded run (a session's and the global guard's alike).
    """
    from ._scope import judge_declared
    from ._tools import ToolMetadata

    calls: dict[str, dict[str, Any]] = {}
    answers = {(e.get("call_id"), e.get("op"), e.get("target")): e["approved"]
               for e in events if e.get("event") == "guard.decision"
               and isinstance(e.get("approved"), bool)}
    changes, skipped, judged = [], [], 0
    for event in events:
        kind = event.get("event")
        if kind == "tool.call" and isinstance(event.get("call_id"), str):
            calls[event["call_id"]] = event
        if kind != "guard.decision":
            continue
        verdict = rejudge(event, policy)
        if isinstance(verdict, str):
            skipped.append(NotRejudged(event.get("seq", -1), str(event.get("op")),
                                       str(event.get("target")), str(event.get("rule")),
                                       verdict))
            continue
        judged += 1
        call_id = event.get("call_id")
        seen: set[str] = set()
        call = calls.get(call_id) if isinstance(call_id, str) else None
        while verdict.allowed and call is not None and call["call_id"] not in seen:
            seen.add(call["call_id"])
            try:
                metadata = ToolMetadata.from_dict(call)
            except (KeyError, TypeError, ValueError):
                break  # a tool.call without readable metadata: the policy alone
            answer = answers.get((call_id, event.get("op"), event.get("target")))
            verdict = judge_declared(
                verdict, metadata, str(call.get("tool")), lambda deny: answer is True,
                "the approver did not allow it (its recorded answer)" if answer is False
                else "the approver would be asked; the trace holds no answer, so no")
            call = calls.get(call.get("parent_call_id"))
        recorded = str(event.get("action"))
        if verdict.action.value != recorded:
            changes.append(Change(event.get("seq", -1), verdict.op, str(event.get("target")),
                                  call_id, event.get("tool"), recorded, str(event.get("rule")),
                                  verdict.action.value, verdict.rule, verdict.reason))
    return CheckResult(changes, skipped, judged)

"""Reading traces back: parsing, and checking the chain (`failcore trace verify`)."""

from __future__ import annotations

import json

from . import _trace

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

EVENTS = ("run.start", "run.end", "tool.call", "tool.result", "tool.error", "guard.decision")


class TraceLine(dict):
    """One parsed event; `raw` is the line's bytes as written (for the chain),
    `number` its line number in the file (1-based)."""

    raw: bytes = b""
    number: int = 0


def read(path: str) -> list[TraceLine]:
    """Every complete line of the trace at `path`, parsed. A last line without
    its newline (a crash mid-write) is not part of the trace and is left out;
    anything else that is not a JSON object is a ValueError naming the line."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: empty, or an unfinished line
    events = []
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


def verify(events: list[TraceLine]) -> list[str]:
    """What is wrong with the chain, in file order (empty: intact).

    Catches an edited line (the next line's `prev` no longer matches), a
    deleted or reordered line (`seq` out of order, and the chain), and a
    trace cut short or never finished (no `run.end` last).
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
    return problems

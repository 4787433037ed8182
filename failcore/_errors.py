"""Every exception failcore raises."""

from __future__ import annotations

import errno

from ._types import Decision


class SecurityError(PermissionError):
    """An operation was denied by the failcore policy before it ran.

    A `PermissionError` with errno `EACCES`, so code that already handles
    permission failures handles this too. `decision` says what was denied
    and which rule decided.
    """

    def __init__(self, decision: Decision) -> None:
        super().__init__(errno.EACCES, decision.reason)
        self.decision = decision

    def __str__(self) -> str:
        return self.decision.reason

    def __reduce__(self):  # picklable across processes and executors
        return (type(self), (self.decision,))


class PolicyError(ValueError):
    """A policy could not be loaded: it names where, what, and what to write."""

    def __init__(self, message: str, *, source: str | None = None,
                 key: str | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.key = key


class ToolError(ValueError):
    """A session call that cannot start: an unknown tool, a name registered
    twice, or arguments that do not fit the tool's signature."""


class ReplayMismatch(Exception):
    """A replayed call does not match the recording, or the recording cannot
    give its outcome back. The real tool is never run in its place."""

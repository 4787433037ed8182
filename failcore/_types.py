"""The decision type shared by the engine, the guard and the command line."""

from __future__ import annotations

import enum
from typing import NamedTuple


class Action(str, enum.Enum):
    """What the policy says about one operation."""

    ALLOW = "allow"
    DENY = "deny"

    def __str__(self) -> str:
        return self.value


class Mode(str, enum.Enum):
    """How the guard acts on a deny: raise, only record, or not check at all."""

    ENFORCE = "enforce"
    AUDIT = "audit"
    OFF = "off"

    def __str__(self) -> str:
        return self.value


class Decision(NamedTuple):
    """One verdict: what was asked (`op`, `target`), the answer and why.

    `rule` is a stable identifier of the rule that decided (tests and tools
    match on it); `reason` is one plain sentence for people. A NamedTuple:
    immutable, and cheap to build on the hot path.
    """

    action: Action
    op: str
    target: str
    rule: str
    reason: str

    @property
    def allowed(self) -> bool:
        return self.action is Action.ALLOW

    def to_dict(self) -> dict[str, str]:
        return {
            "action": self.action.value,
            "op": self.op,
            "target": self.target,
            "rule": self.rule,
            "reason": self.reason,
        }

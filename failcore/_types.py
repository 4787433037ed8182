"""The decision type shared by the engine, the guard and the command line."""

from __future__ import annotations

import enum
from collections import namedtuple


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


class Decision(namedtuple("Decision", ("action", "op", "target", "rule", "reason"))):
    """One verdict: what was asked (`op`, `target`), the answer and why.

    `action` is an `Action`; the others are `str`. `rule` is a stable
    identifier of the rule that decided (tests and tools match on it);
    `reason` is one plain sentence for people. A named tuple: immutable, and
    cheap to build on the hot path (`collections.namedtuple`, not
    `typing.NamedTuple`: typing costs milliseconds at interpreter start-up).
    """

    __slots__ = ()

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


"""What a tool declares about itself: `ToolMetadata` and its enums.

Loaded with the first session, not at interpreter start-up (flag enums cost
a fraction of a millisecond to build, and start-up has a budget).
"""

from __future__ import annotations

import enum


class RiskLevel(str, enum.Enum):
    """How much harm a tool can do; recorded on every trace event of its calls."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    def __str__(self) -> str:
        return self.value


class SideEffect(enum.IntFlag):
    """What a tool may do. Combine with `|`; `FS` is both file categories."""

    NONE = 0
    FS_READ = 1
    FS_WRITE = 2
    NETWORK = 4
    PROCESS = 8
    FS = FS_READ | FS_WRITE

    def names(self) -> list[str]:
        """The single categories in this value, lower case: `["fs_read", "network"]`."""
        return [member.name.lower() for member in _SINGLE_EFFECTS if member & self]


_SINGLE_EFFECTS = (SideEffect.FS_READ, SideEffect.FS_WRITE, SideEffect.NETWORK,
                   SideEffect.PROCESS)
_ALL_EFFECTS = 15


class DefaultPolicy(str, enum.Enum):
    """What happens to an operation outside a tool's declared side effects."""

    ALLOW = "allow"  # left to the policy, as if declared
    BLOCK = "block"  # denied
    ASK = "ask"      # the session's approver decides; denied when there is none

    def __str__(self) -> str:
        return self.value


def _member(enum_type: type, value: object, field: str) -> object:
    """`value` as a member of `enum_type` (a member or its value), or a TypeError
    naming the field and what it takes."""
    if isinstance(value, enum_type):
        return value
    try:
        return enum_type(value)
    except ValueError:
        choices = ", ".join(f"{enum_type.__name__}.{m.name}" for m in enum_type)
        raise TypeError(f"ToolMetadata: {field} got {value!r}, expected one of "
                        f"{choices}") from None


class ToolMetadata:
    """What a tool declares about itself: its risk, the side effects it may
    have, and what happens to one it did not declare.

    The defaults declare nothing and block the undeclared: a tool registered
    without metadata may compute, but not touch files, the network or
    processes. Each declared operation is still judged by the policy.
    """

    __slots__ = ("risk_level", "side_effect", "default_policy")

    def __init__(self, risk_level: RiskLevel | str = RiskLevel.MEDIUM,
                 side_effect: SideEffect | int = SideEffect.NONE,
                 default_policy: DefaultPolicy | str = DefaultPolicy.BLOCK) -> None:
        if isinstance(side_effect, bool) or not isinstance(side_effect, int) or \
                int(side_effect) & ~_ALL_EFFECTS:
            raise TypeError(f"ToolMetadata: side_effect got {side_effect!r}, expected "
                            f"SideEffect flags (NONE, FS_READ, FS_WRITE, FS, NETWORK, "
                            f"PROCESS, combined with |)")
        object.__setattr__(self, "risk_level", _member(RiskLevel, risk_level, "risk_level"))
        object.__setattr__(self, "side_effect", SideEffect(side_effect))
        object.__setattr__(self, "default_policy",
                           _member(DefaultPolicy, default_policy, "default_policy"))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ToolMetadata is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ToolMetadata) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def _key(self) -> tuple:
        return (self.risk_level, int(self.side_effect), self.default_policy)

    def __repr__(self) -> str:
        return (f"ToolMetadata(risk_level=RiskLevel.{self.risk_level.name}, "
                f"side_effect={self.side_effect!r}, "
                f"default_policy=DefaultPolicy.{self.default_policy.name})")

    def to_dict(self) -> dict[str, object]:
        """As the trace records it."""
        return {"risk_level": self.risk_level.value, "side_effect": self.side_effect.names(),
                "default_policy": self.default_policy.value}

    @classmethod
    def from_dict(cls, data: dict) -> ToolMetadata:
        """From `to_dict`'s form (how `failcore trace check` reads it back)."""
        effect = SideEffect.NONE
        for name in data.get("side_effect", ()):
            effect |= SideEffect[name.upper()]
        return cls(data["risk_level"], effect, data["default_policy"])

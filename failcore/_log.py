"""One structlog event for every deny and would-deny.

failcore never configures logging. Without a structlog configuration of the
application's, events go to the stdlib logger "failcore" (so they reach the
application's handlers, or stderr through logging's last resort) with the
decision's fields as record attributes.
"""

from __future__ import annotations

from ._types import Decision

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at interpreter start-up
    from typing import Any

_stdlib_logger: Any = None


def _stdlib_record(logger: Any, method: str, event: dict[str, Any]) -> dict[str, Any]:
    """Final processor: a readable message, the fields as `extra`."""
    fields = {k: v for k, v in event.items() if k != "event"}
    verb = "denied" if fields.get("outcome") == "deny" else "would deny"
    message = (f"failcore {verb} {fields.get('op')} {fields.get('target')} "
               f"[{fields.get('rule')}]: {fields.get('reason')}")
    return {"msg": message, "extra": fields}


def _get_logger() -> Any:
    """The application's structlog pipeline if it has one, else stdlib "failcore"."""
    global _stdlib_logger
    import structlog

    if structlog.is_configured():
        return structlog.get_logger("failcore")
    if _stdlib_logger is None:
        import logging

        _stdlib_logger = structlog.wrap_logger(logging.getLogger("failcore"),
                                               processors=[_stdlib_record])
    return _stdlib_logger


def log_decision(decision: Decision, outcome: str, mode: str) -> None:
    """Emit `failcore.decision` with the decision's fields; never raises."""
    try:
        _get_logger().warning("failcore.decision", outcome=outcome, mode=mode,
                              **decision.to_dict())
    except Exception:  # a broken log pipeline must not change the verdict
        pass

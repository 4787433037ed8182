"""failcore: execution-time safety for AI agents.

`failcore.install()` guards this process: every connection, file operation
and process launch is judged by the policy before it happens, and a denied
one raises `SecurityError`. A `Session` runs tools under a policy of its own,
records them in a trace and replays them.
"""

from . import _originals  # noqa: F401  (first: saves the true entry points)
from . import presets
from ._errors import PolicyError, ReplayMismatch, SecurityError, ToolError
from ._guard import install, installed_mode, installed_policy, uninstall
from ._policy import Policy
from ._types import (Action, Decision, DefaultPolicy, Mode, RiskLevel, SideEffect,
                     ToolMetadata)


def __getattr__(name: str):
    # Sessions load on first use: the interpreter start-up path stays short.
    if name in ("Session", "ApprovalRequest"):
        from . import _scope, _session

        value = getattr(_session, name, None) or getattr(_scope, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'failcore' has no attribute {name!r}")

__version__ = "0.1.0"

__all__ = [
    "Action",
    "ApprovalRequest",
    "Decision",
    "DefaultPolicy",
    "Mode",
    "Policy",
    "PolicyError",
    "ReplayMismatch",
    "RiskLevel",
    "SecurityError",
    "Session",
    "SideEffect",
    "ToolError",
    "ToolMetadata",
    "__version__",
    "install",
    "installed_mode",
    "installed_policy",
    "presets",
    "uninstall",
]

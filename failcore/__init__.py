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
from ._types import Action, Decision, Mode

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

# Loaded when first used, not at interpreter start-up (SPEC §9).
_LAZY = {"Session": "_session", "ApprovalRequest": "_scope", "ToolMetadata": "_tools",
         "RiskLevel": "_tools", "SideEffect": "_tools", "DefaultPolicy": "_tools"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'failcore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

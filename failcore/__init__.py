"""failcore: execution-time safety for AI agents.

`failcore.install()` guards this process: every connection is judged by the
policy before it is made, and a denied one raises `SecurityError`.
"""

from . import _originals  # noqa: F401  (first: saves the true entry points)
from . import presets
from ._errors import PolicyError, SecurityError
from ._guard import install, installed_mode, installed_policy, uninstall
from ._policy import Policy
from ._types import Action, Decision, Mode

__version__ = "0.1.0"

__all__ = [
    "Action",
    "Decision",
    "Mode",
    "Policy",
    "PolicyError",
    "SecurityError",
    "__version__",
    "install",
    "installed_mode",
    "installed_policy",
    "presets",
    "uninstall",
]

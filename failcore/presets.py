"""Ready-made policies, as functions and by name.

`net_safe`, `net_safe_strict` and `agent_safe` can also be named in
`install("net_safe")`, `--policy net_safe` and `extends = "net_safe"`.
"""

from __future__ import annotations

from typing import Any, Callable

from ._policy import Policy

__all__ = ["PRESET_NAMES", "agent_safe", "by_name", "net_safe"]


def _net_safe_config(strict: bool) -> dict[str, Any]:
    network: dict[str, Any] = {"default": "public", "unix": "deny-system"}
    if strict:
        network.update(ports=[80, 443], unix="deny")
    return {"network": network}


def net_safe(strict: bool = False) -> Policy:
    """Only public addresses; loopback, private, link-local and metadata are denied.

    `strict` also limits ports to 80 and 443 and denies AF_UNIX sockets.
    """
    name = "net_safe_strict" if strict else "net_safe"
    return Policy.from_dict(_net_safe_config(strict), source=f"preset {name}")


def agent_safe() -> Policy:
    """The policy for an agent: `net_safe`'s network rules.

    Filesystem and process rules join this preset when those guards exist.
    """
    return Policy.from_dict(_net_safe_config(False), source="preset agent_safe")


_PRESETS: dict[str, tuple[Callable[[], dict[str, Any]], Callable[[], Policy]]] = {
    "net_safe": (lambda: _net_safe_config(False), lambda: net_safe()),
    "net_safe_strict": (lambda: _net_safe_config(True), lambda: net_safe(strict=True)),
    "agent_safe": (lambda: _net_safe_config(False), agent_safe),
}
PRESET_NAMES = tuple(_PRESETS)


def by_name(name: str) -> Policy:
    """The preset called `name` (one of `PRESET_NAMES`)."""
    try:
        return _PRESETS[name][1]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; expected one of {', '.join(PRESET_NAMES)}") from None


def preset_config(name: str) -> dict[str, Any]:
    """The preset's configuration in the TOML format, for `extends`."""
    return _PRESETS[name][0]()

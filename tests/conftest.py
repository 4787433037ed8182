"""Test set-up: the network lab (SPEC §10) and global-state hygiene."""

from __future__ import annotations

import os

import pytest

import failcore
from tests import netlab

_lab: netlab.Lab | None = None
_lab_unavailable: str | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _lab, _lab_unavailable
    if netlab.in_lab():
        _lab = netlab.start()
    elif os.environ.get("FAILCORE_NO_NETLAB") == "1":
        _lab_unavailable = "FAILCORE_NO_NETLAB=1"
    else:
        _lab_unavailable = netlab.reexec_inside(config)  # returns only on failure


def pytest_unconfigure(config: pytest.Config) -> None:
    if _lab is not None:
        _lab.close()


def pytest_report_header(config: pytest.Config) -> str:
    if _lab is not None:
        return "failcore netlab: running inside a fresh network namespace"
    return f"failcore netlab: unavailable ({_lab_unavailable}); lab tests skip"


@pytest.fixture
def lab() -> netlab.Lab:
    """The network lab, reset: empty server logs, the original hosts file."""
    if _lab is None:
        message = f"the network lab is unavailable: {_lab_unavailable}"
        if os.environ.get(netlab.REQUIRE_ENV) == "1":
            pytest.fail(f"{message} (and {netlab.REQUIRE_ENV}=1)")
        pytest.skip(message)
    _lab.reset()
    return _lab


@pytest.fixture(autouse=True)
def _no_guard_left_behind():
    """Every test starts and ends with the guard uninstalled."""
    failcore.uninstall()
    yield
    failcore.uninstall()

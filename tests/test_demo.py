"""The README's demo runs and proves its claims (it exits 0 only if they hold)."""

import os
import subprocess
import sys

DEMO = os.path.join(os.path.dirname(__file__), "..", "examples", "demo.py")


def test_demo_blocks_the_attacks_and_serves_the_real_request():
    """Every attack is blocked, the internal service receives nothing, the real call works."""
    result = subprocess.run([sys.executable, DEMO], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The internal service received 0 requests." in result.stdout
    assert result.stdout.count("BLOCKED") == 9
    assert "LEAKED" not in result.stdout and result.stdout.count("ALLOWED") == 3

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


SESSION_DEMO = os.path.join(os.path.dirname(__file__), "..", "examples", "session_demo.py")


def test_session_demo_blocks_records_replays_and_audits():
    """The session demo's claims hold: attacks blocked, real calls served, the replay
    repeats no side effect, the trace verifies and check finds what agent_safe changes."""
    result = subprocess.run([sys.executable, SESSION_DEMO], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The API received 2 request(s) live and 0 under replay." in result.stdout
    assert result.stdout.count("BLOCKED") == 4 and "2 would change" in result.stdout

"""Smoke: the lab is up and its servers are reachable without failcore."""
import urllib.request

from tests import netlab


def test_lab_servers_answer_without_the_guard(lab):
    """Without failcore, the lab's metadata server serves its canary: attacks would work."""
    body = urllib.request.urlopen("http://metadata.google.internal/", timeout=5).read().decode()
    assert netlab.CANARY in body
    assert lab.server("169.254.169.254").touched()

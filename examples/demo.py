"""failcore demo: an agent's HTTP tool under attack, on this machine only.

Two local services stand in for the world: an internal service holding a
secret (think cloud metadata on 169.254.169.254) and an API the agent is
allowed to use. The agent's tool is asked to fetch URLs a prompt injection
chose. With failcore installed, every attack is stopped before a byte is
sent, and the legitimate request works as before.

Needs no root and no internet: everything is on 127.0.0.1.
Exit code 0 when every attack was blocked and the allowed request worked.
"""

from __future__ import annotations

import http.server
import logging
import sys
import threading
import urllib.request

import failcore


class Service(http.server.ThreadingHTTPServer):
    """A local HTTP service that counts what it receives."""

    def __init__(self, name: str, body: str) -> None:
        self.name, self.body, self.requests = name, body, []
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.requests.append(self.path)
                if self.path.startswith("/redirect?to="):
                    self.send_response(302)
                    self.send_header("Location", self.path.split("=", 1)[1])
                    self.end_headers()
                    return
                self.send_response(200)
                self.end_headers()
                self.wfile.write(service.body.encode())

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


def http_get(url: str) -> str:
    """The agent's tool: fetch a URL (urllib follows redirects)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


class Decisions(logging.Handler):
    """Collects failcore's deny events to show them at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(record)


def main() -> int:
    internal = Service("internal service", "TOP-SECRET-CREDENTIALS")
    api = Service("allowed API", '{"weather": "sunny"}')
    decisions = Decisions()
    log = logging.getLogger("failcore")
    log.addHandler(decisions)
    log.propagate = False

    # net_safe denies loopback, private and metadata addresses; this policy
    # opens exactly one port of it: the allowed API.
    failcore.install({"version": 1, "extends": "net_safe",
                      "network": {"allow": [f"127.0.0.1:{api.port}"]}})

    secret = f"127.0.0.1:{internal.port}"
    attacks = [
        ("direct request to the internal service", f"http://{secret}/credentials"),
        ("the same address spelled as a decimal integer", f"http://2130706433:{internal.port}/"),
        ("IPv4-mapped IPv6", f"http://[::ffff:127.0.0.1]:{internal.port}/"),
        ("redirect from the allowed API to the internal service",
         f"http://127.0.0.1:{api.port}/redirect?to=http://{secret}/credentials"),
    ]
    ok = True
    print("Attacks chosen by a prompt injection:")
    for label, url in attacks:
        try:
            body = http_get(url)
        except OSError as exc:  # urllib wraps SecurityError in URLError
            reason = getattr(exc, "reason", exc)
            blocked = isinstance(reason, failcore.SecurityError)
            print(f"  {'BLOCKED' if blocked else 'FAILED '}  {label}\n           {reason}")
            ok &= blocked
        else:
            print(f"  LEAKED   {label}: {body!r}")
            ok = False

    print("\nA legitimate request:")
    try:
        body = http_get(f"http://127.0.0.1:{api.port}/weather")
        print(f"  ALLOWED  GET /weather -> {body}")
        ok &= "sunny" in body
    except OSError as exc:
        print(f"  BROKEN   GET /weather -> {exc}")
        ok = False

    failcore.uninstall()
    print("\nWhat failcore decided (one event per deny, from the 'failcore' logger):")
    for event in decisions.events:
        print(f"  {event.action:5}  {event.op:11}  {event.target:24}  {event.rule}")
    print(f"\nThe {internal.name} received {len(internal.requests)} requests.")
    print(f"The {api.name} received {len(api.requests)} requests: {api.requests}")
    ok &= not internal.requests
    print("\nResult:", "every attack blocked, the real request served." if ok
          else "SOMETHING WENT WRONG (see above).")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

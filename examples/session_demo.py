"""failcore session demo: tools under a session, recorded, replayed and audited.

An agent's tools run under a `Session`: a fetch tool declared NETWORK and a
note-writing tool declared FS_WRITE, under `net_safe` plus an allow rule for
a local API. A prompt injection asks for the cloud metadata endpoint (blocked
before a socket connects: nothing leaves this machine) and asks the fetch
tool to write a file it never declared (blocked before the file exists). The
real work is done and recorded in a trace. The same agent is then replayed
from the trace: same answers, no tool runs, the API receives nothing more.
Last, `failcore trace verify` checks the chain and `failcore trace check`
shows what a stricter policy would change.

Needs no root and no internet. Exit code 0 when every claim above held.
"""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import tempfile
import threading
import urllib.request

from failcore import (DefaultPolicy, RiskLevel, SecurityError, Session, SideEffect,
                      ToolMetadata, presets)


class API(http.server.ThreadingHTTPServer):
    """A local API that counts the requests it receives."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.requests.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b'{"forecast": "sunny"}')

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def fetch_and_save(url: str, path: str) -> str:
    """What an injected plan asks of the fetch tool: keep a copy on disk."""
    text = fetch(url)
    with open(path, "w") as f:
        f.write(text)
    return text


def write_note(path: str, text: str) -> int:
    with open(path, "w") as f:
        return f.write(text)


def agent(session: Session, api: str, workspace: str) -> list[str]:
    """The agent's plan; what it prints is the same live and under replay."""
    lines = []
    for tool, args in [("fetch", {"url": "http://169.254.169.254/latest/meta-data/"}),
                       ("fetch_and_save", {"url": api, "path": f"{workspace}/stolen.txt"}),
                       ("fetch", {"url": api}),
                       ("write_note", {"path": f"{workspace}/note.txt", "text": "sunny"})]:
        try:
            lines.append(f"  ok       {tool}: {session.call(tool, **args)!r}")
        except SecurityError as exc:
            lines.append(f"  BLOCKED  {tool}: {exc}")
    return lines


def make_session(port: int, **kwargs) -> Session:
    policy = presets.net_safe().config
    policy["network"]["allow"] = [f"127.0.0.1:{port}"]
    session = Session(policy=policy, **kwargs)
    network = ToolMetadata(RiskLevel.HIGH, SideEffect.NETWORK, DefaultPolicy.BLOCK)
    session.register("fetch", fetch, metadata=network)
    session.register("fetch_and_save", fetch_and_save, metadata=network)
    session.register("write_note", write_note,
                     metadata=ToolMetadata(RiskLevel.LOW, SideEffect.FS_WRITE))
    return session


def failcore_cli(*args: str) -> int:
    result = subprocess.run([sys.executable, "-m", "failcore", *args], capture_output=True,
                            text=True)
    for line in (result.stdout + result.stderr).splitlines():
        print(f"    {line}")
    return result.returncode


def main() -> int:
    api = API()
    port = api.server_address[1]
    url = f"http://127.0.0.1:{port}/weather"
    with tempfile.TemporaryDirectory() as workspace:
        trace = os.path.join(workspace, "run.jsonl")
        print("Live run, recorded in run.jsonl:")
        with make_session(port, trace=trace) as session:
            live = agent(session, url, workspace)
        print("\n".join(live))
        served = len(api.requests)

        print("\nReplay from run.jsonl (no tool runs):")
        with make_session(port, replay=trace) as session:
            replayed = agent(session, url, workspace)
        print("\n".join(replayed))
        print(f"\nThe API received {served} request(s) live and "
              f"{len(api.requests) - served} under replay.")

        print("\n$ failcore trace verify run.jsonl")
        intact = failcore_cli("trace", "verify", trace)
        print("$ failcore trace check run.jsonl --policy agent_safe")
        changes = failcore_cli("trace", "check", trace, "--policy", "agent_safe")

        checks = [
            live[0].startswith("  BLOCKED  fetch: Access to private IP range 169.254.0.0/16"),
            live[1].startswith("  BLOCKED  fetch_and_save: The tool fetch_and_save did not"),
            not os.path.exists(f"{workspace}/stolen.txt"),
            live[2].endswith("'{\"forecast\": \"sunny\"}'"),
            os.path.exists(f"{workspace}/note.txt"),
            replayed == live and served == 2 and len(api.requests) == served,
            intact == 0,
            changes == 1,  # agent_safe has no allow rule for the local API
        ]
    ok = all(checks)
    print("\nResult:", "attacks blocked, work done, replayed without side effects, "
          "trace intact." if ok else f"a claim failed: {checks}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

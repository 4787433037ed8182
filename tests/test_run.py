"""`python -m failcore run`: the script runs as __main__ exactly as `python script.py` would."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest


def failcore(*args, cwd=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "failcore", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=60, **kwargs)


def script(tmp_path, body, name="agent.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return str(path)


def test_script_sees_python_semantics(tmp_path):
    """__name__, sys.argv, sys.path[0], __file__ and the exit code are Python's own."""
    path = script(tmp_path, """
        import json, sys
        if __name__ == "__main__":
            print(json.dumps({"argv": sys.argv, "path0": sys.path[0], "file": __file__,
                              "main": sys.modules["__main__"].__dict__ is globals()}))
            sys.exit(3)
    """)
    result = failcore("run", path, "a", "--b", "-m", cwd="/")
    assert result.returncode == 3, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {"argv": [path, "a", "--b", "-m"], "path0": str(tmp_path.resolve()),
                    "file": path, "main": True}


def test_guard_is_in_force_before_the_first_line(tmp_path):
    """The script's very first statement is already judged by the policy."""
    path = script(tmp_path, """
        import socket
        server = socket.create_server(("127.0.0.1", 0))
        try:
            socket.create_connection(server.getsockname(), timeout=2)
        except PermissionError as e:
            print(type(e).__name__, e.decision.rule)
    """)
    result = failcore("run", "--policy", "net_safe", path)
    assert result.stdout.strip() == "SecurityError network.public", result.stderr


def test_mode_and_policy_options(tmp_path):
    """--policy takes a file and --mode audit lets the call through."""
    policy = tmp_path / "p.toml"
    policy.write_text('version = 1\n[network]\nallow = ["127.0.0.1"]\n')
    path = script(tmp_path, """
        import socket, failcore
        server = socket.create_server(("127.0.0.1", 0))
        socket.create_connection(server.getsockname(), timeout=2).close()
        print(failcore.installed_policy().source, failcore.installed_mode())
    """)
    result = failcore("run", f"--policy={policy}", "--mode", "audit", path)
    assert result.stdout.split() == [str(policy), "audit"], result.stderr


def test_uncaught_exception_traceback_has_no_failcore_frames(tmp_path):
    """An error in the script prints the script's traceback only, and exits 1."""
    path = script(tmp_path, """
        def inner():
            raise ValueError("boom")
        inner()
    """)
    result = failcore("run", path)
    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):\n")
    assert f'File "{path}", line 4, in <module>' in result.stderr
    assert "ValueError: boom" in result.stderr
    assert "failcore" not in result.stderr.replace(str(tmp_path), "")


def test_sys_exit_with_a_message(tmp_path):
    """sys.exit("message") prints the message and exits 1, as Python does."""
    result = failcore("run", script(tmp_path, 'import sys\nsys.exit("bye")\n'))
    assert (result.returncode, result.stderr.strip()) == (1, "bye")


def test_keyboard_interrupt_exits_by_sigint_after_atexit(tmp_path):
    """KeyboardInterrupt ends the process with SIGINT after the atexit handlers ran
    (the trace's run.end among them), like `python script.py`."""
    trace = tmp_path / "t.jsonl"
    body = "import atexit\natexit.register(print, 'atexit ran')\nraise KeyboardInterrupt\n"
    result = failcore("run", "--trace", str(trace), script(tmp_path, body))
    assert result.returncode == -signal.SIGINT
    assert "KeyboardInterrupt" in result.stderr
    assert result.stdout == "atexit ran\n"
    assert trace.read_text().splitlines()[-1].startswith('{"seq":')
    assert '"event":"run.end"' in trace.read_text().splitlines()[-1]


def test_run_module(tmp_path):
    """`run -m package.module args` runs it as __main__ with cwd on sys.path."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "tool.py").write_text(
        "import sys\nif __name__ == '__main__':\n    print(sys.argv[1:]); sys.exit(4)\n")
    result = failcore("run", "-m", "pkg.tool", "x", "y", cwd=str(tmp_path))
    assert (result.returncode, result.stdout.strip()) == (4, "['x', 'y']"), result.stderr


def test_multiprocessing_spawn_works_from_a_run_script(tmp_path):
    """A script that uses multiprocessing spawn (pickling __main__ functions) still works."""
    path = script(tmp_path, """
        import multiprocessing as mp
        def square(x):
            return x * x
        if __name__ == "__main__":
            with mp.get_context("spawn").Pool(2) as pool:
                print(sum(pool.map(square, range(5))))
    """)
    result = failcore("run", path)
    assert (result.returncode, result.stdout.strip()) == (0, "30"), result.stderr


@pytest.mark.parametrize("args, code, fragment", [
    (["run"], 2, "needs a script"),
    (["run", "--bogus", "x.py"], 2, "unknown option"),
    (["run", "/nonexistent/agent.py"], 2, "can't open file"),
    (["run", "--policy", "net_unsafe", "x.py"], 78, "not a preset"),
])
def test_run_usage_and_configuration_errors(tmp_path, args, code, fragment):
    """Usage errors exit 2 and a bad policy exits 78; the script never runs."""
    if args[-1] == "x.py":
        script(tmp_path, "print('ran')\n", "x.py")
    result = failcore(*args, cwd=str(tmp_path))
    assert result.returncode == code and fragment in result.stderr
    assert "ran" not in result.stdout


def test_console_script_is_installed():
    """The `failcore` console script runs the same CLI."""
    exe = os.path.join(os.path.dirname(sys.executable), "failcore")
    result = subprocess.run([exe, "policy", "check", "net_safe"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("ok:")


def test_script_file_is_absolute_and_loader_is_set(tmp_path):
    """__file__ is absolute even for a relative path, as Python 3.9+ sets it."""
    script(tmp_path, "import os\nprint(os.path.isabs(__file__), type(__loader__).__name__)\n")
    result = failcore("run", "agent.py", cwd=str(tmp_path))
    assert result.stdout.split() == ["True", "SourceFileLoader"], result.stderr


def test_run_module_stays_main_after_its_body_returns(tmp_path):
    """With -m the module remains __main__ for atexit handlers and late pickling."""
    (tmp_path / "late.py").write_text(textwrap.dedent("""
        import atexit, pickle, sys
        def work():
            return 42
        atexit.register(lambda: print(sys.modules["__main__"].__name__,
                                      len(pickle.dumps(sys.modules["__main__"].work)) > 0))
    """))
    result = failcore("run", "-m", "late", cwd=str(tmp_path))
    assert result.stdout.split() == ["__main__", "True"], result.stderr


def test_the_script_is_read_before_the_guard_and_its_actions_after(tmp_path):
    """Reading the script is the interpreter's own read, done before the guard is on
    (here the script even sits where the policy denies reads); what it then does
    is judged."""
    workspace = tmp_path / "work"
    workspace.mkdir()
    secrets = tmp_path / "home" / ".ssh"
    secrets.mkdir(parents=True)
    (secrets / "id_rsa").write_text("canary")
    path = script(secrets, f"""
        import colorsys, failcore
        open("made-here.txt", "w").write("ok")
        try:
            open({str(secrets / "id_rsa")!r}).read()
        except failcore.SecurityError as exc:
            print("denied", exc.decision.rule)
    """)
    result = failcore("run", "--policy", "fs_safe_strict", path, cwd=workspace,
                      env={**os.environ, "HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["denied", "filesystem.deny[~/.ssh]"]
    assert (workspace / "made-here.txt").read_text() == "ok"


def test_a_script_with_a_syntax_error_is_reported_as_python_does(tmp_path):
    path = script(tmp_path, "def (\n")
    result = failcore("run", path)
    assert result.returncode == 1
    assert "SyntaxError" in result.stderr and "failcore" not in result.stderr

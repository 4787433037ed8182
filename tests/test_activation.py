"""Activation with real processes: the environment (`failcore.pth`), `failcore run`,
`install()` and `sitecustomize_example/`, and the children a guarded process
starts by any route (SPEC §2, §8).

Every test builds a throwaway tree: HOME is `tmp_path/home`, whose
`.ssh/id_rsa` holds a canary (agent_safe denies `~/.ssh`), and `policy.toml`
denies `{cwd}/private.txt`, which holds the same canary. A guarded read says
`denied SecurityError` and the canary appears in no output.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "sitecustomize_example"
CANARY = "canary-5f0e1d9a"
TIMEOUT = 60
DENIED = "denied SecurityError"

# Defines probe(path, who): report the guard in force, try the forbidden read,
# print one line "who: {json}". Parent scripts define it at module level, so
# multiprocessing can pickle it as a target.
PROBE = textwrap.dedent("""\
    import json, sys

    def probe(path, who="child"):
        try:
            import failcore
        except ImportError:
            mode, source = "failcore not importable", None
        else:
            policy = failcore.installed_policy()
            mode, source = failcore.installed_mode().value, policy and policy.source
        try:
            with open(path) as f:
                read = "read " + f.read()
        except PermissionError as exc:
            read = "denied " + type(exc).__name__
        print(who + ": " + json.dumps({"mode": mode, "source": source, "read": read}),
              flush=True)
""")
# A child: `python -c CHILD_CODE path [who]`.
CHILD_CODE = PROBE + "probe(sys.argv[1], *sys.argv[2:3])\n"


@dataclass
class Tree:
    root: Path
    home: Path
    key: Path  # ~/.ssh/id_rsa: agent_safe denies it
    private: Path  # policy.toml denies it
    policy: Path
    elsewhere: Path  # another directory (a cwd, a HOME)

    def env(self, **variables: str) -> dict[str, str]:
        """A clean environment: no FAILCORE_*, no PYTHONPATH; HOME in the tree,
        this interpreter's bin first on PATH; then `variables`."""
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("FAILCORE_")
               and key not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH", "PYTHONSTARTUP")}
        env["HOME"] = str(self.home)
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable),
                                       env.get("PATH", os.defpath)])
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # base interpreters leave nothing in the repo
        env.update(variables)
        return env

    def write(self, name: str, text: str) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """A fresh tree with the two stand-in secrets, the TOML policy and another directory."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "id_rsa"
    key.write_text(CANARY)
    private = tmp_path / "private.txt"
    private.write_text(CANARY)
    policy = tmp_path / "policy.toml"
    policy.write_text('version = 1\n[filesystem]\ndeny = ["{cwd}/private.txt"]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    return Tree(tmp_path, home, key, private, policy, elsewhere)


def run(tree: Tree, *args: str, env: dict[str, str] | None = None,
        executable: str = sys.executable) -> subprocess.CompletedProcess[str]:
    """`executable args` in the tree, with `env` (default: the clean one)."""
    return subprocess.run([executable, *args], cwd=tree.root, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=TIMEOUT,
                          env=tree.env() if env is None else env)


def report(result: subprocess.CompletedProcess[str], who: str = "child") -> dict:
    """The one line `who` printed with probe()."""
    lines = [line for line in result.stdout.splitlines() if line.startswith(who + ": ")]
    if len(lines) != 1:
        pytest.fail(f"expected one {who!r} line (exit {result.returncode})\n"
                    f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}")
    return json.loads(lines[0][len(who) + 2:])


def assert_guarded(result: subprocess.CompletedProcess[str], *who: str) -> None:
    """Each of `who` was guarded in enforce mode: its read was denied, the canary never shown."""
    for name in who:
        seen = report(result, name)
        assert (seen["mode"], seen["read"]) == ("enforce", DENIED), (name, result.stderr)
    assert CANARY not in result.stdout + result.stderr


@functools.lru_cache(maxsize=None)
def lacks(executable: str, module: str) -> bool:
    """Whether `executable` cannot import `module` (from a neutral directory, no PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run([executable, "-c", f"import {module}"], cwd="/", env=env,
                            capture_output=True, timeout=TIMEOUT)
    return result.returncode != 0


def python_without_failcore() -> str:
    """A base interpreter that cannot import failcore nor its dependencies."""
    for executable in sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.1*/bin/python"))):
        if lacks(executable, "failcore") and lacks(executable, "netaddr"):
            return executable
    pytest.skip("no base interpreter without failcore (~/.pyenv/versions/3.1*/bin/python)")


def sitecustomize_route(tree: Tree, *first: Path, **variables: str) -> tuple[str, dict]:
    """This Python's base interpreter (no failcore.pth) and an environment where
    failcore comes from PYTHONPATH: sitecustomize_example, `first`, the source
    tree, this venv's site-packages for the dependencies."""
    base = os.path.join(sys.base_prefix, "bin", "python%d.%d" % sys.version_info[:2])
    if sys.prefix == sys.base_prefix or not os.path.exists(base) or not lacks(base, "failcore"):
        pytest.skip("needs a virtual environment whose base interpreter lacks failcore")
    paths = dict.fromkeys([str(EXAMPLE), *map(str, first), str(REPO),
                           sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    return base, tree.env(PYTHONPATH=os.pathsep.join(paths), **variables)


def chained_sitecustomize(tree: Tree) -> Path:
    """A directory whose sitecustomize.py records that it ran, and whether the guard was on."""
    tree.write("other/sitecustomize.py", """\
        import failcore, pathlib
        on = failcore.installed_policy() is not None
        pathlib.Path("chained.marker").write_text(f"guard={on}")
    """)
    return tree.root / "other"


# -- 1. activation from the environment -------------------------------------------


@pytest.mark.parametrize("variables, secret, expected", [
    ({"FAILCORE_POLICY": "agent_safe"}, "key", ("enforce", "preset agent_safe", DENIED)),
    ({"FAILCORE_POLICY": "{policy}"}, "private", ("enforce", "{policy}", DENIED)),
    ({"FAILCORE_POLICY": '{"version": 1, "filesystem": {"deny": ["{private}"]}}'}, "private",
     ("enforce", "inline JSON policy", DENIED)),
    ({"FAILCORE_POLICY": "agent_safe", "FAILCORE_MODE": "audit"}, "key",
     ("audit", "preset agent_safe", "read " + CANARY)),
    ({"FAILCORE_POLICY": "agent_safe", "FAILCORE_MODE": "off"}, "key",
     ("off", None, "read " + CANARY)),
    ({"FAILCORE_POLICY": "agent_safe", "FAILCORE_DISABLE": "1"}, "key",
     ("off", None, "read " + CANARY)),
    ({"FAILCORE_POLICY": "agent_safe", "FAILCORE_DISABLE": "0"}, "key",
     ("enforce", "preset agent_safe", DENIED)),
    ({}, "key", ("off", None, "read " + CANARY)),
], ids=["preset", "toml-file", "inline-json", "audit", "mode-off", "disabled", "disable-0",
        "unset"])
def test_environment_activation(tree, variables, secret, expected):
    """FAILCORE_POLICY (preset, TOML path, inline JSON) guards the program from its
    first line; audit or off mode, FAILCORE_DISABLE=1 and no FAILCORE_POLICY let the
    read through."""
    places = {"policy": str(tree.policy), "private": str(tree.private)}
    env = tree.env(**{k: v.replace("{policy}", places["policy"])
                      .replace("{private}", places["private"]) for k, v in variables.items()})
    path = getattr(tree, secret)
    result = run(tree, "-c", CHILD_CODE, str(path), env=env)
    assert result.returncode == 0, result.stderr
    seen = report(result)
    mode, source, read = expected
    assert (seen["mode"], seen["source"], seen["read"]) == (
        mode, source and source.replace("{policy}", places["policy"]), read)
    if read == DENIED:
        assert CANARY not in result.stdout + result.stderr
    if mode == "audit":
        assert "would deny" in result.stderr


# -- 2. start-up failures ---------------------------------------------------------------


FIRST_LINE = 'open("first-line-ran", "w").close()\nprint("ran")\n'

STARTUP_FAILURES = [
    ({"FAILCORE_POLICY": "{root}/missing.toml"}, ["missing.toml"]),
    ({"FAILCORE_POLICY": "{root}/invalid.toml"}, ["invalid.toml", "TOML"]),
    ({"FAILCORE_POLICY": "{root}/unknown-key.toml"}, ["unknown-key.toml", "bogus"]),
    ({"FAILCORE_POLICY": "net_unsafe"}, ["net_unsafe"]),
    ({"FAILCORE_POLICY": '{"version": 1,'}, ["JSON"]),
    ({"FAILCORE_POLICY": "agent_safe", "FAILCORE_MODE": "loud"}, ["FAILCORE_MODE", "loud"]),
    ({"FAILCORE_POLICY": "agent_safe", "FAILCORE_DISABLE": "yes"}, ["FAILCORE_DISABLE"]),
    ({"FAILCORE_POLICY": "agent_safe", "FAILCORE_TRACE": "{root}/no-such-dir/t.jsonl"},
     ["FAILCORE_TRACE", "no-such-dir"]),
]
STARTUP_IDS = ["missing-file", "invalid-toml", "unknown-key", "unknown-preset",
               "invalid-json", "bad-mode", "bad-disable", "unwritable-trace"]


@pytest.mark.parametrize("route", ["pth", "sitecustomize"])
@pytest.mark.parametrize("variables, named", STARTUP_FAILURES, ids=STARTUP_IDS)
def test_bad_configuration_stops_before_the_first_line(tree, route, variables, named):
    """A bad policy or FAILCORE_* value exits 78 with one message naming it, and
    the program's first line never runs (through failcore.pth and through sitecustomize)."""
    tree.write("invalid.toml", "version = [\n")
    tree.write("unknown-key.toml", "version = 1\n[network]\nbogus = 1\n")
    script = tree.write("first.py", FIRST_LINE)
    variables = {k: v.replace("{root}", str(tree.root)) for k, v in variables.items()}
    if route == "pth":
        executable, env = sys.executable, tree.env(**variables)
    else:
        executable, env = sitecustomize_route(tree, **variables)
    result = run(tree, str(script), env=env, executable=executable)
    assert result.returncode == 78, result.stderr
    assert result.stderr.count("failcore:") == 1, result.stderr
    for fragment in named:
        assert fragment in result.stderr, result.stderr
    assert result.stdout == ""
    assert not (tree.root / "first-line-ran").exists()


def test_failcore_not_importable_exits_70(tree):
    """With FAILCORE_POLICY set and failcore not importable, the sitecustomize route
    exits 70 before the program's first line."""
    executable = python_without_failcore()
    script = tree.write("first.py", FIRST_LINE)
    env = tree.env(FAILCORE_POLICY="agent_safe", PYTHONPATH=str(EXAMPLE))
    result = run(tree, str(script), env=env, executable=executable)
    assert result.returncode == 70, result.stderr
    assert "failcore cannot be imported" in result.stderr
    assert not (tree.root / "first-line-ran").exists()


def test_failcore_dependencies_not_importable_exits_70(tree):
    """failcore's source importable but its dependencies not: exit 70, the program never runs."""
    executable = python_without_failcore()
    script = tree.write("first.py", FIRST_LINE)
    env = tree.env(FAILCORE_POLICY="agent_safe",
                   PYTHONPATH=os.pathsep.join([str(EXAMPLE), str(REPO)]))
    result = run(tree, str(script), env=env, executable=executable)
    assert result.returncode == 70, result.stderr
    assert "No module named" in result.stderr
    assert not (tree.root / "first-line-ran").exists()


# -- 3. the sitecustomize route ---------------------------------------------------------


def test_sitecustomize_guards_and_chains_without_the_pth(tree):
    """Without failcore.pth, sitecustomize_example installs the guard and then runs
    the next sitecustomize on sys.path, which already sees the guard on."""
    other = chained_sitecustomize(tree)
    executable, env = sitecustomize_route(tree, other, FAILCORE_POLICY="agent_safe")
    result = run(tree, "-c", CHILD_CODE, str(tree.key), env=env, executable=executable)
    assert result.returncode == 0, result.stderr
    assert_guarded(result, "child")
    assert report(result)["source"] == "preset agent_safe"
    assert (tree.root / "chained.marker").read_text() == "guard=True"


def test_sitecustomize_chains_when_no_policy_is_set(tree):
    """Without FAILCORE_POLICY the example does nothing but run the next sitecustomize."""
    other = chained_sitecustomize(tree)
    executable, env = sitecustomize_route(tree, other)
    result = run(tree, "-c", CHILD_CODE, str(tree.key), env=env, executable=executable)
    assert report(result) == {"mode": "off", "source": None, "read": "read " + CANARY}
    assert (tree.root / "chained.marker").read_text() == "guard=False"


def test_pth_and_sitecustomize_together_activate_once(tree):
    """With both failcore.pth and sitecustomize_example active the guard is installed
    once: the same single would deny line as with the .pth alone, and the chain still runs."""
    other = chained_sitecustomize(tree)
    script = tree.write("once.py", PROBE + textwrap.dedent(f"""\
        import failcore._startup
        print("activated:", failcore._startup._activated)
        probe({str(tree.key)!r})
    """))
    variables = {"FAILCORE_POLICY": "agent_safe", "FAILCORE_MODE": "audit"}
    alone = run(tree, str(script), env=tree.env(**variables))
    both = run(tree, str(script), env=tree.env(
        PYTHONPATH=os.pathsep.join([str(EXAMPLE), str(other)]), **variables))
    assert both.returncode == alone.returncode == 0, both.stderr
    assert both.stdout == alone.stdout
    assert "activated: True" in both.stdout
    assert report(both) == {"mode": "audit", "source": "preset agent_safe",
                            "read": "read " + CANARY}
    assert both.stderr == alone.stderr and both.stderr.count("would deny") == 1, both.stderr
    assert (tree.root / "chained.marker").read_text() == "guard=True"


# -- 4. children by every route ---------------------------------------------------------

PARENT = """\
import os, subprocess, sys
{probe}
SECRET = {secret!r}
ELSEWHERE = {elsewhere!r}
CHILD_CODE = {child_code!r}
CHILD = [sys.executable, "-c", CHILD_CODE, SECRET]


def in_fork(launch):
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        try:
            launch()
        finally:
            os._exit(99)
    os.waitpid(pid, 0)


def by_multiprocessing(method):
    import multiprocessing
    process = multiprocessing.get_context(method).Process(target=probe, args=(SECRET,))
    process.start()
    process.join(60)


if __name__ == "__main__":
{prelude}
    probe(SECRET, "parent")
{route}
    print("parent finished", flush=True)
"""

ROUTES = {
    "subprocess": "subprocess.run(CHILD)",
    "subprocess-env-empty": "subprocess.run(CHILD, env={})",
    "subprocess-env-disabling":
        'subprocess.run(CHILD, env={"FAILCORE_DISABLE": "1", "FAILCORE_POLICY": "net_safe"})',
    "subprocess-env-mode-off": 'subprocess.run(CHILD, env={"FAILCORE_MODE": "off"})',
    "environ-tampered": textwrap.dedent("""\
        os.environ["FAILCORE_DISABLE"] = "1"
        os.environ["FAILCORE_POLICY"] = "net_safe"
        os.putenv("FAILCORE_MODE", "off")
        subprocess.run(CHILD)"""),
    "subprocess-other-home": 'subprocess.run(CHILD, env={**os.environ, "HOME": ELSEWHERE})',
    "subprocess-cwd": "subprocess.run(CHILD, cwd=ELSEWHERE)",
    "python-I": 'subprocess.run([sys.executable, "-I", *CHILD[1:]])',
    "python-E": 'subprocess.run([sys.executable, "-E", *CHILD[1:]])',
    "python-s": 'subprocess.run([sys.executable, "-s", *CHILD[1:]])',
    "os.execv": "in_fork(lambda: os.execv(sys.executable, CHILD))",
    "os.execve-env-empty": "in_fork(lambda: os.execve(sys.executable, CHILD, {}))",
    "os.posix_spawn-env-empty": "os.waitpid(os.posix_spawn(sys.executable, CHILD, {}), 0)",
    "os.posix_spawnp":
        "os.waitpid(os.posix_spawnp(os.path.basename(sys.executable), CHILD, {}), 0)",
    "multiprocessing-spawn": 'by_multiprocessing("spawn")',
    "multiprocessing-forkserver": 'by_multiprocessing("forkserver")',
    "multiprocessing-fork": 'by_multiprocessing("fork")',
    "pty.spawn": "import pty; pty.spawn(CHILD)",
    "os.fork": "in_fork(lambda: probe(SECRET))",
    "grandchild": textwrap.dedent("""\
        relay = CHILD_CODE + (
            "import subprocess\\n"
            "subprocess.run([sys.executable, '-c', sys.argv[3], sys.argv[1], 'grandchild'],"
            " env={})\\n")
        subprocess.run([sys.executable, "-c", relay, SECRET, "child", CHILD_CODE], env={})"""),
}


# agent_safe denies shells: these run under the TOML policy, which allows them.
SHELL_ROUTES = {"os.system": "import shlex; os.system(shlex.join(CHILD))"}


def run_parent(tree: Tree, route: str, activation: str, policy: str = "agent_safe",
               secret: Path | None = None, **variables: str) -> subprocess.CompletedProcess[str]:
    """Write parent.py, which probes itself then runs `route` (code that starts a
    child, e.g. a ROUTES value), and run it guarded by `policy` through `activation`:
    env (FAILCORE_POLICY), run (`python -m failcore run --policy`), install
    (`failcore.install(policy)` in code) or sitecustomize (FAILCORE_POLICY, the base
    interpreter, sitecustomize_example on PYTHONPATH)."""
    prelude = f"import failcore; failcore.install({policy!r})" if activation == "install" \
        else "pass"
    script = tree.write("parent.py", PARENT.format(
        probe=PROBE, secret=str(secret or tree.key), elsewhere=str(tree.elsewhere),
        child_code=CHILD_CODE, prelude=textwrap.indent(prelude, "    "),
        route=textwrap.indent(route, "    ")))
    if activation == "env":
        return run(tree, str(script), env=tree.env(FAILCORE_POLICY=policy, **variables))
    if activation == "run":
        return run(tree, "-m", "failcore", "run", "--policy", policy, str(script),
                   env=tree.env(**variables))
    if activation == "sitecustomize":
        executable, env = sitecustomize_route(tree, FAILCORE_POLICY=policy, **variables)
        return run(tree, str(script), env=env, executable=executable)
    return run(tree, str(script), env=tree.env(**variables))


def assert_parent_and_children(result: subprocess.CompletedProcess[str],
                               grandchild: bool = False) -> None:
    """The parent ran to its end; it, its child (and grandchild) were guarded."""
    assert result.returncode == 0, result.stderr
    assert result.stdout.rstrip().endswith("parent finished"), result.stdout
    assert_guarded(result, "parent", "child", *(["grandchild"] if grandchild else []))


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("activation", ["env", "run"])
def test_children_are_guarded_by_the_parents_policy(tree, activation, route):
    """A child started by any route from a guarded parent denies what the parent denies."""
    result = run_parent(tree, ROUTES[route], activation)
    assert_parent_and_children(result, route == "grandchild")


@pytest.mark.parametrize("route", ["subprocess-env-empty", "subprocess-cwd",
                                   "os.posix_spawn-env-empty", "multiprocessing-spawn",
                                   "os.system"])
def test_children_of_install_with_a_policy_file(tree, route):
    """After install(<TOML path>) in code, children deny what the file denies, even
    from another working directory ({cwd} is the parent's)."""
    code = {**ROUTES, **SHELL_ROUTES}[route]
    result = run_parent(tree, code, "install", str(tree.policy), tree.private)
    assert_parent_and_children(result)
    assert report(result, "child")["source"] == "inline JSON policy"


@pytest.mark.parametrize("route", ["subprocess", "multiprocessing-spawn",
                                   "subprocess-env-empty", "subprocess-env-disabling"])
def test_children_of_a_sitecustomize_activated_parent(tree, route):
    """Children of a parent guarded through sitecustomize_example come up guarded
    too, also with their own env= (which gets the parent's PYTHONPATH: the route
    that starts their guard). -E/-I children of an interpreter without
    failcore.pth are out of reach (README)."""
    result = run_parent(tree, ROUTES[route], "sitecustomize")
    assert_parent_and_children(result)


# -- 5. the same policy -------------------------------------------------------------


def test_child_keeps_a_deleted_policy_files_rules(tree):
    """A child denies what the parent's TOML file denies though the file is gone."""
    route = f"os.remove({str(tree.policy)!r})\nsubprocess.run(CHILD, env={{}}, cwd=ELSEWHERE)"
    result = run_parent(tree, route, "env", str(tree.policy), tree.private)
    assert not tree.policy.exists()
    assert_parent_and_children(result)


def test_child_of_an_audit_parent_is_in_audit_mode(tree):
    """The parent's mode travels too: an audit-mode parent's child only reports."""
    result = run_parent(tree, ROUTES["subprocess-env-empty"], "env", FAILCORE_MODE="audit")
    assert result.returncode == 0, result.stderr
    for who in ("parent", "child"):
        assert report(result, who)["mode"] == "audit"
        assert report(result, who)["read"] == "read " + CANARY
    assert result.stderr.count("would deny") == 2, result.stderr


# -- 6. `failcore run` is `python` ----------------------------------------------------

SEMANTICS = """\
import json, sys
print(json.dumps({"name": __name__, "argv": sys.argv, "path0": sys.path[0], "file": __file__,
                  "package": __package__, "spec": __spec__ and __spec__.name,
                  "main": sys.modules["__main__"].__dict__ is globals()}))
sys.exit(3)
"""


@pytest.fixture(params=["python -m failcore", "console script"])
def failcore_run(request, tree):
    """Run `failcore run args` (by `python -m failcore` or the console script) in the tree."""
    command = [sys.executable, "-m", "failcore"]
    if request.param == "console script":
        script = shutil.which("failcore", path=os.path.dirname(sys.executable))
        assert script, "no failcore console script next to sys.executable"
        command = [script]

    def run_guarded(*args: str) -> subprocess.CompletedProcess[str]:
        return run(tree, *command[1:], "run", *args, executable=command[0])

    return run_guarded


@pytest.mark.parametrize("args", [
    ["agent.py", "a", "--b", "-m"],
    ["{root}/agent.py", "x"],
    ["-m", "pkg.tool", "x", "--y"],
    ["-m", "pkg", "z"],
], ids=["script", "absolute-script", "module", "package"])
def test_run_matches_python(tree, failcore_run, args):
    """__name__, sys.argv, sys.path[0], __file__, __package__, __spec__ and the exit
    code of sys.exit(3) are those `python` gives, for scripts, modules and packages."""
    for name in ("agent.py", "pkg/tool.py", "pkg/__main__.py"):
        tree.write(name, SEMANTICS)
    tree.write("pkg/__init__.py", "")
    args = [arg.replace("{root}", str(tree.root)) for arg in args]
    plain, guarded = run(tree, *args), failcore_run(*args)
    assert plain.returncode == 3, plain.stderr
    assert (guarded.returncode, guarded.stderr) == (3, plain.stderr)
    assert json.loads(guarded.stdout) == json.loads(plain.stdout)


@pytest.mark.parametrize("body", [
    'import sys\nsys.exit("bye")\n',
    'def inner():\n    raise ValueError("boom")\ninner()\n',
    "raise KeyboardInterrupt\n",
    "def (\n",
], ids=["exit-message", "uncaught-error", "keyboard-interrupt", "syntax-error"])
def test_run_ends_as_python_does(tree, failcore_run, body):
    """sys.exit("message"), an uncaught error, KeyboardInterrupt and a syntax error give
    python's stderr (no failcore frames) and exit status (1, 1, SIGINT, 1)."""
    tree.write("agent.py", body)
    plain, guarded = run(tree, "agent.py"), failcore_run("agent.py")
    assert plain.returncode in (1, -signal.SIGINT)
    assert (guarded.returncode, guarded.stdout, guarded.stderr) == (
        plain.returncode, plain.stdout, plain.stderr)
    assert "failcore" not in guarded.stderr.replace(str(tree.root), "")

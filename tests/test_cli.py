"""`failcore policy check|show` and `failcore explain connect`: output and exit codes."""

import json
import subprocess
import sys

import pytest


def cli(*args):
    return subprocess.run([sys.executable, "-m", "failcore", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("target, code, rule", [
    ("169.254.169.254", 1, "network.public"),
    ("0xa9fea9fe:80", 1, "network.public"),
    ("2852039166", 1, "network.public"),
    ("[::ffff:169.254.169.254]:80", 1, "network.public"),
    ("http://0251.0376.0251.0376/latest/meta-data/", 1, "network.public"),
    ("fd00:ec2::254", 1, "network.public"),
    ("93.184.215.14:443", 0, "network.public"),
    ("https://[2606:4700::1111]/", 0, "network.public"),
])
def test_explain_connect_addresses(target, code, rule):
    """Every spelling is judged as the address it names; exit 0 allowed, 1 denied."""
    result = cli("explain", "--json", "connect", target)
    assert result.returncode == code, result.stderr
    report = json.loads(result.stdout)
    assert report["allowed"] is (code == 0)
    assert report["decisions"][-1]["rule"] == rule


def test_explain_with_a_policy_file(tmp_path):
    """--policy applies the file's rules, here a port-specific allow."""
    policy = tmp_path / "p.toml"
    policy.write_text('version = 1\n[network]\nallow = ["10.0.0.5:8080"]\n')
    assert cli("explain", "--policy", str(policy), "connect", "10.0.0.5:8080").returncode == 0
    assert cli("explain", "--policy", str(policy), "connect", "10.0.0.5:80").returncode == 1


def test_explain_metadata_hostname_is_denied_without_resolving():
    """The metadata hostname is denied by name, before any lookup."""
    result = cli("explain", "--json", "connect", "metadata.google.internal:80")
    assert result.returncode == 1
    assert json.loads(result.stdout)["decisions"] == [{
        "action": "deny", "op": "net.resolve", "target": "metadata.google.internal",
        "rule": "network.metadata",
        "reason": "Resolving the cloud metadata hostname metadata.google.internal is blocked."}]


def test_explain_hostname_judges_every_address(lab):
    """A name with a private and a public record is allowed (the public one is used)."""
    result = cli("explain", "--json", "connect", "mixed.lab.test:80")
    assert result.returncode == 0, result.stderr
    verdicts = {d["target"]: d["action"] for d in json.loads(result.stdout)["decisions"]}
    assert verdicts == {"mixed.lab.test": "allow", "10.0.0.5:80": "deny",
                        "93.184.215.14:80": "allow"}
    assert cli("explain", "connect", "internal.lab.test").returncode == 1


def test_explain_readable_output():
    """Without --json the output is aligned text ending in a verdict line."""
    result = cli("explain", "connect", "127.1:8080")
    assert result.returncode == 1
    assert "DENY" in result.stdout and "127.0.0.1:8080" in result.stdout
    assert result.stdout.rstrip().endswith("verdict: denied")


def test_policy_check_and_show(tmp_path):
    """check validates (0 / 78 naming file and key); show prints the compiled rules."""
    good = tmp_path / "good.toml"
    good.write_text('version = 1\nextends = "net_safe_strict"\n[network]\nallow = ["10.0.0.5"]\n')
    assert cli("policy", "check", str(good)).returncode == 0
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\n[network]\nports = ["https"]\n')
    result = cli("policy", "check", str(bad))
    assert result.returncode == 78
    assert f"{bad}: network.ports:" in result.stderr
    shown = json.loads(cli("policy", "show", "--json", str(good)).stdout)
    assert shown["rules"]["network"] == {"default": "public", "unix": "deny", "ports": [80, 443],
                                         "allow": ["10.0.0.5"]}
    text = cli("policy", "show", str(good)).stdout
    assert '[network]' in text and 'allow   = ["10.0.0.5"]' in text


@pytest.mark.parametrize("args", [[], ["bogus"], ["explain", "connect"],
                                  ["explain", "connect", "host:port"], ["policy", "frobnicate", "x"]])
def test_usage_errors_exit_2(args):
    """Anything the CLI cannot parse exits 2 with the usage."""
    result = cli(*args)
    assert result.returncode == 2
    assert "usage:" in result.stdout + result.stderr


def test_explain_open_resolves_symlinks_before_judging(tmp_path):
    """`explain open` judges the real path: a link in the workspace to a secret is denied."""
    secret_dir = tmp_path / "home" / ".ssh"
    secret_dir.mkdir(parents=True)
    (secret_dir / "id_rsa").write_text("key")
    (tmp_path / "innocent.txt").symlink_to(secret_dir / "id_rsa")
    policy = tmp_path / "p.toml"
    policy.write_text(f'version = 1\n[filesystem]\ndeny = ["{secret_dir}"]\n')
    result = cli("explain", "--policy", str(policy), "--json", "open", str(tmp_path / "innocent.txt"))
    assert result.returncode == 1
    [decision] = json.loads(result.stdout)["decisions"]
    assert decision["target"] == str(secret_dir / "id_rsa")
    assert decision["rule"] == f"filesystem.deny[{secret_dir}]"
    written = cli("explain", "--policy", "fs_safe", "open", "--write", "/etc/hosts")
    assert written.returncode == 1 and "fs.write" in written.stdout


@pytest.mark.parametrize("command, code, rule", [
    (["git", "--version"], 0, "process.default"),
    (["env", "A=1", "timeout", "5", "curl", "-s", "http://x"], 1, "process.deny[curl]"),
    (["sh", "-c", "ls"], 1, "process.shell"),
])
def test_explain_exec(command, code, rule):
    """`explain exec` resolves the program and judges launchers by what they run."""
    result = cli("explain", "--policy", "proc_safe", "--json", "exec", *command)
    assert result.returncode == code, result.stderr
    assert json.loads(result.stdout)["decisions"][0]["rule"] == rule


def test_explain_asks_for_a_port_when_the_policy_decides_by_port(tmp_path):
    """Without a port, a policy with port rules has no single answer: usage error."""
    policy = tmp_path / "p.toml"
    policy.write_text('version = 1\n[network]\nallow = ["127.0.0.2:80"]\n')
    result = cli("explain", "--policy", str(policy), "connect", "127.0.0.2")
    assert result.returncode == 2 and "give 127.0.0.2:PORT" in result.stderr
    assert cli("explain", "--policy", str(policy), "connect", "http://127.0.0.2:0/").returncode == 1
    assert cli("explain", "--policy", str(policy), "connect", "http://127.0.0.2/").returncode == 0


def test_explain_operation_words_as_targets(tmp_path):
    """A file named `exec` is opened, and exec's command keeps option-like words verbatim."""
    named_exec = tmp_path / "exec"
    named_exec.write_text("")
    result = cli("explain", "--policy", "fs_safe", "--json", "open", str(named_exec))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["decisions"][0]["op"] == "fs.read"
    result = cli("explain", "--policy", "proc_safe", "--json", "exec", "env", "--json", "curl")
    assert result.returncode == 1
    assert json.loads(result.stdout)["target"] == "env --json curl"

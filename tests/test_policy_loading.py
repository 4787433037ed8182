"""Loading policies: TOML, pyproject, mappings, and errors that say where and what."""

import pytest

from failcore import Policy, PolicyError


def write(tmp_path, text, name="policy.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_toml_file_loads_with_extends(tmp_path):
    """A TOML file with extends compiles to the preset plus its own rules."""
    path = write(tmp_path, 'version = 1\nextends = "net_safe"\n[network]\n'
                           'allow = ["api.github.com", "10.20.0.0/16"]\nports = [443]\n')
    pol = Policy.from_toml(path)
    assert pol.source == path
    assert pol.config["network"]["allow"] == ["api.github.com", "10.20.0.0/16"]
    assert pol.check_connect("10.20.0.1", 443).rule == "network.allow[10.20.0.0/16]"


def test_pyproject_tool_failcore_table(tmp_path):
    """[tool.failcore] in a pyproject.toml is read like a policy file."""
    path = write(tmp_path, '[project]\nname = "x"\n[tool.failcore]\nversion = 1\n'
                           '[tool.failcore.network]\ndefault = "deny"\n', "pyproject.toml")
    assert Policy.from_toml(path).config["network"]["default"] == "deny"


def test_pyproject_without_the_table_is_an_error(tmp_path):
    """A pyproject.toml with no [tool.failcore] does not fall back to defaults."""
    path = write(tmp_path, '[project]\nname = "x"\n', "pyproject.toml")
    with pytest.raises(PolicyError, match=r"tool\.failcore"):
        Policy.from_toml(path)


def test_load_accepts_every_kind_of_spec(tmp_path):
    """Policy.load takes a Policy, a preset name, a path and a mapping."""
    pol = Policy.load("net_safe")
    assert Policy.load(pol) is pol
    assert Policy.load(write(tmp_path, "version = 1\n")).config["network"]["default"] == "public"
    assert Policy.load({"network": {"default": "deny"}}).config["network"]["default"] == "deny"


@pytest.mark.parametrize("text, key, fragment", [
    ('[network]\ndefualt = "public"\n', "network.defualt", "did you mean 'default'"),
    ('[network]\ndefault = "pubic"\n', "network.default", "did you mean 'public'"),
    ('[network]\nallow = "api.github.com"\n', "network.allow", "expected a list of strings"),
    ('[network]\nallow = ["10.0.0.1/8"]\n', "network.allow[0]", "did you mean 10.0.0.0/8"),
    ('[network]\nallow = ["10.0.0.0/33"]\n', "network.allow[0]", "10.0.0.0/33"),
    ('[network]\ndeny = ["ok.example", "0x7f.1"]\n', "network.deny[1]", "dotted decimal"),
    ('[network]\ndeny = ["127.1"]\n', "network.deny[0]", "dotted decimal"),
    ('[network]\nallow = ["a.*.example"]\n', "network.allow[0]", "wildcard"),
    ('[network]\nallow = ["host:99999"]\n', "network.allow[0]", "port"),
    ('[network]\nallow = ["evil\\u0000.com"]\n', "network.allow[0]", "control character"),
    ('[network]\nports = [443, "80"]\n', "network.ports", "port numbers"),
    ('[network]\nunix = true\n', "network.unix", "expected one of"),
    ('version = 2\n', "version", "expected 1"),
    ('extends = "agent_unsafe"\n', "extends", "did you mean 'agent_safe'"),
    ('[netwrk]\n', "netwrk", "did you mean 'network'"),
    ('network = 1\n', "network", "expected a table"),
])
def test_bad_policy_names_file_key_value_and_expectation(tmp_path, text, key, fragment):
    """Every validation error names the file, the key and what was expected."""
    path = write(tmp_path, text)
    with pytest.raises(PolicyError) as info:
        Policy.from_toml(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: ")
    assert fragment in message
    assert info.value.key == key and info.value.source == path


def test_invalid_toml_and_missing_file_are_policy_errors(tmp_path):
    """Syntax errors and unreadable files are reported, never replaced by defaults."""
    with pytest.raises(PolicyError, match="not valid TOML"):
        Policy.from_toml(write(tmp_path, "[network\n"))
    with pytest.raises(PolicyError, match="cannot read"):
        Policy.from_toml(str(tmp_path / "missing.toml"))


def test_unknown_spec_string_is_an_error():
    """A string that is neither a preset nor a file is not silently ignored."""
    with pytest.raises(PolicyError, match="not a preset"):
        Policy.load("net_unsafe")


def test_filesystem_and_process_sections_are_validated():
    """The other sections of the format are checked too, so typos fail at load."""
    with pytest.raises(PolicyError, match=r"process\.shell"):
        Policy.from_dict({"process": {"shell": "maybe"}})

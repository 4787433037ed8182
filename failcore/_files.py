"""The compiled `[filesystem]` section: which real paths each operation may touch.

Paths handed to `check` are absolute with symlinks resolved (the guard's
job); the rules themselves are expanded and resolved once, at compile time.
"""

from __future__ import annotations

import os
import re
import sys

from ._types import Action, Decision

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at interpreter start-up
    from typing import Any, Callable

ALLOW, DENY = Action.ALLOW, Action.DENY

# What each operation needs: reading, or writing (creating, deleting,
# changing metadata and linking all change what is on disk).
NEEDS = {
    "fs.read": "read", "fs.list": "read",
    "fs.write": "write", "fs.create": "write", "fs.delete": "write",
    "fs.metadata": "write", "fs.link": "write", "fs.symlink": "write", "fs.rename": "write",
    # Where a new symlink points: only somewhere this process may read.
    "fs.symlink-target": "read",
}
_GLOB_CHARS = re.compile(r"[*?\[]")


def _python_roots() -> list[str]:
    """The interpreter's own files: the prefixes (stdlib and site-packages are
    under them in every usual layout), the stdlib, the site directories, where
    imports come from (`sys.path`) and failcore itself (an editable install
    imports from its checkout without a `sys.path` entry)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.__file__), os.path.dirname(os.path.abspath(__file__))}
    site = sys.modules.get("site")  # not there under -S
    if site is not None and hasattr(site, "getsitepackages"):
        paths.update(site.getsitepackages())
    paths.update(p for p in sys.path if os.path.isabs(p) and p != "/")
    return sorted(paths)


def _temp_dir() -> str:
    """`tempfile.gettempdir()`, without importing tempfile at start-up (it costs
    milliseconds): the first writable directory of $TMPDIR, $TEMP, $TMP, /tmp,
    /var/tmp, /usr/tmp and the working directory, as tempfile looks."""
    tempfile = sys.modules.get("tempfile")
    if tempfile is not None:
        return tempfile.gettempdir()
    candidates = [os.environ.get(name) for name in ("TMPDIR", "TEMP", "TMP")]
    candidates += ["/tmp", "/var/tmp", "/usr/tmp", os.getcwd()]
    for directory in candidates:
        if directory and os.path.isdir(directory) and os.access(directory, os.W_OK | os.X_OK):
            return os.path.abspath(directory)
    return os.getcwd()


def placeholders() -> dict[str, Callable[[], list[str]]]:
    return {
        "{cwd}": lambda: [os.getcwd()],
        "{tmp}": lambda: [_temp_dir()],
        "{home}": lambda: [os.path.expanduser("~")],
        "{python}": _python_roots,
    }


def expand(entry: str) -> list[str]:
    """An entry with `~` and placeholders expanded: one or more absolute paths or globs."""
    entry = os.path.expanduser(entry)
    for name, values in placeholders().items():
        if name in entry:
            return [p for value in values() for p in expand(entry.replace(name, value))]
    if "{" in entry and "}" in entry and re.search(r"\{\w+\}", entry):
        raise ValueError(f"unknown placeholder; expected {', '.join(placeholders())}")
    if not os.path.isabs(entry) and not _GLOB_CHARS.search(entry):
        raise ValueError("write an absolute path, ~/..., a placeholder such as {cwd}, "
                         "or a glob (a relative glob matches at any depth)")
    return [entry]


def _resolve_root(path: str) -> str:
    """A root as the guard will see paths under it: normalised, symlinks resolved."""
    return os.path.realpath(path)


def _glob_regex(pattern: str) -> str:
    """`**/` any directories, `*` and `?` within one name, `[...]` a class."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                raise ValueError("unclosed [ in a glob")
            body = pattern[i + 1:end].replace("\\", "\\\\")
            out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    regex = "".join(out)
    # A pattern that does not start at / matches at any depth.
    return (regex if pattern.startswith("/") else "(?:.*/)?" + regex.removeprefix("(?:.*/)?")) \
        + "(?:/.*)?"


def _pattern(path: str) -> re.Pattern[str]:
    """A root covers itself and everything below it; a glob, what it matches."""
    if _GLOB_CHARS.search(path):
        return re.compile(_glob_regex(path), re.DOTALL)  # a newline is a character of a name
    return re.compile(re.escape(_resolve_root(path).rstrip("/")) + "(?:/.*)?", re.DOTALL)


class _Roots:
    """Roots and globs, each with the rule text that named it."""

    __slots__ = ("entries",)

    def __init__(self, entries: list[tuple[str, re.Pattern[str]]]) -> None:
        self.entries = tuple(entries)

    def match(self, path: str) -> str | None:
        """The rule text of the first entry covering `path`, or None."""
        for text, regex in self.entries:
            if regex.fullmatch(path):
                return text
        return None


class FileRules:
    """The compiled `[filesystem]` section."""

    __slots__ = ("default", "deny", "read", "write", "restricts", "_deny_roots", "_memo")

    def __init__(self, section: dict[str, Any], fail: Callable[[str, str], Exception]) -> None:
        self.default: str = section.get("default", "allow")
        compiled = {}
        # Denied places (not globs) as paths: moving or deleting a directory above
        # one would take it out from under its rule.
        deny_roots = []
        for key in ("deny", "read", "write"):
            entries = []
            for i, entry in enumerate(section.get(key, [])):
                try:
                    for path in expand(entry):
                        entries.append((entry, _pattern(path)))
                        if key == "deny" and not _GLOB_CHARS.search(path):
                            deny_roots.append((entry, _resolve_root(path).rstrip("/") + "/"))
                except (ValueError, re.error) as exc:
                    raise fail(f"filesystem.{key}[{i}]", f"{entry!r}: {exc}") from None
            compiled[key] = _Roots(entries)
        self.deny, self.read, self.write = compiled["deny"], compiled["read"], compiled["write"]
        self._deny_roots = tuple(deny_roots)
        self._memo: dict[tuple[str, str], Decision] = {}
        # Whether any file operation could be denied (read on every intercepted call).
        self.restricts = self.default == "deny" or bool(self.deny.entries)

    def check(self, op: str, path: str) -> Decision:
        """Judge `op` (see `NEEDS`) on `path`, an absolute path with symlinks resolved.

        Precedence: 1. a deny entry covering the path denies; 2. a write root
        grants every operation, a read root grants reads and listing; 3. the
        default decides what no root grants.
        """
        key = (op, path)
        decision = self._memo.get(key)
        if decision is None:
            if len(self._memo) > 8192:
                self._memo.clear()
            decision = self._memo[key] = self._judge(op, path)
        return decision

    def _judge(self, op: str, path: str) -> Decision:
        need = NEEDS[op]
        rule = self.deny.match(path)
        if rule is not None:
            return Decision(DENY, op, path, f"filesystem.deny[{rule}]",
                            f"Access to {path} is blocked by the deny rule {rule!r}.")
        if op in ("fs.rename", "fs.delete"):
            inside = path.rstrip("/") + "/"
            for rule, root in self._deny_roots:
                if root.startswith(inside):
                    return Decision(DENY, op, path, f"filesystem.deny[{rule}]",
                                    f"{path} holds {root.rstrip('/')}, which the deny rule "
                                    f"{rule!r} protects.")
        rule = self.write.match(path)
        if rule is not None:
            return Decision(ALLOW, op, path, f"filesystem.write[{rule}]",
                            f"{path} is under the writable root {rule!r}.")
        if need == "read":
            rule = self.read.match(path)
            if rule is not None:
                return Decision(ALLOW, op, path, f"filesystem.read[{rule}]",
                                f"{path} is under the readable root {rule!r}.")
        if self.default == "allow":
            return Decision(ALLOW, op, path, "filesystem.default",
                            f"The filesystem default allows {op} on {path}.")
        verb = "Reading" if need == "read" else "Changing"
        return Decision(DENY, op, path, "filesystem.default",
                        f"{verb} {path} is blocked: no {need} rule covers it and the "
                        f"filesystem default is deny.")

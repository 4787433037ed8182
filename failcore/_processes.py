"""The compiled `[process]` section: which programs may be started.

The caller supplies `locate(name) -> (path, real path)`, the PATH lookup and
`realpath` (I/O), so judging stays a pure function of what it is given.
A launcher (`env`, `timeout`, `xargs`, `busybox`, `sh -c`, ...) is judged by
what it launches; what cannot be worked out is denied.
"""

from __future__ import annotations

import os
from ._types import Action, Decision

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs milliseconds at interpreter start-up
    from typing import Any, Callable, Sequence

    Locate = Callable[[str], "tuple[str | None, str | None]"]

ALLOW, DENY = Action.ALLOW, Action.DENY

SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "csh", "tcsh", "fish", "ash",
                    "rbash", "yash", "pwsh", "busybox-sh"})
# launcher -> (options that take a value, positional arguments before the command)
LAUNCHERS: dict[str, tuple[frozenset[str], int]] = {
    "env": (frozenset({"-u", "--unset", "-C", "--chdir", "-S", "--split-string"}), 0),
    "nohup": (frozenset(), 0),
    "timeout": (frozenset({"-s", "--signal", "-k", "--kill-after"}), 1),
    "nice": (frozenset({"-n", "--adjustment"}), 0),
    "ionice": (frozenset({"-c", "--class", "-n", "--classdata", "-p", "-P", "-u"}), 0),
    "stdbuf": (frozenset({"-i", "-o", "-e", "--input", "--output", "--error"}), 0),
    "setsid": (frozenset(), 0),
    "xargs": (frozenset({"-a", "--arg-file", "-d", "--delimiter", "-E", "-e", "-I", "-i",
                         "-L", "-l", "-n", "--max-args", "-P", "--max-procs", "-s",
                         "--max-chars", "--process-slot-var"}), 0),
    "sudo": (frozenset({"-u", "--user", "-g", "--group", "-C", "--close-from", "-D",
                        "--chdir", "-h", "--host", "-p", "--prompt", "-r", "--role",
                        "-t", "--type", "-U", "--other-user", "-T", "--command-timeout"}), 0),
    "doas": (frozenset({"-u", "-C"}), 0),
    "chrt": (frozenset(), 1),
    "taskset": (frozenset({"-p", "--pid"}), 1),
    "time": (frozenset({"-f", "--format", "-o", "--output"}), 0),
    "strace": (frozenset({"-e", "-o", "-p", "-s", "-u", "-a", "-b", "-I", "-O", "-S", "-E",
                          "-P", "-X"}), 0),
    "ltrace": (frozenset({"-e", "-o", "-p", "-s", "-u", "-a", "-n", "-l", "-F"}), 0),
    "chroot": (frozenset({"--userspec", "--groups"}), 1),
    "unshare": (frozenset({"--propagation", "--setgroups", "-S", "--setuid", "-G",
                           "--setgid", "-R", "--root", "-w", "--wd"}), 0),
    "nsenter": (frozenset({"-t", "--target", "-S", "--setuid", "-G", "--setgid",
                           "-r", "--root", "-w", "--wd"}), 0),
    "flock": (frozenset({"-w", "--timeout", "-E", "--conflict-exit-code"}), 1),
    "runuser": (frozenset({"-u", "--user", "-g", "--group", "-G"}), 0),
    "unbuffer": (frozenset(), 0),
    "catchsegv": (frozenset(), 0),
    "firejail": (frozenset(), 0),
}
# Launchers that hand the rest to a shell instead of executing it.
_SHELL_OPTIONS = {"flock": ("-c", "--command"), "su": ("-c", "--command"),
                  "script": ("-c", "--command"), "watch": ()}
_SHELL_SYNTAX = ("$(", "`", "<(", ">(", "${")
_SEPARATORS = frozenset({";", "&", "&&", "|", "||", "(", ")", "\n", "|&", ";;"})


class ProcessRules:
    """The compiled `[process]` section."""

    __slots__ = ("default", "shell", "allow_names", "deny_names", "allow_paths", "deny_paths")

    def __init__(self, section: dict[str, Any], fail: Callable[[str, str], Exception]) -> None:
        self.default: str = section.get("default", "allow")
        self.shell: str = section.get("shell", "allow")
        for key in ("allow", "deny"):
            names, paths = [], []
            for i, entry in enumerate(section.get(key, [])):
                if not entry or entry != entry.strip() or "\0" in entry:
                    raise fail(f"process.{key}[{i}]",
                               f"{entry!r}: expected a program name or an absolute path")
                if "/" in entry:
                    path = os.path.expanduser(entry)
                    if not os.path.isabs(path):
                        raise fail(f"process.{key}[{i}]",
                                   f"{entry!r}: a path must be absolute (or ~/...)")
                    paths.append((entry, os.path.realpath(path)))
                else:
                    names.append(entry)
            setattr(self, f"{key}_names", frozenset(names))
            setattr(self, f"{key}_paths", tuple(paths))

    @property
    def restricts(self) -> bool:
        return self.default == "deny" or self.shell == "deny" or bool(
            self.deny_names or self.deny_paths)

    def check(self, argv: Sequence[str], locate: Locate, *, shell: bool = False,
              op: str = "proc.exec") -> Decision:
        """Judge starting `argv` (`shell=True`: `argv[0]` is a shell command line).

        Precedence: 1. a shell when `shell = "deny"`; 2. a deny entry matching
        the program's name, its PATH location or its real path; 3. an allow
        entry; 4. the default. A launcher is judged by what it launches.
        """
        if shell:
            return self._check_shell_line(argv[0] if argv else "", locate, op, depth=0)
        return self._check(list(argv), locate, op, depth=0)

    def _check(self, argv: list[str], locate: Locate, op: str, depth: int) -> Decision:
        if not argv or not argv[0]:
            return Decision(DENY, op, "(nothing)", "process.invalid", "No program was named.")
        target = " ".join(argv)[:200]
        if depth > 8:
            return Decision(DENY, op, target, "process.launcher",
                            "Too many launchers inside each other to judge; it was blocked.")
        requested = argv[0]
        found, real = locate(requested)
        names = {os.path.basename(requested), os.path.basename(found or ""),
                 os.path.basename(real or "")} - {""}
        if real and os.path.basename(real) == "busybox" and os.path.basename(requested) != "busybox":
            names.add(os.path.basename(requested))  # a busybox applet by its link name
        decision = self._judge_program(names, real, target, op)
        if decision is not None:
            return decision
        if "busybox" in (os.path.basename(requested), os.path.basename(found or "")):
            return self._check(argv[1:], locate, op, depth + 1) if len(argv) > 1 else \
                Decision(DENY, op, target, "process.launcher", "busybox with no applet.")
        launched = self._launched(names & (set(LAUNCHERS) | set(_SHELL_OPTIONS)), argv)
        if launched is not None:
            kind, rest = launched
            if kind == "shell":
                return self._check_shell_line(rest[0], locate, op, depth + 1)
            if kind == "none":
                return Decision(DENY, op, target, "process.launcher",
                                f"failcore cannot tell what {argv[0]} would run; it was blocked.")
            return self._check(rest, locate, op, depth + 1)
        if names & SHELLS:
            line = _shell_command(argv)
            if line is not None:
                return self._check_shell_line(line, locate, op, depth + 1)
        if found is None:
            return Decision(DENY if self.default == "deny" else ALLOW, op, target,
                            "process.default", f"{requested} was not found; the process "
                            f"default is {self.default}.")
        return self._allowed(names, real, target, op)

    def _judge_program(self, names: set[str], real: str | None, target: str,
                       op: str) -> Decision | None:
        """Shell and deny rules: the ones that stop a program whatever it runs."""
        if self.shell == "deny" and names & SHELLS:
            return Decision(DENY, op, target, "process.shell",
                            f"Starting a shell ({sorted(names & SHELLS)[0]}) is blocked by "
                            f"shell = \"deny\".")
        rule = _match(names, real, self.deny_names, self.deny_paths)
        if rule is not None:
            return Decision(DENY, op, target, f"process.deny[{rule}]",
                            f"Starting {target.split(' ')[0]} is blocked by the deny rule {rule!r}.")
        return None

    def _allowed(self, names: set[str], real: str | None, target: str, op: str) -> Decision:
        rule = _match(names, real, self.allow_names, self.allow_paths)
        if rule is not None:
            return Decision(ALLOW, op, target, f"process.allow[{rule}]",
                            f"Starting {target.split(' ')[0]} is allowed by the rule {rule!r}.")
        if self.default == "allow":
            return Decision(ALLOW, op, target, "process.default",
                            "The process default allows it.")
        return Decision(DENY, op, target, "process.default",
                        f"Starting {target.split(' ')[0]} is blocked: no allow rule matches "
                        f"and the process default is deny.")

    def _launched(self, launchers: set[str], argv: list[str]) -> tuple[str, list[str]] | None:
        """What a launcher runs: ("argv", rest), ("shell", [line]), ("none", []) or None."""
        if not launchers:
            return None
        name = sorted(launchers)[0]
        args = argv[1:]
        if name in _SHELL_OPTIONS:
            if name == "watch":
                line = " ".join(a for a in args if not a.startswith("-"))
                return ("shell", [line]) if line else ("none", [])
            for i, arg in enumerate(args):
                if arg in _SHELL_OPTIONS[name] and i + 1 < len(args):
                    return "shell", [args[i + 1]]
            if name in ("su", "script"):
                return "none", []  # an interactive shell
        with_value, positional = LAUNCHERS.get(name, (frozenset(), 0))
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                i += 1
                break
            if name == "env" and arg in ("-S", "--split-string") and i + 1 < len(args):
                import shlex

                return "argv", shlex.split(args[i + 1]) + args[i + 2:]
            if name == "env" and "=" in arg and not arg.startswith("-"):
                i += 1
                continue
            if arg.startswith("-") and arg != "-":
                i += 2 if arg in with_value else 1
                continue
            break
        i += positional
        rest = args[i:]
        if name == "xargs" and not rest:
            return None  # xargs alone runs echo
        return ("argv", rest) if rest else ("none", [])

    def _check_shell_line(self, line: str, locate: Locate, op: str, depth: int) -> Decision:
        """Judge each simple command of a shell line; what cannot be parsed is denied."""
        target = line[:200]
        if self.shell == "deny":
            return Decision(DENY, op, target, "process.shell",
                            "Running a shell command is blocked by shell = \"deny\".")
        if any(s in line for s in _SHELL_SYNTAX):
            if self.restricts:
                return Decision(DENY, op, target, "process.shell",
                                "failcore cannot judge a shell line with substitutions; "
                                "it was blocked.")
            return self._allowed(set(), None, target, op)
        try:
            import shlex

            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            tokens = list(lexer)
        except ValueError as exc:
            return Decision(DENY, op, target, "process.shell",
                            f"failcore cannot parse this shell line ({exc}); it was blocked.")
        commands, current = [], []
        for token in tokens:
            if token in _SEPARATORS or set(token) <= set(";&|()\n"):
                if current:
                    commands.append(current)
                current = []
            else:
                current.append(token)
        if current:
            commands.append(current)
        verdict = None
        for words in commands:
            words = _strip_redirections(words)
            while words and "=" in words[0] and not words[0].startswith("="):
                words = words[1:]  # VAR=value before the command
            if not words:
                continue
            decision = self._check(words, locate, op, depth + 1)
            if not decision.allowed:
                return decision
            verdict = verdict or decision
        return verdict or Decision(ALLOW, op, target, "process.default", "An empty shell line.")


def _strip_redirections(words: list[str]) -> list[str]:
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
            continue
        if word.strip("0123456789&") in ("<", ">", ">>", "<<", "<<<", ">&", "<&", ">|"):
            skip = True
            continue
        out.append(word)
    return out


def _shell_command(argv: list[str]) -> str | None:
    """The command line a shell runs with -c (including -xc, -ec...), else None."""
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith("-") and not arg.startswith("--") and "c" in arg[1:]:
            return argv[i + 1] if i + 1 < len(argv) else ""
    return None


def _match(names: set[str], real: str | None, by_name: frozenset[str],
           by_path: tuple[tuple[str, str], ...]) -> str | None:
    for name in sorted(names & by_name):
        return name
    if real:
        for text, path in by_path:
            if real == path or real.startswith(path.rstrip("/") + "/"):
                return text
    return None


def locate(name: str, path: str | None = None,
           full: bool = True) -> tuple[str | None, str | None]:
    """Where `name` would be found (`PATH`, or relative to the working directory
    when it has a slash) and what it really is: the I/O half of judging a program.

    With `full`, the real path (`realpath`); without, only the final symlink
    chain is followed, which is all that matching rules by name needs.
    """
    import shutil

    found = (name if os.path.exists(name) else None) if "/" in name else shutil.which(name, path=path)
    if found is None:
        return None, None
    return found, os.path.realpath(found) if full else _final_target(found)


def _final_target(path: str) -> str:
    for _ in range(40):  # the kernel's own limit on symlink hops
        try:
            link = os.readlink(path)
        except OSError:  # not a symlink
            return path
        path = os.path.join(os.path.dirname(path), link)
    return path

"""What is in force inside one tool call: the session's policy, the tool's
declared side effects, and whatever was in force outside the call.

The guard asks `_guard._current()` for the state in force; inside a call
that is the call's `_Active`, whose `policy` is a `CallPolicy`. It answers
the same questions as a `Policy` and judges each one three times, stopping
at the first deny: the session's policy, the tool's metadata (an operation
outside the declared side effects is decided by its `default_policy`), then
the state outside the call (the global guard, or the call this one was made
from). A deny of an outer guard in audit mode is reported there and does not
stop the call.
"""

from __future__ import annotations

import os
import sys

from . import _guard as core
from ._tools import DefaultPolicy, SideEffect
from ._types import Action, Decision, Mode

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

    from ._policy import Policy
    from ._tools import ToolMetadata

_READS = ("fs.read", "fs.list")
_FROZEN_IMPORT = ("<frozen importlib._bootstrap", "<frozen zipimport")


def effect_of(op: str) -> SideEffect:
    """The side-effect category an operation belongs to."""
    if op.startswith("net."):
        return SideEffect.NETWORK
    if op.startswith("proc."):
        return SideEffect.PROCESS
    return SideEffect.FS_READ if op in _READS else SideEffect.FS_WRITE


_OWN_FILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")


def by_import_system() -> bool:
    """Is the operation the import system's own (or linecache's, reading source
    for a traceback): is the first frame outside failcore theirs? Their reads
    and bytecode writes are the interpreter's; what a module's top-level code
    does while it is imported is not."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_OWN_FILES):
        frame = frame.f_back
    if frame is None:
        return False
    name = frame.f_code.co_filename
    return name.startswith(_FROZEN_IMPORT) or name.endswith(("/linecache.py", "/tokenize.py"))


_interpreter_roots: tuple[str, ...] | None = None


def _under_interpreter(path: str) -> bool:
    """Under the interpreter's prefixes, stdlib or site-packages (not the
    project's own directories, which are on sys.path too)."""
    global _interpreter_roots
    if _interpreter_roots is None:
        roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                 os.path.dirname(os.__file__)}
        site = sys.modules.get("site")
        if site is not None and hasattr(site, "getsitepackages"):
            roots.update(site.getsitepackages())
        _interpreter_roots = tuple(os.path.join(os.path.realpath(r), "") for r in roots if r)
    return (path + "/").startswith(_interpreter_roots)


def judge_declared(decision: Decision, metadata: ToolMetadata, tool: str,
                   approve: Callable[[Decision], bool], refused: str) -> Decision:
    """An allowed operation, judged against `tool`'s declared side effects: one
    it did not declare is denied (`tool.undeclared`), unless its default policy
    is ALLOW, or it is ASK and `approve(the deny)` says yes (`tool.approved`;
    `refused` says why not). Reads under the interpreter's own places are never
    undeclared. Used live by a call, and by `failcore trace check` with the
    recorded answers."""
    effect = effect_of(decision.op)
    if effect & metadata.side_effect or metadata.default_policy is DefaultPolicy.ALLOW:
        return decision
    if effect is SideEffect.FS_READ and _under_interpreter(decision.target):
        return decision
    what = f"{effect.name.lower()} ({decision.op} {decision.target})"
    ask = metadata.default_policy is DefaultPolicy.ASK
    denied = Decision(Action.DENY, decision.op, decision.target, "tool.undeclared",
                      f"The tool {tool} did not declare this side effect: {what}; "
                      f"{refused if ask else 'its default policy is block'}.")
    if ask and approve(denied):
        return Decision(Action.ALLOW, decision.op, decision.target, "tool.approved",
                        f"The approver allowed {tool} an undeclared side effect: {what}.")
    return denied


class ApprovalRequest:
    """What a session's `approver` is asked about: an operation `tool` did not
    declare. `decision` is the deny it gets unless the approver returns True."""

    __slots__ = ("tool", "metadata", "op", "target", "decision")

    def __init__(self, tool: str, metadata: ToolMetadata, decision: Decision) -> None:
        self.tool, self.metadata, self.decision = tool, metadata, decision
        self.op, self.target = decision.op, decision.target

    def __repr__(self) -> str:
        return f"ApprovalRequest(tool={self.tool!r}, op={self.op!r}, target={self.target!r})"


class Call:
    """One running tool call: what it may do, and the first denial inside it."""

    __slots__ = ("policy", "metadata", "tool", "call_id", "parent", "trace", "approver",
                 "denied", "_approved", "_state", "_outer_seen", "trace_fields", "sent")

    def __init__(self, policy: Policy | None, metadata: ToolMetadata, tool: str, call_id: str,
                 parent: Call | None, trace: Any, approver: Callable[..., Any] | None) -> None:
        self.policy, self.metadata, self.tool, self.call_id = policy, metadata, tool, call_id
        self.parent, self.trace, self.approver = parent, trace, approver
        self.denied: Decision | None = None
        self.sent: set[int] = set()  # sockets whose sends were judged in this call
        self._approved: dict[tuple[str, str], bool] | None = None  # made when first asked
        self._state: core._Active | None = None
        self._outer_seen: Any = None
        # What every trace event of the call carries (only wanted with a trace).
        self.trace_fields = {"call_id": call_id, "tool": tool,
                             "risk_level": metadata.risk_level.value} if trace else None

    def state(self, global_state: core._Active | None) -> core._Active:
        """The state in force in this call, given the global one (made again
        only when a global install() swapped it meanwhile)."""
        outer = self.parent.state(global_state) if self.parent is not None else global_state
        if self.policy is None:  # FAILCORE_DISABLE=1: the session judges nothing
            return outer
        if self._state is None or self._outer_seen is not outer:
            state = core._Active(CallPolicy(self, outer), Mode.ENFORCE, self.trace)
            # Decisions here depend on who asks (the import system's reads are
            # the interpreter's own): nothing is remembered between operations.
            state.decided, state.opened = _NoMemo(), _NoMemo()
            state.call = self
            self._state, self._outer_seen = state, outer
        return self._state

    def deny(self, decision: Decision) -> None:
        """Remember the first enforced denial, here and in the calls around this one."""
        call: Call | None = self
        while call is not None:
            if call.denied is None:
                call.denied = decision
            call = call.parent

    def declared(self, decision: Decision) -> Decision:
        """An allowed operation, judged against the tool's declared side effects
        (the import system's own file operations are the interpreter's)."""
        if effect_of(decision.op) & SideEffect.FS and by_import_system():
            return decision
        refused = ("the approver did not allow it" if self.approver is not None
                   else "no approver was given")
        return judge_declared(decision, self.metadata, self.tool, self._approve, refused)

    def _approve(self, decision: Decision) -> bool:
        """Ask the approver once per operation and target; an error is a no.
        It runs outside this call, under what is in force around it."""
        key = (decision.op, decision.target)
        if self._approved is None:
            self._approved = {}
        if key not in self._approved:
            answer = False
            if self.approver is not None:
                token = core._call_scope.set(self.parent)
                try:
                    request = ApprovalRequest(self.tool, self.metadata, decision)
                    answer = self.approver(request) is True
                except Exception:
                    answer = False
                finally:
                    core._call_scope.reset(token)
            self._approved[key] = answer
        return self._approved[key]


class _NoMemo(dict):
    """A memo that remembers nothing."""

    def __setitem__(self, key: Any, value: Any) -> None:
        pass


class CallPolicy:
    """A `Policy`'s questions, answered for one call (see the module doc)."""

    __slots__ = ("call", "inner", "outer", "network", "filesystem", "process")

    def __init__(self, call: Call, outer: core._Active | None) -> None:
        self.call, self.inner, self.outer = call, call.policy, outer
        outer_policy = outer.policy if outer is not None else None
        unix = self.inner.network.unix
        if outer_policy is not None and outer_policy.network.unix == "deny-system":
            unix = "deny-system"  # the stricter handling: the socket's inode is pinned
        self.network = _View(unix=unix, agent_socket=self.inner.network.agent_socket)
        undeclared_blocked = call.metadata.default_policy is not DefaultPolicy.ALLOW
        declared = call.metadata.side_effect

        def restricts(section: str, effects: SideEffect) -> bool:
            return (getattr(self.inner, section).restricts
                    or (outer_policy is not None and getattr(outer_policy, section).restricts)
                    or (undeclared_blocked and (effects & declared) != effects))

        self.filesystem = _View(restricts=restricts("filesystem", SideEffect.FS),
                                check=lambda op, path: self._judge(
                                    lambda policy: policy.filesystem.check(op, path)))
        self.process = _View(
            restricts=restricts("process", SideEffect.PROCESS),
            allow_paths=(*self.inner.process.allow_paths,
                         *(outer_policy.process.allow_paths if outer_policy else ())),
            deny_paths=(*self.inner.process.deny_paths,
                        *(outer_policy.process.deny_paths if outer_policy else ())))

    restricts = True

    def _judge(self, ask: Callable[[Any], Decision]) -> Decision:
        """`ask(policy)` of the session's policy, the tool's metadata, then the outside."""
        decision = ask(self.inner)
        if decision.action is Action.ALLOW:
            decision = self.call.declared(decision)
        outer = self.outer
        if decision.action is Action.ALLOW and outer is not None:
            verdict = ask(outer.policy)
            if verdict.action is not Action.ALLOW:
                if outer.mode is Mode.ENFORCE:
                    return verdict
                core._report(outer, verdict)  # a would-deny of the guard outside
        return decision

    def check_ip(self, *args: Any, **kwargs: Any) -> Decision:
        return self._judge(lambda policy: policy.check_ip(*args, **kwargs))

    def check_resolve(self, *args: Any, **kwargs: Any) -> Decision:
        return self._judge(lambda policy: policy.check_resolve(*args, **kwargs))

    def check_unix(self, *args: Any, **kwargs: Any) -> Decision:
        return self._judge(lambda policy: policy.check_unix(*args, **kwargs))

    def check_family(self, *args: Any, **kwargs: Any) -> Decision:
        return self._judge(lambda policy: policy.check_family(*args, **kwargs))

    def check_exec(self, *args: Any, **kwargs: Any) -> Decision:
        return self._judge(lambda policy: policy.check_exec(*args, **kwargs))


class _View:
    """A section of a CallPolicy (`network`, `filesystem`, `process`)."""

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)

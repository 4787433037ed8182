"""failcore's activation through `sitecustomize`, for interpreters where the
`failcore.pth` start-up hook is not installed (failcore in another virtual
environment, a `pip install --target` directory, a read-only image).

Put this directory first on PYTHONPATH:

    PYTHONPATH=/path/to/sitecustomize_example FAILCORE_POLICY=agent_safe python agent.py

With FAILCORE_POLICY set, the guard is installed before anything else runs,
and if failcore cannot be imported or the policy is bad the program does not
start (exit 78 for a bad configuration, 70 when failcore cannot start). Then
the next `sitecustomize` further down `sys.path` (Debian and Ubuntu ship one)
runs as it would have without this file.
"""

import os
import sys


def _activate() -> None:
    if not os.environ.get("FAILCORE_POLICY"):
        return
    try:
        from failcore._startup import activate
    except BaseException as exc:  # fail closed: never run unguarded by mistake
        sys.stderr.write(f"failcore: FAILCORE_POLICY is set, but failcore cannot be "
                         f"imported ({type(exc).__name__}: {exc}); the program was not "
                         f"started.\n")
        sys.stderr.flush()
        os._exit(70)
    activate()  # once per process, even if the .pth hook ran it already


def _chain() -> None:
    """Run the `sitecustomize` this one hides: the next one on sys.path."""
    from importlib.machinery import PathFinder
    from importlib.util import module_from_spec

    here = os.path.dirname(os.path.abspath(__file__))
    where = [os.path.abspath(entry or os.curdir) for entry in sys.path]
    after = where.index(here) + 1 if here in where else 0
    spec = PathFinder.find_spec("sitecustomize",
                                [p for p in where[after:] if p != here])
    if spec is None or spec.loader is None:
        return
    module = module_from_spec(spec)
    sys.modules["sitecustomize"] = module  # what `import sitecustomize` finds from now on
    spec.loader.exec_module(module)


_activate()
_chain()

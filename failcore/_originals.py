"""The true stdlib entry points, saved before failcore patches them.

This module imports nothing of failcore's. `os_open` is saved at import;
`socket`'s functions when failcore first sees that module (it patches
`socket` when it is imported, not before: see `_guard._ImportGate`).
failcore's own I/O goes through these names and so never re-enters the
guard.
"""

import posix as _posix
import sys as _sys

os_open = _posix.open
getaddrinfo = gethostbyname = gethostbyname_ex = create_connection = socket_class = None


def save_socket(module) -> None:
    """Keep `module`'s (socket's) functions and class, the first time only."""
    global getaddrinfo, gethostbyname, gethostbyname_ex, create_connection, socket_class
    if socket_class is None:
        getaddrinfo, gethostbyname = module.getaddrinfo, module.gethostbyname
        gethostbyname_ex, create_connection = module.gethostbyname_ex, module.create_connection
        socket_class = module.socket


if "socket" in _sys.modules:
    save_socket(_sys.modules["socket"])

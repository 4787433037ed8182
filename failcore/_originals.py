"""The true stdlib entry points, saved before anything can patch them.

This module imports nothing of failcore's, so importing it first is enough to
hold the real functions. failcore's own I/O goes through these names and so
never re-enters the guard.
"""

import posix as _posix
import socket as _socket_module

getaddrinfo = _socket_module.getaddrinfo
gethostbyname = _socket_module.gethostbyname
gethostbyname_ex = _socket_module.gethostbyname_ex
create_connection = _socket_module.create_connection
socket_class = _socket_module.socket
os_open = _posix.open

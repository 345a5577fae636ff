"""TCP connections made from inside an instance's network namespace.

Port forwards and SSH forwards (`ssh -L`) must reach what the instance itself reaches, never the
host's own loopback services: the socket is created in the namespace of the instance's pid (a
thread switches into it with setns(2), makes the socket, and switches back; a socket stays in the
namespace it was created in), then connected from the agent's event loop. Needs CAP_SYS_ADMIN,
so a root agent; for a container, the namespace of its init process.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import threading

CLONE_NEWNET = 0x40000000
_switch = threading.Lock()  # one switch at a time; the thread is always back in its own namespace after


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in_netns(pid: int, family: int = socket.AF_INET) -> socket.socket:
    """A new TCP socket in the network namespace of `pid`."""
    with _switch:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
            try:
                _setns(target)
                try:
                    sock = socket.socket(family, socket.SOCK_STREAM)
                finally:
                    _setns(own)  # never leave this thread in the instance's namespace
            finally:
                os.close(target)
        finally:
            os.close(own)
    sock.setblocking(False)
    return sock


async def open_connection_in(pid: int, host: str, port: int, *, timeout: float = 10
                             ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to host:port as seen from inside the namespace of `pid` (its `127.0.0.1` is its own)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"{host} does not resolve")
    family, _type, _proto, _name, address = infos[0]
    sock = await asyncio.to_thread(socket_in_netns, pid, family)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, address), timeout=timeout)
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)

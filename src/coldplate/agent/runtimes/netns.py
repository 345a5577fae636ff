"""TCP connections made from inside an instance's network namespace, and the published ports built on them.

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
from collections.abc import Awaitable, Callable

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


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def forward(external: int, connect: Callable[[], Awaitable[Streams]]) -> asyncio.Server:
    """A published port: 127.0.0.1:`external` on the host, each connection piped to `connect()`
    (the instance's own port, dialled from inside its network). OSError where the port is taken."""
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await connect()
        except (OSError, TimeoutError):
            client_w.close()
            return
        await asyncio.gather(pipe(client_r, upstream_w), pipe(upstream_r, client_w))

    return await asyncio.start_server(handle, "127.0.0.1", external, reuse_address=True)

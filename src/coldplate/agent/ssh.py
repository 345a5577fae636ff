"""An SSH endpoint per instance, on its allocated SSH port, served by the agent with asyncssh.

It accepts the instance's public keys (any user name) and runs the session's command, or a login
shell, inside the instance through the runtime (`docker exec`, or a process in the instance's
sandbox), with a PTY when the client asks for one, and passes the exit status back.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pty
import struct
import termios
from pathlib import Path
from typing import Any

import asyncssh

from coldplate.agent.runtimes.base import Runtime, Shell
from coldplate.files import tighten, write_private

log = logging.getLogger(__name__)


def host_key(data_dir: Path) -> Any:
    """The agent's SSH host key, made once and kept, so clients see the same host each time."""
    path = data_dir / "ssh_host_ed25519_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        write_private(path, asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    tighten(path)
    return asyncssh.read_private_key(str(path))


class SshGateway:
    def __init__(self, *, runtime: Runtime, data_dir: Path, bind: str = "127.0.0.1") -> None:
        self.runtime = runtime
        self.key = host_key(data_dir)
        self.bind = bind
        self.servers: dict[str, asyncssh.SSHAcceptor] = {}

    async def open(self, instance_id: str, port: int | None, keys: list[str]) -> None:
        if port is None or instance_id in self.servers:
            return
        authorized = asyncssh.import_authorized_keys("\n".join(keys)) if keys else None

        async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
            await self._session(instance_id, process)

        self.servers[instance_id] = await asyncssh.create_server(
            asyncssh.SSHServer, self.bind, port, server_host_keys=[self.key], authorized_client_keys=authorized,
            process_factory=handle, encoding=None, allow_scp=False, reuse_address=True,
            password_auth=False, kbdint_auth=False)
        log.info("ssh endpoint open", extra={"instance_id": instance_id, "port": port})

    async def close(self, instance_id: str) -> None:
        server = self.servers.pop(instance_id, None)
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def close_all(self) -> None:
        for instance_id in list(self.servers):
            await self.close(instance_id)

    async def _session(self, instance_id: str, process: asyncssh.SSHServerProcess[bytes]) -> None:
        tty = process.get_terminal_type() is not None
        shell = self.runtime.shell(instance_id, process.command, tty=tty)
        if shell is None:
            process.stderr.write(b"this instance is not running\n")
            process.exit(1)
            return
        try:
            code = await (self._with_pty(process, shell) if tty else self._with_pipes(process, shell))
        except OSError as exc:
            process.stderr.write(f"could not open a session: {exc}\n".encode())
            code = 1
        process.exit(code if code >= 0 else 128 - code)

    @staticmethod
    async def _with_pipes(process: asyncssh.SSHServerProcess[bytes], shell: Shell) -> int:
        child = await asyncio.create_subprocess_exec(
            *shell.argv, env=shell.env, cwd=shell.cwd, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        await process.redirect(stdin=child.stdin, stdout=child.stdout, stderr=child.stderr)
        code = await child.wait()
        with contextlib.suppress(Exception):
            await process.stdout.drain()
        return code

    @staticmethod
    async def _with_pty(process: asyncssh.SSHServerProcess[bytes], shell: Shell) -> int:
        """A PTY pumped by hand: the session ends when the child exits and its output is read."""
        master, slave = pty.openpty()
        set_size(slave, process.get_terminal_size())
        try:
            child = await asyncio.create_subprocess_exec(
                *shell.argv, env=shell.env, cwd=shell.cwd, stdin=slave, stdout=slave, stderr=slave,
                start_new_session=True)
        finally:
            os.close(slave)
        loop = asyncio.get_running_loop()
        drained = asyncio.Event()

        def readable() -> None:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every slave end is closed
                data = b""
            if data:
                process.stdout.write(data)
            else:
                loop.remove_reader(master)
                drained.set()

        async def feed() -> None:
            while True:
                try:
                    data = await process.stdin.read(65536)
                except asyncssh.TerminalSizeChanged as change:
                    set_size(master, (change.width, change.height, change.pixwidth, change.pixheight))
                    continue
                if not data:
                    return
                os.write(master, data)

        loop.add_reader(master, readable)
        feeder = asyncio.create_task(feed())
        try:
            code = await child.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drained.wait(), timeout=2)
            with contextlib.suppress(Exception):
                await process.stdout.drain()
            return code
        finally:
            feeder.cancel()
            loop.remove_reader(master)
            os.close(master)


def set_size(fd: int, size: tuple[int, int, int, int]) -> None:
    width, height, pixwidth, pixheight = size
    if width and height:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, pixwidth, pixheight))

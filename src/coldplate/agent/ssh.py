"""An SSH endpoint per instance, on its allocated SSH port, served by the agent with asyncssh.

It accepts the instance's public keys (any user name) and runs the session's command, or a login
shell, inside the instance through the runtime (`docker exec`, or a process entering the instance's
sandbox), with a PTY when the client asks for one, and passes the exit status back. The `sftp`
subsystem (and so `scp`, which speaks SFTP) runs an OpenSSH `sftp-server` inside the instance, as
the workload's user, never in the agent. Forwards (`ssh -L`, direct-tcpip) are connected by the
runtime from inside the instance's own network, so they reach what the instance reaches and never
the host's loopback services. The port is bound before the instance is reported `ready`; a port
already taken fails the start (`SshPortTaken`) rather than sending users to another program.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import logging
import os
import pty
import struct
import termios
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.constants import EXTENDED_DATA_STDERR
from asyncssh.stream import SSHReader, SSHWriter

from coldplate.agent.runtimes.base import Runtime, RuntimeFailure, Shell
from coldplate.files import tighten, write_private

log = logging.getLogger(__name__)
# sftp-server where images and hosts keep it; /.coldplate/sftp is the host's copy a container gets
SFTP_SERVER = ("for s in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server /usr/lib/sftp-server "
               "/usr/libexec/sftp-server; do [ -x $s ] && exec $s; done; "
               "[ -x /.coldplate/sftp/ld.so ] && exec /.coldplate/sftp/ld.so --library-path /.coldplate/sftp/lib "
               "/.coldplate/sftp/sftp-server; echo 'this instance has no sftp-server' >&2; exit 127")


class SshPortTaken(RuntimeFailure):
    """The instance's SSH port is in use by another program on the host."""


def host_key(data_dir: Path) -> Any:
    """The agent's SSH host key, made once and kept, so clients see the same host each time."""
    path = data_dir / "ssh_host_ed25519_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        write_private(path, asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    tighten(path)
    return asyncssh.read_private_key(str(path))


class _Session(asyncssh.SSHServerProcess[bytes]):
    """A session that also accepts the `sftp` subsystem and hands it to the process factory."""

    def subsystem_requested(self, subsystem: str) -> bool:
        return subsystem == "sftp"

    def session_started(self) -> None:
        """asyncssh would serve `sftp` itself, in the agent; this one starts our process for it too."""
        if self._chan.get_subsystem() != "sftp":
            super().session_started()
            return
        stdin = SSHReader[bytes](self, self._chan)
        assert self._session_factory is not None  # our process factory, always given
        handler = self._session_factory(stdin, SSHWriter[bytes](self, self._chan),
                                        SSHWriter[bytes](self, self._chan, EXTENDED_DATA_STDERR))
        if inspect.isawaitable(handler):
            self._conn.create_task(handler, stdin.logger)  # type: ignore[union-attr]


class _Forward(asyncssh.SSHTCPSession[bytes]):
    """One `ssh -L` connection, piped to a connection the runtime made inside the instance."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.pump: asyncio.Task[None] | None = None

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self.pump = asyncio.ensure_future(self._pump(chan))

    async def _pump(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        try:
            while data := await self.reader.read(65536):
                chan.write(data)
            chan.write_eof()
        except (ConnectionError, OSError):
            pass
        chan.close()  # the instance's side has ended: so has the forward

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.writer.write(data)

    def eof_received(self) -> bool:
        with contextlib.suppress(OSError):
            self.writer.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pump is not None:
            self.pump.cancel()
        self.writer.close()


class _Server(asyncssh.SSHServer):
    def __init__(self, gateway: SshGateway, instance_id: str) -> None:
        self.gateway, self.instance_id = gateway, instance_id

    def session_requested(self) -> _Session:
        async def handle(process: asyncssh.SSHServerProcess[bytes]) -> None:
            await self.gateway._session(self.instance_id, process)

        return _Session(handle, None, asyncssh.sftp.MIN_SFTP_VERSION, False)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int) -> Any:
        async def open_forward() -> _Forward:
            try:
                reader, writer = await self.gateway.runtime.connect(self.instance_id, dest_host, dest_port)
            except (OSError, TimeoutError) as exc:
                log.info("forward refused", extra={"instance_id": self.instance_id, "port": dest_port})
                raise asyncssh.ChannelOpenError(asyncssh.OPEN_CONNECT_FAILED,
                                                f"{dest_host}:{dest_port} is not reachable from the instance: "
                                                f"{exc}") from exc
            return _Forward(reader, writer)

        return open_forward()


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
        try:
            self.servers[instance_id] = await asyncssh.create_server(
                lambda: _Server(self, instance_id), self.bind, port, server_host_keys=[self.key],
                authorized_client_keys=authorized, encoding=None, allow_scp=False, reuse_address=True,
                password_auth=False, kbdint_auth=False)
        except OSError as exc:
            raise SshPortTaken(f"the instance's SSH port {port} is already in use on the host") from exc
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
        sftp = process.subsystem == "sftp"
        tty = process.get_terminal_type() is not None and not sftp
        shell = self.runtime.shell(instance_id, SFTP_SERVER if sftp else process.command, tty=tty)
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

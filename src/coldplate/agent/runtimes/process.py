"""Instances as sandboxed process trees, for hosts without a container engine.

Each instance has a directory `<data_dir>/instances/<id>/` holding `workspace/` (its persistent
disk, mounted at /workspace inside bubblewrap when bubblewrap is installed) and `output.log`.
The workload runs in its own session and process group with the instance's env and
`CUDA_VISIBLE_DEVICES`. Stop sends SIGTERM to the workload's main process (as `docker stop`
does), waits the grace period, then SIGKILLs the whole group. Port forwards are TCP proxies
from 127.0.0.1:<external> to the workload's 127.0.0.1:<internal>; the `image` is not used.
The request's volumes are directories `<data_dir>/volumes/<project>/<name>/` bound at their
mount paths (read-only when asked), which needs bubblewrap. Workloads run on when the agent
stops; `process.json` in the instance's directory lets the next agent adopt them (`recover`).
`delete` ends the workload and keeps the instance's directory; `purge` removes it at the end of
the retention period.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import json
import logging
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from coldplate.agent import cloud_init
from coldplate.agent.runtimes.base import (
    STATE_DIR,
    Assignment,
    ExecResult,
    ExitInfo,
    LogChunk,
    RuntimeFailure,
    Shell,
    await_start,
    directory_bytes,
    exit_message,
    exited_during_start,
    gpu_env,
)
from coldplate.protocol import PortMapping

log = logging.getLogger(__name__)
DEFAULT_CMD = ["sleep", "infinity"]
PROCESS_RECORD = "process.json"
SKIP_ROOT = {"proc", "dev", "tmp", "sys", "run", "workspace"}


@dataclass
class Running:
    leader_pid: int  # the process group: bwrap, or the command itself without a sandbox
    main_pid: int  # what SIGTERM goes to: the command inside the sandbox
    env: dict[str, str]
    prefix: list[str]  # the sandbox (bubblewrap with the instance's mounts) that exec and SSH enter too
    process: asyncio.subprocess.Process | None  # None: adopted after an agent restart, not our child
    proxies: list[asyncio.Server] = field(default_factory=list)
    last_cpu: tuple[float, float] | None = None  # (monotonic time, cpu seconds) at the last sample

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.returncode is None
        try:
            return bool(psutil.Process(self.leader_pid).status() != psutil.STATUS_ZOMBIE)
        except psutil.NoSuchProcess:
            return False

    async def wait(self, timeout: float | None = None) -> None:
        """Until the workload has ended, or `timeout` has passed."""
        if self.process is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.process.wait(), timeout=timeout)
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.alive() and (deadline is None or time.monotonic() < deadline):
            await asyncio.sleep(0.05)

    def exit_info(self) -> ExitInfo:
        if self.process is None:  # the exit status went to whoever reaped it, not to us
            return ExitInfo(None, "ended; its exit status is unknown (the agent restarted while it ran)")
        code = returncode_to_exit(self.process.returncode)
        return ExitInfo(code, exit_message(code))


def returncode_to_exit(code: int | None) -> int | None:
    return None if code is None else (128 - code if code < 0 else code)


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    readonly: bool = False


def sandbox_args(workspace: Path, mounts: list[Mount]) -> list[str]:
    """bubblewrap: the host's root read-only, the instance's workspace writable at /workspace,
    the request's volumes at their mount paths."""
    args = ["bwrap"]
    for entry in sorted(os.listdir("/")):
        path = f"/{entry}"
        if entry in SKIP_ROOT:
            continue
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--bind", str(workspace), "/workspace",
             "--chdir", "/workspace", "--setenv", "HOME", "/workspace"]
    for device in sorted(glob.glob("/dev/nvidia*")):  # the minimal /dev would hide the GPUs; which ones a
        args += ["--dev-bind", device, device]       # workload uses is CUDA_VISIBLE_DEVICES' business
    for mount in mounts:
        args += ["--ro-bind" if mount.readonly else "--bind", str(mount.source), mount.target]
    return [*args, "--"]


class ProcessRuntime:
    def __init__(self, *, data_dir: Path, sandbox: bool | None = None) -> None:
        self.root = data_dir / "instances"
        self.volumes_root = data_dir / "volumes"
        self.sandbox = shutil.which("bwrap") is not None if sandbox is None else sandbox
        self.running_: dict[str, Running] = {}

    def instance_dir(self, instance_id: str) -> Path:
        return self.root / instance_id

    def workspace(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / "workspace"

    def volume_dir(self, project_id: str, name: str) -> Path:
        return self.volumes_root / project_id / name

    def _mounts(self, spec: Assignment) -> list[Mount]:
        if spec.volumes and not self.sandbox:
            raise RuntimeFailure("volumes need bubblewrap (bwrap) on this host, and it is not installed")
        mounts = []
        for volume in spec.volumes:
            source = self.volume_dir(spec.project_id, volume.name)
            source.mkdir(parents=True, exist_ok=True)
            mounts.append(Mount(source, volume.mount_path, volume.readonly))
        return mounts

    async def start(self, spec: Assignment) -> None:
        if spec.instance_id in self.running_:
            return
        workspace = self.workspace(spec.instance_id)
        workspace.mkdir(parents=True, exist_ok=True)
        mounts = self._mounts(spec)
        state_dir = STATE_DIR if self.sandbox else str(workspace / ".coldplate")
        command = cloud_init.wrap(spec.cloud_init, [*(spec.entrypoint or []), *(spec.cmd or [])] or DEFAULT_CMD,
                                  state_dir=state_dir)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workspace), "WORKSPACE": str(workspace),
               **spec.env, **gpu_env(spec.gpu_indices)}
        output = open(self.instance_dir(spec.instance_id) / "output.log", "ab")  # noqa: SIM115
        prefix = sandbox_args(workspace, mounts) if self.sandbox else []  # exec and SSH enter the same sandbox
        read_fd, write_fd = os.pipe()
        try:
            # bubblewrap writes the sandboxed command's pid to --info-fd: that is where SIGTERM goes
            launch = [*prefix[:-1], "--info-fd", str(write_fd), "--"] if self.sandbox else []
            process = await asyncio.create_subprocess_exec(
                *launch, *command, cwd=workspace, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=output,
                stderr=output, start_new_session=True, pass_fds=(write_fd,) if self.sandbox else ())
        except OSError as exc:
            raise RuntimeFailure(f"the command could not be started: {exc}") from exc
        finally:
            os.close(write_fd)
            output.close()
        main_pid = process.pid
        if self.sandbox:
            with os.fdopen(read_fd, "rb") as info:
                raw = await asyncio.to_thread(info.read)
            with contextlib.suppress(ValueError, KeyError):
                main_pid = int(json.loads(raw)["child-pid"])
        else:
            os.close(read_fd)
        running = Running(leader_pid=process.pid, main_pid=main_pid, env=env, process=process, prefix=prefix)
        self.running_[spec.instance_id] = running
        self._record(spec, running)

        async def exited() -> RuntimeFailure | None:
            if process.returncode is None:
                return None
            self.running_.pop(spec.instance_id, None)
            self._record_path(spec.instance_id).unlink(missing_ok=True)
            return exited_during_start("command", returncode_to_exit(process.returncode),
                                       self._tail(spec.instance_id))

        async def booted() -> bool:
            return (workspace / ".coldplate" / cloud_init.DONE_FILE).exists()

        await await_start(spec, exited=exited, booted=booted)
        await self._forward_ports(running, spec.ports)

    async def _forward_ports(self, running: Running, ports: list[PortMapping]) -> None:
        for port in ports:
            running.proxies.append(await self._forward(port.external_port, port.internal_port))

    def _record_path(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / PROCESS_RECORD

    def _record(self, spec: Assignment, running: Running) -> None:
        """What a restarted agent needs to take the workload back (`recover`)."""
        try:
            started = psutil.Process(running.leader_pid).create_time()
        except psutil.NoSuchProcess:  # it has already ended: start reports that, and there is nothing to adopt
            return
        record = {"leader_pid": running.leader_pid, "main_pid": running.main_pid, "create_time": started,
                  "env": running.env, "prefix": running.prefix,
                  "ports": [p.model_dump() for p in spec.ports]}
        path = self._record_path(spec.instance_id)
        path.with_suffix(".tmp").write_text(json.dumps(record))
        os.replace(path.with_suffix(".tmp"), path)

    async def recover(self) -> None:
        """After an agent restart: adopt the workloads that ran on (their process group is alive and
        is the one recorded, not a reused pid), with their port forwards; forget the others."""
        if not self.root.exists():
            return
        for path in sorted(self.root.glob(f"*/{PROCESS_RECORD}")):
            instance_id = path.parent.name
            if instance_id in self.running_:
                continue
            try:
                record = json.loads(path.read_text())
                leader = psutil.Process(record["leader_pid"])
                same = abs(leader.create_time() - record["create_time"]) < 0.01
                alive = same and leader.status() != psutil.STATUS_ZOMBIE
            except (psutil.NoSuchProcess, ValueError, KeyError, OSError):
                alive = False
            if not alive:
                path.unlink(missing_ok=True)
                continue
            running = Running(leader_pid=record["leader_pid"], main_pid=record["main_pid"], env=record["env"],
                              prefix=record["prefix"], process=None)
            self.running_[instance_id] = running
            try:
                await self._forward_ports(running, [PortMapping.model_validate(p) for p in record["ports"]])
            except RuntimeFailure as exc:  # the port was taken meanwhile: the workload runs, unreachable there
                log.warning("port forward not restored", extra={"instance_id": instance_id, "error": str(exc)})
            log.info("adopted a running workload", extra={"instance_id": instance_id})

    def _tail(self, instance_id: str, lines: int = 5) -> str:
        path = self.instance_dir(instance_id) / "output.log"
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) if path.exists() else ""

    async def _forward(self, external: int, internal: int) -> asyncio.Server:
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
                upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", internal)
            except OSError:
                client_w.close()
                return
            await asyncio.gather(pipe(client_r, upstream_w), pipe(upstream_r, client_w))

        try:
            return await asyncio.start_server(handle, "127.0.0.1", external, reuse_address=True)
        except OSError as exc:
            raise RuntimeFailure(f"port {external} could not be forwarded: {exc}") from exc

    async def stop(self, instance_id: str, *, grace_seconds: float, force: bool) -> ExitInfo:
        running = self.running_.pop(instance_id, None)
        if running is None:
            return ExitInfo(None, None)
        for server in running.proxies:
            server.close()
        if running.alive():
            if not force:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(running.main_pid, signal.SIGTERM)
                await running.wait(timeout=grace_seconds)
            if running.alive():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(running.leader_pid, signal.SIGKILL)
                await running.wait()
        with contextlib.suppress(ProcessLookupError):  # whatever the workload left behind in its group
            os.killpg(running.leader_pid, signal.SIGKILL)
        self._record_path(instance_id).unlink(missing_ok=True)
        return running.exit_info()

    async def exec(self, instance_id: str, cmd: list[str], *, timeout: float) -> ExecResult:
        running = self.running_.get(instance_id)
        if running is None:
            return ExecResult(126, "", "the instance is not running")
        workspace = self.workspace(instance_id)
        try:
            process = await asyncio.create_subprocess_exec(
                *running.prefix, *cmd, cwd=workspace, env=running.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            return ExecResult(127, "", f"could not run the command: {exc}")
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout=timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            return ExecResult(124, "", f"the command ran past its {timeout:g}s timeout")
        code = returncode_to_exit(process.returncode)
        return ExecResult(code if code is not None else 0, out.decode(errors="replace"), err.decode(errors="replace"))

    async def logs(self, instance_id: str, *, tail: int | None, cursor: str | None) -> LogChunk:
        path = self.instance_dir(instance_id) / "output.log"
        if not path.exists():
            return LogChunk([], cursor or "0")
        data = await asyncio.to_thread(path.read_bytes)
        start = int(cursor) if cursor and cursor.isdigit() else 0
        end = data.rfind(b"\n") + 1  # only whole lines; a partial last line waits for the next read
        if end <= start:
            return LogChunk([], str(start))
        lines = data[start:end].decode(errors="replace").splitlines()
        if cursor is None and tail is not None:
            lines = lines[-tail:] if tail else []
        return LogChunk(lines, str(end))

    async def sample(self, instance_id: str) -> dict[str, float]:
        running = self.running_.get(instance_id)
        if running is None:
            return {}
        return await asyncio.to_thread(self._sample, instance_id, running)

    def _sample(self, instance_id: str, running: Running) -> dict[str, float]:
        try:
            leader = psutil.Process(running.leader_pid)
            tree = [leader, *leader.children(recursive=True)]
        except psutil.NoSuchProcess:
            return {}
        cpu_seconds, memory = 0.0, 0
        for proc in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                cpu_seconds += times.user + times.system
                memory += proc.memory_info().rss
        now = time.monotonic()
        last = running.last_cpu
        running.last_cpu = (now, cpu_seconds)
        cpu_pct = 100.0 * (cpu_seconds - last[1]) / (now - last[0]) if last and now > last[0] else 0.0
        return {"cpu_pct": round(max(cpu_pct, 0.0), 2), "memory_bytes": memory,
                "disk_bytes": directory_bytes(str(self.workspace(instance_id))),
                "uptime_s": round(time.time() - leader.create_time(), 1)}

    def shell(self, instance_id: str, command: str | None, *, tty: bool) -> Shell | None:
        running = self.running_.get(instance_id)
        if running is None:
            return None
        inner = ["sh", "-c", command] if command else ["sh", "-i"]
        env = {**running.env, **({"TERM": "xterm-256color"} if tty else {})}
        return Shell([*running.prefix, *inner], env=env, cwd=str(self.workspace(instance_id)))

    async def delete(self, instance_id: str) -> None:
        await self.stop(instance_id, grace_seconds=0, force=True)

    async def purge(self, instance_id: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self.instance_dir(instance_id), True)

    async def running(self) -> set[str]:
        return {i for i, r in self.running_.items() if r.alive()}

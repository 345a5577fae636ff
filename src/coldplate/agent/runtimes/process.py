"""Instances as sandboxed process trees, for hosts without a container engine.

Each instance has a directory `<data_dir>/instances/<id>/` (the agent's alone: 0700) holding
`workspace/` (its persistent disk, owned by the workload's uid, 0700, mounted at /workspace),
`etc/` (its generated passwd, group, hosts, hostname), `output.log` and `process.json`. The
workload runs in a bubblewrap sandbox (see `sandbox.py`: minimal read-only system, own PID, IPC,
UTS and network namespaces, own GPUs' device nodes only, an unprivileged uid per project) within
cgroups that hold its vCPU, memory and process limits (`cgroups.py`). bubblewrap is required: it
is looked up at every start, and without it a start fails unless the agent was started with
`--unsandboxed` (then the workload runs as a plain process group, and the hostnode says
`sandbox: none`). Stop sends SIGTERM to the workload (pid 1 of its sandbox, as `docker stop`
does), waits the grace period, then SIGKILLs the whole group. Port forwards are TCP proxies from
127.0.0.1:<external> to the workload's own 127.0.0.1:<internal>, connected inside its network
namespace; the `image` is not used. The request's volumes are directories
`<data_dir>/volumes/<project>/<name>/` bound at their mount paths (read-only when asked).
The instance's env is the file `env` (0400, the workload's), read inside the sandbox after the
privilege drop: bwrap, nsenter and setpriv, which run privileged, never see it (an LD_PRELOAD
would run the tenant's code as root). Workloads run on when the agent stops; `process.json`
(0600) lets the next agent adopt them (`recover`). `delete` ends the workload and keeps the
instance's directory; `purge` removes it at the end of the retention period.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from coldplate.agent.runtimes import netns, sandbox
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
    launched,
)
from coldplate.agent.runtimes.cgroups import Cgroups, Limits, join_command, joiner
from coldplate.agent.runtimes.identities import WorkloadUids, own
from coldplate.agent.runtimes.sandbox import Identity, Mount
from coldplate.protocol import PortMapping

log = logging.getLogger(__name__)
DEFAULT_CMD = ["sleep", "infinity"]
PROCESS_RECORD = "process.json"
PIDS_LIMIT = 4096
NO_BWRAP = ("bubblewrap (bwrap) is not installed on this host, and workloads do not run unsandboxed: install "
            "bubblewrap, or start the agent with --unsandboxed to run them without isolation")


@dataclass
class Running:
    leader_pid: int  # the process group: bwrap, or the command itself without a sandbox
    main_pid: int  # what SIGTERM goes to: the command, pid 1 of its sandbox
    env: dict[str, str]  # what the processes the agent starts get: in a sandbox, HOST_ENV only
    prefix: list[str]  # how exec and SSH enter the running sandbox (nsenter), empty without one
    process: asyncio.subprocess.Process | None  # None: adopted after an agent restart, not our child
    proxies: list[asyncio.Server] = field(default_factory=list)
    last_cpu: tuple[float, float] | None = None  # (monotonic time, cpu seconds) at the last sample
    internal_ports: list[int] = field(default_factory=list)

    @property
    def sandboxed(self) -> bool:
        return bool(self.prefix)

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

    async def connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """From inside the sandbox's network; unsandboxed, only to the instance's own ports on loopback."""
        if self.sandboxed:
            return await netns.open_connection_in(self.main_pid, host, port)
        if host not in ("127.0.0.1", "localhost") or port not in self.internal_ports:
            raise OSError("an unsandboxed instance forwards only to its own ports on 127.0.0.1")
        return await asyncio.open_connection("127.0.0.1", port)


def returncode_to_exit(code: int | None) -> int | None:
    return None if code is None else (128 - code if code < 0 else code)


class ProcessRuntime:
    def __init__(self, *, data_dir: Path, unsandboxed: bool = False, gpu_minors: list[int] | None = None,
                 cgroups: Cgroups | None = None, dev_dir: Path = Path("/dev")) -> None:
        self.root = data_dir / "instances"
        self.volumes_root = data_dir / "volumes"
        self.unsandboxed = unsandboxed  # asked for: workloads without bubblewrap run as plain processes
        self.gpu_minors = gpu_minors  # NVML index → device minor number; None: the same numbers
        self.cgroups = cgroups if cgroups is not None else Cgroups()
        self.uids = WorkloadUids(data_dir)
        self.dev_dir = dev_dir  # where the GPUs' device nodes are
        if unsandboxed:
            log.warning("--unsandboxed: where bubblewrap is missing, workloads run without isolation")
        self.running_: dict[str, Running] = {}

    @property
    def sandbox(self) -> str:
        """What isolates the workloads started now: `bubblewrap`, or `none` where it is missing and
        --unsandboxed was given (without that flag, starts fail instead)."""
        return "none" if self.unsandboxed and shutil.which("bwrap") is None else "bubblewrap"

    def enforced_limits(self) -> list[str]:
        return self.cgroups.enforced()  # disk: measured (metrics), not enforced

    def _use_bwrap(self) -> bool:
        """Looked up at every start: a bubblewrap installed after the agent started is used."""
        if shutil.which("bwrap") is not None:
            return True
        if self.unsandboxed:
            log.warning("running a workload without a sandbox (--unsandboxed)")
            return False
        raise RuntimeFailure(NO_BWRAP)

    def instance_dir(self, instance_id: str) -> Path:
        return self.root / instance_id

    def workspace(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / "workspace"

    def volume_dir(self, project_id: str, name: str) -> Path:
        return self.volumes_root / project_id / name

    def _identity(self, spec: Assignment) -> Identity:
        if os.geteuid() == 0:
            uid = self.uids.uid(spec.project_id or spec.instance_id)
            return Identity(uid=uid, gid=uid, drop=True)
        return Identity(uid=os.getuid(), gid=os.getgid(), drop=False)

    def _prepare(self, spec: Assignment, identity: Identity) -> tuple[Path, list[Mount]]:
        """The instance's directories, closed to everyone but the agent and (its disk) the workload."""
        instance_dir = self.instance_dir(spec.instance_id)
        instance_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        os.chmod(instance_dir, 0o700)
        workspace = self.workspace(spec.instance_id)
        workspace.mkdir(exist_ok=True)
        own(workspace, identity.uid, identity.gid)
        etc_dir = instance_dir / "etc"
        etc_dir.mkdir(exist_ok=True)
        for name, text in sandbox.etc_files(name=spec.name, uid=identity.uid, gid=identity.gid).items():
            (etc_dir / name).write_text(text)
            os.chmod(etc_dir / name, 0o644)
        mounts = []
        for volume in spec.volumes:
            source = self.volume_dir(spec.project_id, volume.name)
            source.mkdir(parents=True, exist_ok=True)
            os.chmod(self.volumes_root, 0o700)
            own(source, identity.uid, identity.gid)
            mounts.append(Mount(source, volume.mount_path, volume.readonly))
        return etc_dir, mounts

    def _bwrap(self, spec: Assignment, identity: Identity, etc_dir: Path, env: Path, mounts: list[Mount]
               ) -> list[str]:
        minors = [self.gpu_minors[i] if self.gpu_minors else i for i in spec.gpu_indices]
        devices = sandbox.gpu_device_nodes(minors, os.listdir(self.dev_dir))
        return sandbox.bwrap_args(
            hostname=spec.name, workspace=self.workspace(spec.instance_id), etc_dir=etc_dir, env=env, mounts=mounts,
            devices=devices, system=sandbox.list_entries("/", sandbox.SYSTEM_DIRS),
            etc=sandbox.list_entries("/etc", sandbox.ETC_ALLOWED), identity=identity, dev_dir=self.dev_dir)

    def _cgroups(self, spec: Assignment) -> list[Path]:
        """The instance's cgroups, with its limits; their `cgroup.procs` files."""
        if not self.cgroups.controllers:
            return []
        limits = Limits(vcpus=spec.vcpus, memory_bytes=spec.memory_gb * 2**30, pids=PIDS_LIMIT)
        try:
            return self.cgroups.create(spec.instance_id, limits)
        except OSError as exc:
            raise RuntimeFailure(f"the instance's limits could not be set: {exc}") from exc

    async def start(self, spec: Assignment) -> None:
        if spec.instance_id in self.running_:
            return
        use_bwrap = self._use_bwrap()
        if spec.volumes and not use_bwrap:
            raise RuntimeFailure("volumes need bubblewrap (bwrap) on this host, and it is not installed")
        identity = self._identity(spec) if use_bwrap else Identity(os.getuid(), os.getgid(), drop=False)
        etc_dir, mounts = self._prepare(spec, identity)
        workspace = self.workspace(spec.instance_id)
        state_dir = STATE_DIR if use_bwrap else str(workspace / ".coldplate")
        command = cloud_init.wrap(spec.cloud_init, [*(spec.entrypoint or []), *(spec.cmd or [])] or DEFAULT_CMD,
                                  state_dir=state_dir)
        home = "/workspace" if use_bwrap else str(workspace)
        devices = use_bwrap and any(n.startswith("nvidia") for n in os.listdir(self.dev_dir))
        path = sandbox.HOST_ENV["PATH"] if use_bwrap else os.environ.get("PATH", "/usr/bin:/bin")
        env = {"PATH": path, "HOME": home, "WORKSPACE": home,
               **spec.env, **gpu_env(spec.gpu_indices, isolated=devices)}
        env_path = self.instance_dir(spec.instance_id) / "env"
        if use_bwrap:  # the workload's env goes in by file; what runs privileged gets HOST_ENV only
            env_path.unlink(missing_ok=True)
            fd = os.open(env_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "w") as out:
                out.write(sandbox.env_file(env))
            os.chown(env_path, identity.uid, identity.gid)
        launch_env = dict(sandbox.HOST_ENV) if use_bwrap else env

        async def launch() -> tuple[asyncio.subprocess.Process, Running]:
            output = open(self.instance_dir(spec.instance_id) / "output.log", "ab")  # noqa: SIM115
            procs = self._cgroups(spec)
            read_fd, write_fd = os.pipe()
            try:
                # bubblewrap writes the sandboxed command's pid to --info-fd: that is where SIGTERM goes
                sandboxed = ([*self._bwrap(spec, identity, etc_dir, env_path, mounts), "--info-fd", str(write_fd),
                              "--", *identity.setpriv(), *sandbox.ENV_LOADER] if use_bwrap else [])
                process = await asyncio.create_subprocess_exec(
                    *sandboxed, *command, cwd=workspace, env=launch_env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=output, stderr=output, start_new_session=True, pass_fds=(write_fd,) if use_bwrap else (),
                    preexec_fn=joiner(procs) if procs else None)
            except OSError as exc:
                raise RuntimeFailure(f"the command could not be started: {exc}") from exc
            finally:
                os.close(write_fd)
                output.close()
            main_pid = process.pid
            if use_bwrap:
                with os.fdopen(read_fd, "rb") as info:
                    raw = await asyncio.to_thread(info.read)
                with contextlib.suppress(ValueError, KeyError):
                    main_pid = int(json.loads(raw)["child-pid"])
            else:
                os.close(read_fd)
            prefix = [*join_command(procs), *sandbox.enter_args(main_pid, identity)] if use_bwrap else []
            running = Running(leader_pid=process.pid, main_pid=main_pid, env=launch_env, process=process, prefix=prefix,
                              internal_ports=[p.internal_port for p in spec.ports])
            self.running_[spec.instance_id] = running
            self._record(spec, running)
            return process, running

        process, running = await launched(launch())  # spawned means recorded (killed bwrap leaves its sandbox)

        async def exited() -> RuntimeFailure | None:
            if process.returncode is None:
                return None
            self.running_.pop(spec.instance_id, None)
            self._record_path(spec.instance_id).unlink(missing_ok=True)
            await asyncio.to_thread(self.cgroups.remove, spec.instance_id)
            return exited_during_start("command", returncode_to_exit(process.returncode),
                                       self._tail(spec.instance_id))

        async def booted() -> bool:
            return (workspace / ".coldplate" / cloud_init.DONE_FILE).exists()

        await await_start(spec, exited=exited, booted=booted)
        await self._forward_ports(running, spec.ports)

    async def _forward_ports(self, running: Running, ports: list[PortMapping]) -> None:
        for port in ports:
            running.proxies.append(await self._forward(running, port.external_port, port.internal_port))

    def _record_path(self, instance_id: str) -> Path:
        return self.instance_dir(instance_id) / PROCESS_RECORD

    def _record(self, spec: Assignment, running: Running) -> None:
        """What a restarted agent needs to take the workload back (`recover`); 0600, as it holds env."""
        try:
            started = psutil.Process(running.leader_pid).create_time()
        except psutil.NoSuchProcess:  # it has already ended: start reports that, and there is nothing to adopt
            return
        record = {"leader_pid": running.leader_pid, "main_pid": running.main_pid, "create_time": started,
                  "env": running.env, "prefix": running.prefix,
                  "ports": [p.model_dump() for p in spec.ports]}
        path = self._record_path(spec.instance_id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(record))
        os.replace(tmp, path)

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
                              prefix=record["prefix"], process=None,
                              internal_ports=[p["internal_port"] for p in record["ports"]])
            self.running_[instance_id] = running
            try:
                await self._forward_ports(running, [PortMapping.model_validate(p) for p in record["ports"]])
            except RuntimeFailure as exc:  # the port was taken meanwhile: the workload runs, unreachable there
                log.warning("port forward not restored", extra={"instance_id": instance_id, "error": str(exc)})
            log.info("adopted a running workload", extra={"instance_id": instance_id})

    def _tail(self, instance_id: str, lines: int = 5) -> str:
        path = self.instance_dir(instance_id) / "output.log"
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:]) if path.exists() else ""

    async def _forward(self, running: Running, external: int, internal: int) -> asyncio.Server:
        try:
            return await netns.forward(external, lambda: running.connect("127.0.0.1", internal))
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
        await asyncio.to_thread(self.cgroups.remove, instance_id)
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

    async def connect(self, instance_id: str, host: str, port: int
                      ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        running = self.running_.get(instance_id)
        if running is None:
            raise OSError("the instance is not running")
        return await running.connect(host, port)

    async def delete(self, instance_id: str) -> None:
        await self.stop(instance_id, grace_seconds=0, force=True)

    async def purge(self, instance_id: str) -> None:
        await asyncio.to_thread(self.cgroups.remove, instance_id)
        await asyncio.to_thread(shutil.rmtree, self.instance_dir(instance_id), True)

    async def running(self) -> set[str]:
        return {i for i, r in self.running_.items() if r.alive()}

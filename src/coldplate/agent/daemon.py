"""One host agent: register, heartbeat, long-poll for assignments, converge each, report.

The agent holds no state the server lacks but its agent token: after a restart it re-registers
(same name, same hostnode) presenting the token it kept in its data directory
(agent/credentials.py), and converges from the assignments it is given.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
from collections.abc import Callable, Coroutine
from typing import Any

import httpx

from coldplate import protocol
from coldplate.agent.credentials import TokenStore
from coldplate.agent.retention import WorkspaceRetention
from coldplate.agent.runtimes.base import Runtime, RuntimeFailure
from coldplate.agent.ssh import SshGateway
from coldplate.domain.lifecycle import AgentAction, Busy, Desired, Status, plan
from coldplate.ids import new_secret
from coldplate.protocol import Assignment

log = logging.getLogger(__name__)
REPORT_ATTEMPTS = 5
DEFAULT_HEARTBEAT_S = 5.0  # until the server's first answer names its interval
MAX_RETRY_S = 5.0  # the longest wait between retries of a failing call (it doubles from retry_delay)
# A start that is done within this is reported `ready` alone (the server records `starting` on the
# way, lifecycle.REPORT_RULES); a longer one says `starting` once this has passed. It spares quick
# starts a report and a transaction: at 10,000 hosts on PostgreSQL a third of POST → ready.
QUIET_START_S = 0.2


def describe_failure(exc: BaseException) -> str:
    """Why a call failed, in words a log line can carry (an HTTP error's status and detail)."""
    if isinstance(exc, httpx.HTTPStatusError):
        request, response = exc.request, exc.response
        try:
            body = response.text[:500]
        except (httpx.ResponseNotRead, UnicodeDecodeError):
            body = ""
        return f"{request.method} {request.url.path} answered {response.status_code}: {body}"
    return f"{type(exc).__name__}: {exc}"


class Agent:
    def __init__(self, *, server_url: str, join_token: str | None, spec: protocol.HostInfo, runtime: Runtime,
                 client: httpx.AsyncClient | None = None, poll_client: httpx.AsyncClient | None = None,
                 heartbeat_interval: float | None = None,
                 poll_wait: float = 25.0, retry_delay: float = 0.5, quiet_start: float = QUIET_START_S,
                 gpu_usage: Callable[[list[int]], dict[str, float]] | None = None,
                 ssh: SshGateway | None = None, retention: WorkspaceRetention | None = None,
                 tokens: TokenStore | None = None) -> None:
        self.server_url = server_url.rstrip("/")
        self.join_token = join_token
        self.tokens = tokens  # where the agent token outlives this process; None: memory only
        self.spec = spec
        self.runtime = runtime
        self.client = client or httpx.AsyncClient(timeout=poll_wait + 10)
        # the long-poll's own client where agents share connections (a sim fleet): a poll queued for a
        # connection behind others' calls, or a call behind long-polls, waits up to a whole poll
        self.poll_client = poll_client or self.client
        # None: as the server says in its answers to registration and heartbeats
        self.fixed_heartbeat = heartbeat_interval is not None
        self.heartbeat_interval = heartbeat_interval if heartbeat_interval is not None else DEFAULT_HEARTBEAT_S
        self.poll_wait = poll_wait
        self.retry_delay = retry_delay
        self.quiet_start = quiet_start
        self.hostnode_id: str | None = None
        self.token: str | None = None
        self._busy: dict[str, asyncio.Task[None]] = {}
        self._register_lock = asyncio.Lock()
        self._tasks_started: set[str] = set()
        self.gpu_usage = gpu_usage  # NVML on hosts with real GPUs
        self._gpu_indices: dict[str, list[int]] = {}
        self.ssh = ssh  # SSH endpoints for real runtimes; simulated hosts have none
        self.retention = retention  # None: a terminated instance's disk goes at once
        self._starting: set[str] = set()
        self._assigned: dict[str, Assignment] | None = None  # as of the last poll; None before the first
        self._proposed: str | None = None  # the token this host asked for, before the server's answer
        self._beat_now = asyncio.Event()  # the server came back (a poll succeeded after failing): say so now

    def registration(self) -> protocol.Registration:
        isolation = {"sandbox": self.runtime.sandbox, "enforced_limits": self.runtime.enforced_limits()}
        return protocol.Registration.model_validate({**self.spec.model_dump(), "join_token": self.join_token,
                                                     "isolation": isolation})

    async def register(self) -> None:
        """Registers with the agent token this host already holds (a registered name needs it) and
        the join token (a new name needs it); keeps the token the server answers with."""
        saved = self.tokens.load(self.spec.name) if self.tokens is not None else None
        credential = self.token or saved
        if credential is None:  # a new host proposes its own token and keeps it before asking: if
            # the answer is lost (a timeout while the server was busy), the retry presents the token
            # the server stored, instead of a join token that no longer opens a registered name
            credential = saved = self._proposed = self._proposed or new_secret("cpa")
            if self.tokens is not None:
                self.tokens.save(self.spec.name, credential)
        response = await self.client.post(f"{self.server_url}/v1/agent/register",
                                          json=self.registration().model_dump(mode="json", exclude_none=True),
                                          headers={"Authorization": f"Bearer {credential}"})
        if response.is_error:
            log.error("registration refused", extra={"host": self.spec.name, "status": response.status_code,
                                                     "problem": response.text[:500]})
        response.raise_for_status()
        registered = protocol.Registered.model_validate(response.json())
        self.hostnode_id, self.token = registered.hostnode_id, registered.agent_token
        if self.tokens is not None and self.token != saved:
            self.tokens.save(self.spec.name, registered.agent_token)
        self._adopt_interval(registered.heartbeat_interval_seconds)
        log.info("registered", extra={"hostnode_id": self.hostnode_id, "host": self.spec.name})

    def _adopt_interval(self, interval: float | None) -> None:
        """The server names the heartbeat interval (registration and heartbeat answers) unless the
        agent was started with its own."""
        if not self.fixed_heartbeat and interval is not None and interval > 0:
            self.heartbeat_interval = float(interval)

    async def _ensure_registered(self, stale: str | None) -> str:
        """One registration at a time: the heartbeat and poll loops share the token, and a
        registration may replace it, so a second concurrent one could race the first."""
        async with self._register_lock:
            if self.token is None or self.token == stale:
                await self.register()
            assert self.token is not None
            return self.token

    async def _call(self, method: str, path: str, *, client: httpx.AsyncClient | None = None,
                    **kwargs: Any) -> httpx.Response:
        """An authenticated call; a 401 (server lost our token) re-registers and retries once."""
        token = self.token or await self._ensure_registered(None)
        for attempt in range(2):
            response = await (client or self.client).request(method, f"{self.server_url}{path}",
                                                 headers={"Authorization": f"Bearer {token}"}, **kwargs)
            if response.status_code != 401 or attempt == 1:
                return response
            token = await self._ensure_registered(token)
        raise AssertionError("unreachable")

    async def run(self, stop: asyncio.Event) -> None:
        await self.runtime.recover()
        tasks = [asyncio.create_task(self._forever(self._heartbeat_once, stop, heartbeat=True)),
                 asyncio.create_task(self._forever(self._poll_once, stop, heartbeat=False))]
        await stop.wait()
        for task in [*tasks, *self._busy.values()]:
            task.cancel()
        await asyncio.gather(*tasks, *self._busy.values(), return_exceptions=True)
        if self.ssh is not None:
            await self.ssh.close_all()

    async def _forever(self, once: Any, stop: asyncio.Event, *, heartbeat: bool) -> None:
        """Call `once` until stopped: heartbeats every interval (less a random tenth), polls back to
        back; failures are retried with a doubling delay. A fleet that started, or saw its server
        restart, at once beats at once: after such a beat the next comes at a random point of the
        interval, so that the beats spread over it instead of arriving as a wave every interval."""
        failures = 0
        spread = True  # the first beat, and one answering a server restart, is a fleet's wave
        while not stop.is_set():
            try:
                await once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # network trouble or a server restart: retry, never die
                log.warning("agent call failed; retrying: %s", describe_failure(exc),
                            extra={"host": self.spec.name, "error": repr(exc)})
                failures += 1
                delay = min(self.retry_delay * 2 ** (failures - 1), MAX_RETRY_S)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                continue
            if not heartbeat:  # let instance tasks run even if the server answers at once
                if failures:  # after a server restart, a heartbeat marks this host seen at once
                    self._beat_now.set()
                failures = 0
                await asyncio.sleep(0)
                continue
            failures = 0
            share = random.uniform(0.05, 1) if spread else random.uniform(0.9, 1)
            try:  # run() cancels this task once `stop` is set
                async with asyncio.timeout(self.heartbeat_interval * share):  # not wait_for:
                    await self._beat_now.wait()  # 3.11's drops a cancel that meets a wake-up
            except TimeoutError:
                pass
            spread = self._beat_now.is_set()
            self._beat_now.clear()

    async def _heartbeat_once(self) -> None:
        running = await self.runtime.running()
        self._notice_exits(running)
        self._remove_unassigned(running)
        samples = [sample for i in sorted(running) if (sample := await self._sample(i))]
        heartbeat = protocol.Heartbeat(metrics=samples[:protocol.MAX_METRIC_SAMPLES])
        response = await self._call("POST", "/v1/agent/heartbeat", json=heartbeat.model_dump(mode="json"))
        response.raise_for_status()
        self._adopt_interval(protocol.HeartbeatAck.model_validate(response.json()).heartbeat_interval_seconds)
        await self._purge_due()

    async def _purge_due(self) -> None:
        if self.retention is None:
            return
        for instance_id in self.retention.due():
            try:
                await self.runtime.purge(instance_id)
            except Exception:  # the engine is busy or gone: try again at the next heartbeat
                log.warning("purge failed", extra={"instance_id": instance_id})
                continue
            self.retention.forget(instance_id)

    async def _sample(self, instance_id: str) -> protocol.MetricSample | None:
        try:
            values = await self.runtime.sample(instance_id)
            if self.gpu_usage is not None:
                values.update(await asyncio.to_thread(self.gpu_usage, self._gpu_indices.get(instance_id, [])))
        except Exception:  # an instance that went away between listing and sampling, or a busy engine
            log.debug("sample failed", extra={"instance_id": instance_id})
            return None
        finite = {k: v for k, v in values.items() if math.isfinite(v)}  # a NaN reading is no reading
        kept = dict(sorted(finite.items())[:protocol.MAX_METRIC_VALUES])
        return protocol.MetricSample(instance_id=instance_id, values=kept) if kept else None

    _version = -1
    _server_id: str | None = None

    async def _poll_once(self) -> None:
        # each poll waits 75-100 % of poll_wait: polls that began together (a fleet's start, a server
        # restart) end apart after a few rounds instead of all returning in the same second
        wait = round(self.poll_wait * random.uniform(0.75, 1), 3)
        params: dict[str, Any] = {"since": self._version, "wait": wait}
        if self._server_id is not None:  # a restarted server answers at once: the agent beats there now
            params["server_id"] = self._server_id
        response = await self._call("GET", "/v1/agent/assignments", client=self.poll_client, params=params)
        response.raise_for_status()
        data = protocol.Assignments.model_validate(response.json())
        self._version = data.version
        if data.server_id != self._server_id and self._server_id is not None:
            self._beat_now.set()  # the server restarted (or another replica answers): be seen there now
        self._server_id = data.server_id
        self._assigned = {spec.instance_id: spec for spec in data.assignments}
        for spec in data.assignments:
            self._converge(spec)
        for task in data.tasks:
            if task.id not in self._tasks_started:  # listed until its result is posted
                self._tasks_started.add(task.id)
                asyncio.create_task(self._run_task(task))

    async def _run_task(self, task: protocol.Task) -> None:
        params = task.params
        try:
            if task.kind == "exec":
                done = await self.runtime.exec(task.instance_id, params["cmd"], timeout=params["timeout"])
                result = protocol.fitted_result(exit_code=done.exit_code, stdout=done.stdout, stderr=done.stderr)
            else:
                chunk = await self.runtime.logs(task.instance_id, tail=params.get("tail"), cursor=params.get("cursor"))
                result = protocol.fitted_result(lines=chunk.lines, cursor=chunk.cursor)
        except Exception as exc:  # the task fails, the agent does not
            log.exception("task failed", extra={"task_id": task.id})
            result = protocol.fitted_result(error=f"the agent could not run this: {exc}")
        for _ in range(5):
            try:
                response = await self._call("POST", f"/v1/agent/tasks/{task.id}/result",
                                            json=result.model_dump(mode="json", exclude_none=True))
                if response.status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(self.retry_delay)

    def _converge(self, spec: Assignment) -> None:
        """Start one task per instance that needs work; an instance never has two at once."""
        self._gpu_indices[spec.instance_id] = spec.gpu_indices
        ssh_missing = self.ssh is not None and spec.instance_id not in self.ssh.servers
        step = plan(Status(spec.status), Desired(spec.desired), None, self._busy_with(spec.instance_id),
                    ssh_missing=ssh_missing)
        work = self._work(step.action, spec)
        if work is None:
            return
        if step.cancel_busy:  # a stop or terminate wins over a start still booting (a long cloud-init)
            busy = self._busy[spec.instance_id]
            busy.cancel()
            work = self._after(busy, work)
        self._track(spec.instance_id, work)

    def _busy_with(self, instance_id: str) -> Busy:
        if instance_id not in self._busy:
            return Busy.IDLE
        return Busy.STARTING if instance_id in self._starting else Busy.WORKING

    def _work(self, action: AgentAction, spec: Assignment) -> Coroutine[Any, Any, None] | None:
        if action is AgentAction.START:
            return self._start(spec)
        if action is AgentAction.STOP:
            return self._stop(spec, delete=False)
        if action is AgentAction.TERMINATE:
            return self._stop(spec, delete=True)
        if action is AgentAction.OPEN_SSH:
            return self._open_ssh(spec)
        if action is AgentAction.REPORT_EXITED:
            return self._exited(spec)
        return None

    def _track(self, instance_id: str, work: Any) -> None:
        """Run `work` as the one task in flight for this instance."""
        task = asyncio.create_task(work)
        self._busy[instance_id] = task
        task.add_done_callback(functools.partial(self._done, instance_id))

    def _notice_exits(self, running: set[str]) -> None:
        """A `ready` instance whose workload no longer runs, with nothing of ours in flight on it,
        ended by itself: report it stopped with its exit status. (Only this agent moves a ready
        instance anywhere else, always through a task in `_busy`, so a stale `ready` is not a risk.)"""
        for spec in list((self._assigned or {}).values()):
            step = plan(Status(spec.status), Desired(spec.desired), spec.instance_id in running,
                        self._busy_with(spec.instance_id))
            if step.action is AgentAction.REPORT_EXITED:
                self._track(spec.instance_id, self._exited(spec))

    def _remove_unassigned(self, running: set[str]) -> None:
        """A workload the server no longer assigns here (it failed with `host_lost` while this host
        was away, or was terminated while the agent was down) must not keep its GPUs: stop it and
        delete it, its disk kept for the retention period. Only once the assignments are known."""
        if self._assigned is None:
            return
        for instance_id in sorted(running - set(self._assigned) - set(self._busy)):
            log.warning("removing a workload this host is no longer assigned", extra={"instance_id": instance_id})
            self._track(instance_id, self._remove(instance_id))

    async def _remove(self, instance_id: str) -> None:
        await self._close_ssh(instance_id)
        await self.runtime.stop(instance_id, grace_seconds=10, force=False)
        await self._delete(instance_id)

    async def _delete(self, instance_id: str) -> None:
        """Delete a stopped instance; its disk stays for the retention period (at once without one)."""
        if self.retention is not None:  # booked before the delete: a crash in between loses no schedule
            self.retention.keep(instance_id)
        await self.runtime.delete(instance_id)
        if self.retention is None:
            await self.runtime.purge(instance_id)

    async def _exited(self, spec: Assignment) -> None:
        if spec.instance_id in await self.runtime.running():  # started while the heartbeat listed: not gone
            return
        await self._close_ssh(spec.instance_id)
        info = await self.runtime.stop(spec.instance_id, grace_seconds=0, force=False)  # reads the exit status
        if self._assigned is not None:
            self._assigned.pop(spec.instance_id, None)
        await self._report(spec.instance_id, "stopped", exit_code=info.exit_code, exit_message=info.exit_message)

    @staticmethod
    async def _after(previous: asyncio.Task[None], work: Any) -> None:
        await asyncio.wait([previous])
        await work

    def _done(self, instance_id: str, task: asyncio.Task[None]) -> None:
        if self._busy.get(instance_id) is task:
            del self._busy[instance_id]
        self._version = -1  # re-read: the server may have moved on while we worked

    async def _report(self, instance_id: str, status: protocol.ReportedStatus, **extra: Any) -> None:
        report = protocol.TransitionReport(status=status, **extra)
        for attempt in range(REPORT_ATTEMPTS):  # a lost report would leave the server a step behind
            try:
                response = await self._call("POST", f"/v1/agent/instances/{instance_id}/transition",
                                            json=report.model_dump(mode="json", exclude_none=True))
                break
            except httpx.HTTPError:
                if attempt == REPORT_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(self.retry_delay)
        if response.status_code == 409:
            log.info("transition refused", extra={"instance_id": instance_id, "status": status})
            return
        response.raise_for_status()

    async def _start(self, spec: Assignment) -> None:
        self._starting.add(spec.instance_id)
        boot = asyncio.create_task(self._boot(spec))
        try:
            if spec.status == "provisioning":
                await asyncio.wait([boot], timeout=self.quiet_start)
                if not boot.done():
                    await self._report(spec.instance_id, "starting")
            await boot
        except RuntimeFailure as exc:  # the SSH port taken (SshPortTaken) is one
            await self._close_ssh(spec.instance_id)
            reason = protocol.fit_text(str(exc), 1000, keep_end=False)
            await self._report(spec.instance_id, "failed", failure_reason=reason)
            return
        finally:
            if not boot.done():  # a stop cancelled this start: the boot ends before the stop goes on
                boot.cancel()
                await asyncio.wait([boot])
            self._starting.discard(spec.instance_id)
        await self._report(spec.instance_id, "ready")

    async def _boot(self, spec: Assignment) -> None:
        if self.ssh is not None:  # bound first: `ready` never points users at somebody else's program
            await self.ssh.open(spec.instance_id, spec.ssh_port, spec.ssh_keys)
        await self.runtime.start(spec)

    async def _open_ssh(self, spec: Assignment) -> None:
        if self.ssh is not None:
            try:
                await self.ssh.open(spec.instance_id, spec.ssh_port, spec.ssh_keys)
            except RuntimeFailure as exc:  # after a restart, the port was taken meanwhile: it runs, without SSH
                log.warning("ssh endpoint failed", extra={"instance_id": spec.instance_id, "error": repr(exc)})

    async def _close_ssh(self, instance_id: str) -> None:
        if self.ssh is not None:
            await self.ssh.close(instance_id)

    async def _stop(self, spec: Assignment, *, delete: bool) -> None:
        await self._close_ssh(spec.instance_id)
        info = await self.runtime.stop(spec.instance_id, grace_seconds=spec.grace_seconds, force=spec.force)
        if delete:
            await self._delete(spec.instance_id)
        await self._report(spec.instance_id, "terminated" if delete else "stopped",
                           exit_code=info.exit_code, exit_message=info.exit_message)

"""The agent protocol: every message between the control plane and a host agent, as pydantic models.

One definition, imported by the server's agent routes (`api/routes_agent.py`), the agent
(`agent/daemon.py`, the runtimes) and the tests' stand-in agents, so the two sides cannot drift.
A leaf module: it imports nothing of coldplate but the lifecycle enums and the checked types.

What an agent sends is strict (`extra="forbid"`; every string clean, every number fits its
column, every float finite). What the server sends an agent ignores fields it does not know, so
an older agent keeps working against a newer server.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from coldplate.checked import INT32_MAX, AbsolutePath, FiniteFloat, Int32, SafeStr
from coldplate.domain.lifecycle import Desired as Desired  # re-exported: the protocol's enums
from coldplate.domain.lifecycle import Status as Status

# Limits of what an agent may send (docs/api.md lists them).
MAX_METRIC_SAMPLES = 1000
MAX_METRIC_VALUES = 32
MAX_TASK_OUTPUT_CHARS = 128 * 1024  # exec stdout and stderr, each
MAX_LOG_LINES = 10_000
MAX_LOG_LINE_CHARS = 16 * 1024
MAX_TASK_RESULT_BYTES = 768 * 1024  # a result's JSON; the agent trims its output to fit

Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=6)]
Port = Annotated[int, Field(ge=1, le=65535)]
Count = Annotated[int, Field(ge=1, le=INT32_MAX)]
Id = Annotated[SafeStr, Field(min_length=1, max_length=40)]
ReportedStatus = Literal["starting", "ready", "stopped", "terminated", "failed"]


class FromAgent(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FromServer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# --- register -------------------------------------------------------------------------------------


class Location(FromAgent):
    city: Annotated[SafeStr, Field(max_length=100)] = ""
    country: Annotated[SafeStr, Field(max_length=100)] = ""


class Gpu(FromAgent):
    model: Annotated[SafeStr, Field(min_length=1, max_length=100)] = "cpu"
    count: int = Field(default=0, ge=0, le=64)
    memory_mb: int = Field(default=0, ge=0, le=INT32_MAX)
    uuids: list[Annotated[SafeStr, Field(max_length=100)]] = Field(default_factory=list, max_length=64)
    driver_version: Annotated[SafeStr, Field(max_length=100)] | None = None
    simulated: bool = False


class Prices(FromAgent):
    gpu_per_hour: Money
    spot_gpu_per_hour: Money
    vcpu_per_hour: Money = Decimal(0)
    memory_gb_per_hour: Money = Decimal(0)
    disk_gb_per_hour: Money = Decimal(0)


class Isolation(FromAgent):
    """What keeps this host's instances apart (issue 9): shown on the hostnode and in offers."""

    sandbox: Literal["bubblewrap", "docker", "none", "simulated"]
    # userns: the workload's root is an unprivileged uid on the host (Docker's user-namespace remapping)
    enforced_limits: list[Literal["vcpus", "memory_gb", "pids", "disk_gb", "userns"]] = Field(default_factory=list,
                                                                                            max_length=5)


class HostInfo(FromAgent):
    """What a host is: its agent builds it from its inventory (or a fleet file); the server's
    registration service takes it as it is."""

    name: Annotated[SafeStr, Field(min_length=1, max_length=200)]
    region: Annotated[SafeStr, Field(min_length=1, max_length=20)]
    location: Location = Field(default_factory=Location)
    gpu: Gpu = Field(default_factory=Gpu)
    vcpus: Count
    memory_gb: Count
    disk_gb: Count
    port_range: tuple[Port, Port]
    prices: Prices
    address: Annotated[SafeStr, Field(min_length=1, max_length=200)] = "127.0.0.1"
    heartbeat_timeout_seconds: int | None = Field(default=None, ge=1, le=3600)  # None: the server's
    uptime_pct: FiniteFloat = Field(default=100.0, ge=0, le=100)
    isolation: Isolation | None = None


class Registration(HostInfo):
    """A host's info, with a join token for a name not registered yet (see services.hostnodes.register:
    a registered name is re-registered with the host's own agent token as the bearer, or an admin key)."""

    join_token: Annotated[SafeStr, Field(min_length=1, max_length=200)] | None = None


class Registered(FromServer):
    hostnode_id: str
    agent_token: str
    heartbeat_interval_seconds: float | None = None  # the server names it; None from an older server


# --- heartbeat ------------------------------------------------------------------------------------


class MetricSample(FromAgent):
    instance_id: Id
    values: dict[Annotated[SafeStr, Field(min_length=1, max_length=64)], FiniteFloat] = Field(
        max_length=MAX_METRIC_VALUES)


class Heartbeat(FromAgent):
    """Liveness, with a metrics sample per running instance. (An instance whose workload ended is
    reported by its own `stopped` transition, with its exit status, not through the heartbeat.)"""

    metrics: list[MetricSample] = Field(default_factory=list, max_length=MAX_METRIC_SAMPLES)


class HeartbeatAck(FromServer):
    status: str
    server_time: str
    heartbeat_interval_seconds: float | None = None


# --- assignments ----------------------------------------------------------------------------------


class PortMapping(FromServer):
    internal_port: Port
    external_port: Port


class Volume(FromServer):
    name: str
    mount_path: AbsolutePath
    readonly: bool = False


class Assignment(FromServer):
    """One instance this host should run (or stop, or remove), as the server wants it now."""

    instance_id: str
    name: str
    desired: Desired
    status: Status
    image: str
    project_id: str = ""
    cmd: list[str] | None = None
    entrypoint: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)
    gpu_indices: list[int] = Field(default_factory=list)
    vcpus: int = 1
    memory_gb: int = 1
    disk_gb: int = 1
    ports: list[PortMapping] = Field(default_factory=list)
    ssh_port: Port | None = None
    ssh_keys: list[str] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    cloud_init: dict[str, Any] | None = None
    grace_seconds: int = 60
    force: bool = False


class Task(FromServer):
    """A user's request of a running instance (exec, logs), for its agent to carry out."""

    id: str
    kind: Literal["exec", "logs"]
    instance_id: str
    params: dict[str, Any] = Field(default_factory=dict)


class Assignments(FromServer):
    version: int
    server_id: str | None = None  # changes when the server restarts: the agent heartbeats at once
    assignments: list[Assignment] = Field(default_factory=list)
    tasks: list[Task] = Field(default_factory=list)


# --- reports --------------------------------------------------------------------------------------


class TransitionReport(FromAgent):
    status: ReportedStatus
    failure_reason: Annotated[SafeStr, Field(max_length=1000)] | None = None
    exit_code: Int32 | None = None
    exit_message: Annotated[SafeStr, Field(max_length=500)] | None = None


class TransitionAck(FromServer):
    status: Status


class TaskResult(FromAgent):
    """An exec's exit code and output, a logs read's lines and cursor, or why the agent could not."""

    exit_code: Int32 | None = None
    stdout: Annotated[SafeStr, Field(max_length=MAX_TASK_OUTPUT_CHARS)] | None = None
    stderr: Annotated[SafeStr, Field(max_length=MAX_TASK_OUTPUT_CHARS)] | None = None
    lines: list[Annotated[SafeStr, Field(max_length=MAX_LOG_LINE_CHARS)]] | None = Field(
        default=None, max_length=MAX_LOG_LINES)
    cursor: Annotated[SafeStr, Field(max_length=1000)] | None = None
    error: Annotated[SafeStr, Field(max_length=2000)] | None = None


class TaskAck(FromServer):
    status: Literal["done"]


def fit_text(text: str, limit: int, *, keep_end: bool = True) -> str:
    """Text the server accepts: NUL and lone surrogates replaced, at most `limit` characters."""
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")
    if len(text) <= limit:
        return text
    return text[-limit:] if keep_end else text[:limit]


def fitted_result(*, exit_code: int | None = None, stdout: str | None = None, stderr: str | None = None,
                  lines: list[str] | None = None, cursor: str | None = None, error: str | None = None
                  ) -> TaskResult:
    """A task result within the protocol's limits: output past them is cut, keeping its end (the
    part a user reads first), rather than the whole result refused."""
    kept = None if lines is None else [fit_text(line, MAX_LOG_LINE_CHARS) for line in lines[-MAX_LOG_LINES:]]
    result = TaskResult(
        exit_code=exit_code, cursor=cursor,
        stdout=None if stdout is None else fit_text(stdout, MAX_TASK_OUTPUT_CHARS),
        stderr=None if stderr is None else fit_text(stderr, MAX_TASK_OUTPUT_CHARS),
        lines=kept, error=None if error is None else fit_text(error, 2000, keep_end=False))
    while kept and len(result.model_dump_json(exclude_none=True).encode()) > MAX_TASK_RESULT_BYTES:
        kept = kept[len(kept) // 4 + 1:]
        result = result.model_copy(update={"lines": kept})
    return result

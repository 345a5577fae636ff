"""Request bodies (strict: unknown fields are errors) and the JSON views of stored objects."""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coldplate.clock import isoformat
from coldplate.db.tables import Hostnode, Instance
from coldplate.domain import catalog, pricing
from coldplate.services.hostnodes import host_prices

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
SSH_KEY = re.compile(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( .*)?$")
Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=6)]
Port = Annotated[int, Field(ge=1, le=65535)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def openssh_public_key(key: str, what: str) -> str:
    if not SSH_KEY.match(key.strip()):
        raise ValueError(f"{what} is not an OpenSSH public key")
    return key.strip()


class SshKeyIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    public_key: str = Field(min_length=1, max_length=16384)

    @field_validator("public_key")
    @classmethod
    def _public_key(cls, key: str) -> str:
        return openssh_public_key(key, "public_key")


class PortIn(Strict):
    internal_port: Port
    external_port: Port | None = None


RESERVED_MOUNTS = ("/", "/workspace", "/proc", "/sys", "/dev", "/etc", "/usr", "/bin", "/sbin", "/lib", "/tmp")
PACKAGE = r"^[A-Za-z0-9][A-Za-z0-9+._:~-]*$"
CLOUD_INIT_MAX_BYTES = 64 * 1024


def absolute_path(path: str, what: str) -> str:
    if not path.startswith("/") or "\0" in path:
        raise ValueError(f"{what} must be an absolute path")
    return posixpath.normpath(path)


class VolumeIn(Strict):
    """A project volume on the host (created on first use, kept after the instance), mounted at mount_path."""

    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    mount_path: str = Field(min_length=2, max_length=1024)
    readonly: bool = False

    @field_validator("mount_path")
    @classmethod
    def _mount_path(cls, path: str) -> str:
        path = absolute_path(path, "mount_path")
        if path in RESERVED_MOUNTS or path.startswith(("/proc/", "/sys/", "/dev/", "/workspace/")):
            raise ValueError(f"mount_path {path} is reserved; choose a path such as /data")
        return path


class WriteFileIn(Strict):
    path: str = Field(min_length=2, max_length=1024)
    content: str = Field(default="", max_length=CLOUD_INIT_MAX_BYTES)
    encoding: Literal["text", "b64", "base64"] = "text"
    permissions: str | None = Field(default=None, pattern=r"^0?[0-7]{3,4}$")
    owner: str | None = Field(default=None, max_length=65, pattern=r"^[a-z_][a-z0-9_-]*(:[a-z_][a-z0-9_-]*)?$")
    append: bool = False

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        return absolute_path(path, "path")

    @model_validator(mode="after")
    def _content(self) -> WriteFileIn:
        if self.encoding != "text":
            try:
                decoded = base64.b64decode(self.content, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"content is not valid base64: {exc}") from exc
        else:
            decoded = self.content.encode()
        if b"\0" in decoded:
            raise ValueError("content must not contain NUL bytes")
        return self


class CloudInitIn(Strict):
    """The cloud-config keys coldplate runs on first boot; other keys are refused, not ignored."""

    runcmd: list[str | list[str]] = Field(default_factory=list, max_length=100)
    packages: list[str | list[str]] = Field(default_factory=list, max_length=200)
    package_update: bool = False
    package_upgrade: bool = False
    write_files: list[WriteFileIn] = Field(default_factory=list, max_length=64)

    @field_validator("runcmd", mode="before")
    @classmethod
    def _runcmd(cls, commands: Any) -> Any:
        """Checked here, item by item, so that an error names `runcmd` rather than a union branch."""
        for i, command in enumerate(commands if isinstance(commands, list) else []):
            argv = isinstance(command, list) and 0 < len(command) <= 256 and all(
                isinstance(a, str) and len(a) <= 8192 for a in command)
            if not (isinstance(command, str) and 0 < len(command) <= 8192) and not argv:
                raise ValueError(f"runcmd[{i}] must be a shell command (a string) or an argv (a list of strings)")
        return commands

    @field_validator("packages", mode="before")
    @classmethod
    def _packages(cls, packages: Any) -> Any:
        for i, package in enumerate(packages if isinstance(packages, list) else []):
            parts = [package] if isinstance(package, str) else package
            if not (isinstance(parts, list) and 1 <= len(parts) <= 2 and (isinstance(package, str) or len(parts) == 2)
                    and all(isinstance(p, str) and len(p) <= 200 and re.match(PACKAGE, p) for p in parts)):
                raise ValueError(f"packages[{i}] must be a package name or a [name, version] pair "
                                 f"(letters, digits and +._:~-)")
        return packages

    @model_validator(mode="after")
    def _size(self) -> CloudInitIn:
        if len(self.model_dump_json()) > CLOUD_INIT_MAX_BYTES:
            raise ValueError(f"cloud_init must be at most {CLOUD_INIT_MAX_BYTES} bytes")
        return self


def cloud_config(value: Any) -> Any:
    """cloud_init as an object, or as a `#cloud-config` YAML document (what other clouds take as user data)."""
    if isinstance(value, str):
        if not value.lstrip().startswith("#cloud-config"):
            raise ValueError("cloud_init must be an object or a YAML document starting with #cloud-config")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"cloud_init is not valid YAML: {exc}") from exc
        return parsed if parsed is not None else {}
    return value


class InstanceCreate(Strict):
    name: str = Field(min_length=1, max_length=63, pattern=NAME_PATTERN)
    gpu: str = Field(min_length=1, max_length=100)
    gpu_count: int = Field(default=1, ge=0, le=64)
    vcpus: int | None = Field(default=None, ge=1, le=1024)
    memory_gb: int | None = Field(default=None, ge=1, le=16384)
    disk_gb: int = Field(default=20, ge=1, le=100_000)
    region: str | None = Field(default=None, max_length=40)
    hostnode_id: str | None = Field(default=None, max_length=40)
    image: str = Field(default="busybox", min_length=1, max_length=500)
    cmd: list[str] | None = Field(default=None, max_length=256)
    entrypoint: list[str] | None = Field(default=None, max_length=256)
    env: dict[str, str] = Field(default_factory=dict)
    ssh_keys: list[str] = Field(default_factory=list, max_length=64)
    ssh_key_ids: list[str] = Field(default_factory=list, max_length=64)
    ports: list[PortIn] = Field(default_factory=list, max_length=32)
    labels: dict[str, str] = Field(default_factory=dict)
    spot: bool = False
    max_price_per_hour: Money | None = None
    duration_hours: int | None = Field(default=None, ge=1, le=168)
    max_hours: float | None = Field(default=None, gt=0, le=8760)
    volumes: list[VolumeIn] = Field(default_factory=list, max_length=16)
    cloud_init: CloudInitIn | None = None

    @field_validator("cloud_init", mode="before")
    @classmethod
    def _cloud_init(cls, value: Any) -> Any:
        return cloud_config(value)

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, volumes: list[VolumeIn]) -> list[VolumeIn]:
        names = [v.name for v in volumes]
        paths = [v.mount_path for v in volumes]
        if len(set(names)) != len(names) or len(set(paths)) != len(paths):
            raise ValueError("volumes must not repeat a name or a mount_path")
        return volumes

    @field_validator("ssh_keys")
    @classmethod
    def _ssh_keys(cls, keys: list[str]) -> list[str]:
        return [openssh_public_key(key, f"ssh_keys[{i}]") for i, key in enumerate(keys)]

    @field_validator("env")
    @classmethod
    def _env(cls, env: dict[str, str]) -> dict[str, str]:
        for name in env:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(f"env name {name!r} is not a valid variable name")
        return env

    @field_validator("ports")
    @classmethod
    def _ports(cls, ports: list[PortIn]) -> list[PortIn]:
        internal = [p.internal_port for p in ports]
        external = [p.external_port for p in ports if p.external_port is not None]
        if len(set(internal)) != len(internal) or len(set(external)) != len(external):
            raise ValueError("ports must not repeat an internal or external port")
        return ports


class InstanceUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=63, pattern=NAME_PATTERN)
    labels: dict[str, str] | None = None


class ActionIn(Strict):
    force: bool = False
    grace_seconds: int | None = Field(default=None, ge=0, le=3600)


class ProjectIn(Strict):
    name: str = Field(min_length=1, max_length=200)


class KeyIn(Strict):
    name: str = Field(min_length=1, max_length=200)
    scopes: list[str] = Field(default_factory=lambda: ["instances:read", "instances:write", "billing:read"],
                              min_length=1)


class JoinTokenIn(Strict):
    name: str = Field(default="agent", min_length=1, max_length=200)


class PricesIn(Strict):
    gpu_per_hour: Money | None = None
    spot_gpu_per_hour: Money | None = None
    vcpu_per_hour: Money | None = None
    memory_gb_per_hour: Money | None = None
    disk_gb_per_hour: Money | None = None

    def micros(self) -> dict[str, int]:
        return {k: pricing.to_micros(v) for k, v in self.model_dump(exclude_none=True).items()}


class HostnodePatch(Strict):
    status: Literal["online", "draining", "maintenance"] | None = None
    prices: PricesIn | None = None


class LocationIn(Strict):
    city: str = Field(default="", max_length=100)
    country: str = Field(default="", max_length=100)


class GpuIn(Strict):
    model: str = Field(default="cpu", max_length=100)
    count: int = Field(default=0, ge=0, le=64)
    memory_mb: int = Field(default=0, ge=0)
    uuids: list[str] = Field(default_factory=list)
    driver_version: str | None = None
    simulated: bool = False


class AgentPrices(Strict):
    gpu_per_hour: Money
    spot_gpu_per_hour: Money
    vcpu_per_hour: Money = Decimal(0)
    memory_gb_per_hour: Money = Decimal(0)
    disk_gb_per_hour: Money = Decimal(0)


class RegisterIn(Strict):
    join_token: str = Field(min_length=1)
    name: str = Field(min_length=1, max_length=200)
    region: str
    location: LocationIn = Field(default_factory=LocationIn)
    gpu: GpuIn = Field(default_factory=GpuIn)
    vcpus: int = Field(ge=1)
    memory_gb: int = Field(ge=1)
    disk_gb: int = Field(ge=1)
    port_range: tuple[Port, Port]
    prices: AgentPrices
    address: str = Field(default="127.0.0.1", max_length=200)
    heartbeat_timeout_seconds: int | None = Field(default=None, ge=1, le=3600)  # None: the server's
    uptime_pct: float = Field(default=100.0, ge=0, le=100)


class ObservedInstance(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    status: str


class MetricIn(Strict):
    instance_id: str = Field(max_length=40)
    values: dict[str, float] = Field(max_length=32)


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # inventory grows with the agent
    instances: list[ObservedInstance] = Field(default_factory=list)
    metrics: list[MetricIn] = Field(default_factory=list, max_length=1000)


class TransitionIn(Strict):
    status: Literal["starting", "ready", "stopped", "terminated", "failed"]
    failure_reason: str | None = Field(default=None, max_length=1000)
    exit_code: int | None = None
    exit_message: str | None = Field(default=None, max_length=500)


class TaskResultIn(Strict):
    exit_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None
    lines: list[str] | None = None
    cursor: str | None = None
    error: str | None = Field(default=None, max_length=2000)


class ExecIn(Strict):
    cmd: list[str] | str = Field(min_length=1)
    timeout: float = Field(default=30, gt=0, le=600)

    def argv(self) -> list[str]:
        return ["sh", "-c", self.cmd] if isinstance(self.cmd, str) else self.cmd


def gpu_view(slug: str, count: int) -> dict[str, Any]:
    gpu = catalog.gpu_type(slug)
    return {"type": gpu.slug, "name": gpu.name, "count": count}


def instance_view(inst: Instance) -> dict[str, Any]:
    ssh = f"ssh root@{inst.ip} -p {inst.ssh_port}" if inst.ip and inst.ssh_port else None
    return {
        "id": inst.id, "name": inst.name, "project_id": inst.project_id, "status": inst.status,
        "status_reason": inst.status_reason, "failure_reason": inst.failure_reason,
        "gpu": gpu_view(inst.gpu_type, inst.gpu_count), "gpu_indices": inst.gpu_indices, "vcpus": inst.vcpus,
        "memory_gb": inst.memory_gb, "disk_gb": inst.disk_gb, "hostnode_id": inst.hostnode_id,
        "region": inst.region, "image": inst.image, "cmd": inst.cmd, "entrypoint": inst.entrypoint,
        "env": inst.env, "labels": inst.labels, "spot": inst.spot, "volumes": inst.volumes,
        "cloud_init": inst.cloud_init,
        "price_per_hour": pricing.format_micros(inst.price_micros),
        "max_price_per_hour": None if inst.max_price_micros is None else pricing.format_micros(inst.max_price_micros),
        "ip": inst.ip, "ports": inst.ports, "ssh_port": inst.ssh_port, "ssh_command": ssh,
        "exit_code": inst.exit_code, "exit_message": inst.exit_message,
        "created_at": isoformat(inst.created_at), "ready_at": isoformat(inst.ready_at),
        "stopped_at": isoformat(inst.stopped_at), "terminated_at": isoformat(inst.terminated_at),
        "expires_at": isoformat(inst.expires_at),
    }


def hostnode_view(host: Hostnode) -> dict[str, Any]:
    ports_total = host.port_hi - host.port_lo + 1
    return {
        "id": host.id, "name": host.name, "region": host.region,
        "location": {"city": host.city, "country": host.country}, "status": host.status,
        "gpu": gpu_view(host.gpu_type, host.gpu_count), "gpus_free": host.gpus_free,
        "gpu_uuids": host.gpu_uuids, "vcpus": host.vcpus, "vcpus_free": host.vcpus - host.vcpus_used,
        "memory_gb": host.memory_gb, "memory_gb_free": host.memory_gb - host.memory_gb_used,
        "disk_gb": host.disk_gb, "disk_gb_free": host.disk_gb - host.disk_gb_used,
        "port_range": [host.port_lo, host.port_hi], "ports_free": ports_total - len(host.ports_used),
        "prices": host_prices(host), "uptime_pct": host.uptime_pct,
        "last_heartbeat_at": isoformat(host.last_heartbeat_at), "created_at": isoformat(host.created_at),
    }

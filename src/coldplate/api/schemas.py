"""Request bodies (strict: unknown fields are errors) and the JSON views of stored objects."""

from __future__ import annotations

import base64
import binascii
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

import yaml
from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from coldplate.checked import REF_PATTERN, AbsolutePath, AwareUtcDatetime, FiniteFloat, SafeStr
from coldplate.clock import isoformat
from coldplate.db.tables import Hostnode
from coldplate.domain import pricing
from coldplate.services.hostnodes import host_prices
from coldplate.views import gpu_view, instance_view

__all__ = ["gpu_view", "instance_view"]  # re-exported: the views moved to coldplate/views.py

NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
SSH_KEY = re.compile(r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/=]+( .*)?$")
Money = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=6)]
Port = Annotated[int, Field(ge=1, le=65535)]
# A path parameter naming a row (an id or a name): anything else cannot name one, and is a 422.
Ref = Annotated[str, Path(pattern=REF_PATTERN)]
Name = Annotated[SafeStr, Field(min_length=1, max_length=200)]
InstanceName = Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)]
# Limits of what an instance carries (docs/api.md lists them).
MAX_ENV = 128
MAX_ENV_NAME = 256
MAX_ENV_VALUE = 32 * 1024
MAX_ENV_BYTES = 64 * 1024
MAX_LABELS = 64
MAX_LABEL_KEY = 63
MAX_LABEL_VALUE = 256
MAX_ARGV = 256
MAX_ARG = 8 * 1024
MAX_ARGV_BYTES = 64 * 1024
EnvName = Annotated[str, Field(min_length=1, max_length=MAX_ENV_NAME, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
EnvValue = Annotated[SafeStr, Field(max_length=MAX_ENV_VALUE)]
LabelKey = Annotated[SafeStr, Field(min_length=1, max_length=MAX_LABEL_KEY)]
LabelValue = Annotated[SafeStr, Field(max_length=MAX_LABEL_VALUE)]
Labels = Annotated[dict[LabelKey, LabelValue], Field(max_length=MAX_LABELS)]
Argv = Annotated[list[Annotated[SafeStr, Field(max_length=MAX_ARG)]], Field(max_length=MAX_ARGV)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def openssh_public_key(key: str, what: str) -> str:
    if not SSH_KEY.match(key.strip()):
        raise ValueError(f"{what} is not an OpenSSH public key")
    return key.strip()


class SshKeyIn(Strict):
    name: Name
    public_key: Annotated[SafeStr, Field(min_length=1, max_length=16384)]

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


class VolumeIn(Strict):
    """A project volume on the host (created on first use, kept after the instance), mounted at mount_path."""

    name: InstanceName
    mount_path: AbsolutePath
    readonly: bool = False

    @field_validator("mount_path")
    @classmethod
    def _mount_path(cls, path: str) -> str:
        if path in RESERVED_MOUNTS or path.startswith(("/proc/", "/sys/", "/dev/", "/workspace/")):
            raise ValueError(f"mount_path {path} is reserved; choose a path such as /data")
        return path


class WriteFileIn(Strict):
    path: AbsolutePath
    content: Annotated[SafeStr, Field(max_length=CLOUD_INIT_MAX_BYTES)] = ""
    encoding: Literal["text", "b64", "base64"] = "text"
    permissions: str | None = Field(default=None, pattern=r"^0?[0-7]{3,4}$")
    owner: str | None = Field(default=None, max_length=65, pattern=r"^[a-z_][a-z0-9_-]*(:[a-z_][a-z0-9_-]*)?$")
    append: bool = False

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

    runcmd: list[SafeStr | list[SafeStr]] = Field(default_factory=list, max_length=100)
    packages: list[SafeStr | list[SafeStr]] = Field(default_factory=list, max_length=200)
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
    name: InstanceName
    gpu: Annotated[SafeStr, Field(min_length=1, max_length=100)]
    gpu_count: int = Field(default=1, ge=0, le=64)
    vcpus: int | None = Field(default=None, ge=1, le=1024)
    memory_gb: int | None = Field(default=None, ge=1, le=16384)
    disk_gb: int = Field(default=20, ge=1, le=100_000)
    region: Annotated[SafeStr, Field(max_length=40)] | None = None
    hostnode_id: Annotated[SafeStr, Field(max_length=40)] | None = None
    image: Annotated[SafeStr, Field(min_length=1, max_length=500)] = "busybox"
    cmd: Argv | None = None
    entrypoint: Argv | None = None
    env: Annotated[dict[EnvName, EnvValue], Field(max_length=MAX_ENV)] = Field(default_factory=dict)
    ssh_keys: list[Annotated[SafeStr, Field(max_length=16384)]] = Field(default_factory=list, max_length=64)
    ssh_key_ids: list[Annotated[SafeStr, Field(min_length=1, max_length=40)]] = Field(default_factory=list,
                                                                                       max_length=64)
    ports: list[PortIn] = Field(default_factory=list, max_length=32)
    labels: Labels = Field(default_factory=dict)
    spot: bool = False
    max_price_per_hour: Money | None = None
    duration_hours: int | None = Field(default=None, ge=1, le=168)
    max_hours: FiniteFloat | None = Field(default=None, gt=0, le=8760)
    volumes: list[VolumeIn] = Field(default_factory=list, max_length=16)
    cloud_init: CloudInitIn | None = None
    budget_limit: Money | None = None

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
        if sum(len(k.encode()) + len(v.encode()) for k, v in env.items()) > MAX_ENV_BYTES:
            raise ValueError(f"env must be at most {MAX_ENV_BYTES} bytes in all (names and values)")
        return env

    @field_validator("cmd", "entrypoint")
    @classmethod
    def _argv(cls, argv: list[str] | None) -> list[str] | None:
        if argv is not None and sum(len(a.encode()) for a in argv) > MAX_ARGV_BYTES:
            raise ValueError(f"must be at most {MAX_ARGV_BYTES} bytes in all")
        return argv

    @field_validator("ports")
    @classmethod
    def _ports(cls, ports: list[PortIn]) -> list[PortIn]:
        internal = [p.internal_port for p in ports]
        external = [p.external_port for p in ports if p.external_port is not None]
        if len(set(internal)) != len(internal) or len(set(external)) != len(external):
            raise ValueError("ports must not repeat an internal or external port")
        return ports


class InstanceUpdate(Strict):
    name: InstanceName | None = None
    labels: Labels | None = None
    budget_limit: Money | None = None  # null clears it


class ActionIn(Strict):
    force: bool = False
    grace_seconds: int | None = Field(default=None, ge=0, le=3600)


class ProjectIn(Strict):
    name: Name


class ProjectBudgetIn(Strict):
    monthly_budget: Money | None = None  # null removes the budget
    on_budget_exceeded: Literal["block_creates", "stop_instances"] | None = None


class KeyIn(Strict):
    name: Name
    scopes: list[Annotated[SafeStr, Field(min_length=1, max_length=100)]] = Field(
        default_factory=lambda: ["instances:read", "instances:write", "billing:read", "webhooks:read",
                                 "webhooks:write"], min_length=1, max_length=32)


class JoinTokenIn(Strict):
    name: Name = "agent"
    expires_at: AwareUtcDatetime | None = None
    expires_in_hours: FiniteFloat | None = Field(default=None, gt=0, le=24 * 366 * 10)
    max_uses: int | None = Field(default=None, ge=1, le=1_000_000)


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


class ExecIn(Strict):
    cmd: Argv | Annotated[SafeStr, Field(max_length=MAX_ARG)] = Field(min_length=1)
    timeout: FiniteFloat = Field(default=30, gt=0, le=600)

    def argv(self) -> list[str]:
        return ["sh", "-c", self.cmd] if isinstance(self.cmd, str) else self.cmd


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
        "sandbox": host.sandbox, "enforced_limits": host.enforced_limits,
        "last_heartbeat_at": isoformat(host.last_heartbeat_at), "created_at": isoformat(host.created_at),
    }

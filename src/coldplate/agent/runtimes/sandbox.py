"""The process runtime's sandbox: what bubblewrap is told, as pure functions of the host's listing.

A workload sees a read-only system (`/usr`, `/bin`, `/lib*`, `/sbin`, `/opt`), an `/etc` built from
an allowlist (no shadow, no host keys) plus a passwd, group, hosts and hostname of its own, its
`/workspace` and volumes, a private `/tmp` and `/run`, a minimal `/dev` with only its own GPUs' nodes,
and a `/proc` of its own PID namespace. It has its own mount, PID, IPC, UTS (hostname = instance
name) and network namespaces (only a loopback: the agent's port forwards and SSH forwards connect
from inside that namespace, see `netns.py`). When the agent is root, bubblewrap sets the sandbox
up as root and `setpriv` then drops to the project's own unprivileged uid with no capabilities and
`no_new_privs`, so nothing inside can remount or signal outside; an agent that is not root runs
bubblewrap in a user namespace as its own (unprivileged) uid. The tenant's environment reaches only
the workload: privileged launchers run with HOST_ENV, and ENV_LOADER reads the instance's env from
ENV_FILE as the last step inside.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt")
ETC_ALLOWED = ("alternatives", "bash.bashrc", "ca-certificates", "ca-certificates.conf", "debian_version",
               "gai.conf", "host.conf", "inputrc", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime",
               "mime.types", "nsswitch.conf", "os-release", "profile", "protocols", "services", "ssl",
               "timezone")
GENERATED_ETC = ("group", "hostname", "hosts", "passwd")  # written per instance by `etc_files`
GPU_CONTROL_NODES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
SETPRIV = "/usr/bin/setpriv"
NSENTER = "nsenter"
ENV_FILE = "/run/coldplate/env"  # the instance's environment, read inside after the privilege drop
# The tenant's env never reaches a process that runs with privilege (bwrap, nsenter, setpriv): an
# LD_PRELOAD naming a file in its workspace would run its code as root. It is loaded last, inside.
ENV_LOADER = ["/bin/sh", "-c", f'. {ENV_FILE} && exec "$@"', "coldplate-env"]
HOST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Mount:
    source: Path
    target: str
    readonly: bool = False


@dataclass(frozen=True)
class Entry:
    """One name in a host directory: a symlink (with its target) or a directory."""

    name: str
    link: str | None = None


def list_entries(directory: str, names: Iterable[str]) -> list[Entry]:
    """Those of `names` that exist in `directory`, as the sandbox binds them."""
    found = []
    for name in names:
        path = os.path.join(directory, name)
        if os.path.islink(path):
            found.append(Entry(name, os.readlink(path)))
        elif os.path.exists(path):
            found.append(Entry(name))
    return found


def gpu_device_nodes(minors: list[int], dev_names: Iterable[str]) -> list[str]:
    """The device nodes (names in /dev) an instance with these GPUs (by device minor number) gets:
    its own `nvidia<N>` and the control devices CUDA needs; nothing at all without a GPU."""
    if not minors:
        return []
    present = set(dev_names)
    own = [f"nvidia{m}" for m in sorted(set(minors)) if f"nvidia{m}" in present]
    return own + [name for name in GPU_CONTROL_NODES if name in present]


def etc_files(*, name: str, uid: int, gid: int) -> dict[str, str]:
    """The instance's own passwd, group, hosts and hostname: no host account is named inside."""
    return {
        "passwd": f"root:x:0:0:root:/workspace:/bin/sh\nworkload:x:{uid}:{gid}:workload:/workspace:/bin/sh\n"
                  "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "group": f"root:x:0:\nworkload:x:{gid}:\nnogroup:x:65534:\n",
        "hosts": f"127.0.0.1\tlocalhost {name}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        "hostname": f"{name}\n",
    }


def env_file(env: dict[str, str]) -> str:
    """The instance's environment as a shell file for ENV_LOADER (names a shell cannot export are left out)."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(env.items()) if NAME.match(name))


@dataclass(frozen=True)
class Identity:
    """Who the workload is on the host: a dedicated uid when the agent is root, else the agent itself."""

    uid: int
    gid: int
    drop: bool  # True: bubblewrap runs as root and setpriv drops to uid/gid; False: a user namespace

    def setpriv(self) -> list[str]:
        if not self.drop:
            return []
        return [SETPRIV, "--reuid", str(self.uid), "--regid", str(self.gid), "--clear-groups",
                "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]


def bwrap_args(*, hostname: str, workspace: Path, etc_dir: Path, env: Path, mounts: list[Mount], devices: list[str],
               system: list[Entry], etc: list[Entry], identity: Identity, dev_dir: Path = Path("/dev")) -> list[str]:
    """The bubblewrap command line, up to (not including) `--`."""
    args = ["bwrap", "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--unshare-cgroup-try",
            "--hostname", hostname, "--as-pid-1"]
    if not identity.drop:
        args += ["--unshare-user", "--uid", str(identity.uid), "--gid", str(identity.gid), "--disable-userns"]
    for entry in system:
        if entry.link is not None:
            args += ["--symlink", entry.link, f"/{entry.name}"]
        else:
            args += ["--ro-bind", f"/{entry.name}", f"/{entry.name}"]
    args += ["--dir", "/etc"]
    for entry in etc:
        if entry.link is not None:
            args += ["--symlink", entry.link, f"/etc/{entry.name}"]
        else:
            args += ["--ro-bind", f"/etc/{entry.name}", f"/etc/{entry.name}"]
    for generated in GENERATED_ETC:
        args += ["--ro-bind", str(etc_dir / generated), f"/etc/{generated}"]
    args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--tmpfs", "/run",
             "--perms", "0755", "--dir", os.path.dirname(ENV_FILE), "--ro-bind", str(env), ENV_FILE,
             "--bind", str(workspace), "/workspace", "--chdir", "/workspace", "--setenv", "HOME", "/workspace"]
    for device in devices:
        args += ["--dev-bind", str(dev_dir / device), f"/dev/{device}"]
    for mount in mounts:
        args += ["--ro-bind" if mount.readonly else "--bind", str(mount.source), mount.target]
    return args


def enter_args(pid: int, identity: Identity) -> list[str]:
    """A command in the namespaces of the running sandbox whose pid 1 has host pid `pid` (exec, SSH):
    the same files, processes, loopback and hostname as the workload, as the workload's uid."""
    user = [] if identity.drop else ["--user", "--preserve-credentials"]
    return [NSENTER, "-t", str(pid), *user, "-m", "-u", "-i", "-n", "-p", "-r", "-w", *identity.setpriv(), *ENV_LOADER]

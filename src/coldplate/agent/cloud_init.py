"""cloud-init's common keys as one POSIX shell script that runs inside the instance on first boot.

The script is the instance's entrypoint wrapper: `sh -c SCRIPT cloud-init <workload argv...>`. On the
first boot it writes `write_files`, updates/upgrades/installs `packages` with whichever package
manager the image has (apt-get, dnf, yum, apk), then runs each `runcmd` in order, all of it printed
to the instance's standard output (its logs, in order) with `cloud-init:` lines between the steps. When every step
succeeded it leaves `<state_dir>/cloud-init.done`, so later boots skip it, and execs the workload.
A step that fails prints what failed and with which exit code, and the script exits with that code:
the runtime sees the workload die during start and fails the instance with that output, so a
failing `runcmd` never hides. The input is the validated `cloud_init` object of the API.
"""

from __future__ import annotations

import base64
import shlex
from typing import Any

DONE_FILE = "cloud-init.done"

PACKAGE_MANAGER = """\
if command -v apt-get >/dev/null 2>&1; then cp_pm=apt
elif command -v dnf >/dev/null 2>&1; then cp_pm=dnf
elif command -v yum >/dev/null 2>&1; then cp_pm=yum
elif command -v apk >/dev/null 2>&1; then cp_pm=apk
else echo "cloud-init: packages need apt-get, dnf, yum or apk, and this image has none" >&2; exit 127
fi
export DEBIAN_FRONTEND=noninteractive
"""

COMMANDS = {  # what each step means for each package manager
    "update": {"apt": "apt-get update", "dnf": "dnf -y makecache", "yum": "yum -y makecache",
               "apk": "apk update"},
    "upgrade": {"apt": "apt-get -y upgrade", "dnf": "dnf -y upgrade", "yum": "yum -y update",
                "apk": "apk upgrade"},
    "install": {"apt": "apt-get install -y --no-install-recommends", "dnf": "dnf -y install",
                "yum": "yum -y install", "apk": "apk add"},
}
VERSION_SEPARATOR = {"apt": "=", "dnf": "-", "yum": "-", "apk": "="}


def printf_literal(data: bytes) -> str:
    """A quoted printf format string that prints exactly `data` (any bytes but NUL)."""
    out = []
    for byte in data:
        char = chr(byte)
        if 32 <= byte < 127 and char not in "\\%'":
            out.append(char)
        else:
            out.append(f"\\{byte:03o}")
    return "'" + "".join(out) + "'"


def file_bytes(entry: dict[str, Any]) -> bytes:
    content = str(entry.get("content", ""))
    if entry.get("encoding", "text") in ("b64", "base64"):
        return base64.b64decode(content)
    return content.encode()


def _check(step: str) -> str:
    """After a step: stop the boot with its exit code and a line that says what failed."""
    return (f'cp_rc=$?; if [ $cp_rc -ne 0 ]; then echo "cloud-init: {step} failed with exit code $cp_rc" >&2; '
            "exit $cp_rc; fi")


def _write_file(index: int, entry: dict[str, Any]) -> list[str]:
    raw_path = str(entry["path"])
    path = shlex.quote(raw_path)
    redirect = ">>" if entry.get("append") else ">"
    lines = [f"echo {shlex.quote(f'cloud-init: write_files[{index}] {raw_path}')}",
             f'mkdir -p "$(dirname {path})" && printf {printf_literal(file_bytes(entry))} {redirect} {path}',
             _check(f"write_files[{index}]")]
    if entry.get("permissions"):
        lines += [f"chmod {shlex.quote(str(entry['permissions']))} {path}", _check(f"write_files[{index}] chmod")]
    if entry.get("owner"):
        lines += [f"chown {shlex.quote(str(entry['owner']))} {path}", _check(f"write_files[{index}] chown")]
    return lines


def _packages(config: dict[str, Any]) -> list[str]:
    packages = config.get("packages") or []
    if not (packages or config.get("package_update") or config.get("package_upgrade")):
        return []
    lines = [PACKAGE_MANAGER.rstrip("\n")]

    def per_manager(step: str, suffix: str = "") -> str:
        arms = " ;; ".join(f"{pm}) {command}{suffix}" for pm, command in COMMANDS[step].items())
        return f'case $cp_pm in {arms} ;; esac'

    if config.get("package_update") or packages:  # as cloud-init does: an install updates the index first
        lines += ["echo 'cloud-init: package_update'", per_manager("update"), _check("package_update")]
    if config.get("package_upgrade"):
        lines += ["echo 'cloud-init: package_upgrade'", per_manager("upgrade"), _check("package_upgrade")]
    if packages:
        names = {pm: " ".join(shlex.quote(p if isinstance(p, str) else sep.join(p)) for p in packages)
                 for pm, sep in VERSION_SEPARATOR.items()}
        arms = " ;; ".join(f"{pm}) {COMMANDS['install'][pm]} {names[pm]}" for pm in COMMANDS["install"])
        lines += [f"echo {shlex.quote('cloud-init: packages ' + names['apt'])}", f"case $cp_pm in {arms} ;; esac",
                  _check("packages")]
    return lines


def _runcmd(index: int, command: str | list[str]) -> list[str]:
    shown = command if isinstance(command, str) else shlex.join(command)
    run = f"sh -c {shlex.quote(command)}" if isinstance(command, str) else shlex.join(command)
    return [f"echo {shlex.quote(f'cloud-init: runcmd[{index}] {shown}')}", f"({run})",
            _check(f"runcmd[{index}] ({shown})")]


def boot_script(config: dict[str, Any], *, state_dir: str) -> str:
    """The wrapper script; `"$@"` is the workload's argv (nothing: the script just ends)."""
    done = shlex.quote(f"{state_dir}/{DONE_FILE}")
    steps: list[str] = []
    for index, entry in enumerate(config.get("write_files") or []):
        steps += _write_file(index, entry)
    steps += _packages(config)
    for index, command in enumerate(config.get("runcmd") or []):
        steps += _runcmd(index, command)
    body = "\n".join(f"  {line}" for line in steps)
    # One stream for the whole boot, so its lines keep their order in the logs (Docker keeps
    # stdout and stderr apart and may interleave them out of order); the workload keeps both.
    return (f"if [ ! -e {done} ]; then {{\n"
            "  echo 'cloud-init: first boot'\n"
            f"{body}\n"
            f"  mkdir -p {shlex.quote(state_dir)} && : > {done}\n"
            "  echo 'cloud-init: finished'\n"
            "} 2>&1; fi\n"
            'if [ $# -gt 0 ]; then exec "$@"; fi\n')


def wrap(config: dict[str, Any] | None, argv: list[str], *, state_dir: str) -> list[str]:
    """The argv that runs the boot script, then the workload; the workload alone without cloud-init."""
    if not config:
        return argv
    return ["sh", "-c", boot_script(config, state_dir=state_dir), "cloud-init", *argv]

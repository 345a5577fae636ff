"""The cloud-init boot script, run by a real POSIX shell in a temporary directory."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

from coldplate.agent.cloud_init import boot_script, printf_literal, wrap


def boot(config: dict[str, Any], tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    state = tmp_path / "state"
    return subprocess.run(wrap(config, list(argv), state_dir=str(state)), cwd=tmp_path, capture_output=True,
                          text=True, timeout=30)


def test_write_files_then_runcmd_in_order_and_then_the_workload(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "app.conf"
    binary = bytes(range(1, 256)) + b"%s\\n'"
    config = {
        "write_files": [
            {"path": str(target), "content": "a = 1\nquote = 'it''s' %d \\n\n", "permissions": "0600"},
            {"path": str(target), "content": "appended\n", "append": True},
            {"path": str(tmp_path / "blob"), "content": base64.b64encode(binary).decode(), "encoding": "b64"},
        ],
        "runcmd": ["cat etc/app.conf | wc -l", ["echo", "two words", "$HOME"]],
    }
    done = boot(config, tmp_path, "echo", "workload")
    assert done.returncode == 0, done.stderr
    assert target.read_text() == "a = 1\nquote = 'it''s' %d \\n\nappended\n"
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert (tmp_path / "blob").read_bytes() == binary
    lines = done.stdout.splitlines()
    assert lines[0] == "cloud-init: first boot"
    assert lines[-5:] == ["3", "cloud-init: runcmd[1] echo 'two words' '$HOME'", "two words $HOME",
                          "cloud-init: finished", "workload"]


def test_runs_once(tmp_path: Path) -> None:
    config = {"runcmd": ["echo ran >> count"]}
    assert boot(config, tmp_path, "true").returncode == 0
    second = boot(config, tmp_path, "echo", "second boot")
    assert second.stdout == "second boot\n"
    assert (tmp_path / "count").read_text() == "ran\n"


def test_failing_runcmd_stops_the_boot_with_its_code_and_says_which(tmp_path: Path) -> None:
    config = {"runcmd": ["echo before", "echo broken >&2; exit 7", "echo never"]}
    failed = boot(config, tmp_path, "echo", "workload")
    assert failed.returncode == 7
    assert "never" not in failed.stdout and "workload" not in failed.stdout
    assert failed.stdout.splitlines()[-1] == "cloud-init: runcmd[1] (echo broken >&2; exit 7) failed with exit code 7"
    assert not (tmp_path / "state" / "cloud-init.done").exists()  # the next boot tries again


def test_packages_without_a_package_manager_fail_readably(tmp_path: Path) -> None:
    env = {"PATH": str(tmp_path / "empty-bin")}
    os.mkdir(tmp_path / "empty-bin")
    script = boot_script({"packages": ["curl", ["jq", "1.6"]]}, state_dir=str(tmp_path / "state"))
    failed = subprocess.run(["/bin/sh", "-c", script, "cloud-init"], env=env, capture_output=True, text=True)
    assert failed.returncode == 127
    assert "packages need apt-get, dnf, yum or apk" in failed.stdout


def test_packages_use_the_image_package_manager(tmp_path: Path) -> None:
    """A fake `apk` on PATH records what it is asked to do, as the real one would be asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apk").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path / 'apk.calls'}\n")
    (bin_dir / "apk").chmod(0o755)
    (bin_dir / "mkdir").symlink_to("/bin/mkdir")  # nothing else: the host's own apt-get must not be found
    script = boot_script({"packages": ["curl", ["jq", "1.6"]], "package_upgrade": True},
                         state_dir=str(tmp_path / "state"))
    env = {"PATH": str(bin_dir)}
    done = subprocess.run(["/bin/sh", "-c", script, "cloud-init"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "apk.calls").read_text().splitlines() == ["update", "upgrade", "add curl jq=1.6"]


def test_without_cloud_init_the_argv_is_unchanged() -> None:
    assert wrap(None, ["python", "serve.py"], state_dir="/workspace/.coldplate") == ["python", "serve.py"]
    assert wrap({}, ["a"], state_dir="/x") == ["a"]


def test_printf_literal_round_trips_every_byte_but_nul() -> None:
    data = bytes(range(1, 256))
    out = subprocess.run(["/bin/sh", "-c", f"printf {printf_literal(data)}"], capture_output=True).stdout
    assert out == data

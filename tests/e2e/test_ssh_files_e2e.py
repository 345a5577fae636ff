"""scp and sftp with the OpenSSH client into an instance, on both runtimes (issue 9): the sftp
subsystem runs sftp-server inside the instance, so files land in its /workspace as its user and
the host's files stay out of reach. The hostnode says what isolates its instances."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx

from coldplate import Client
from tests.e2e.conftest import Cluster
from tests.e2e.test_runtimes_e2e import real_agent  # noqa: F401  (the fixture, for both runtimes)

OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
           "-o", "LogLevel=ERROR"]


def test_scp_and_sftp(real_agent: tuple[Cluster, str], tmp_path: Path) -> None:  # noqa: F811
    cluster, image = real_agent
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    client = Client(cluster.url, cluster.admin_key)
    host = client.hostnodes()[0]
    listed = httpx.get(f"{cluster.url}/v1/hostnodes/{host.id}",
                       headers={"Authorization": f"Bearer {cluster.admin_key}"}).json()
    assert listed["sandbox"] == ("bubblewrap" if image == "host" else "docker")
    assert {"memory_gb", "vcpus"} <= set(listed["enforced_limits"])
    inst = client.create_instance(name="files", gpu="h100", image=image, cmd=["sleep", "3600"], vcpus=1, memory_gb=1,
                                  ssh_keys=[(tmp_path / "id_ed25519.pub").read_text()])
    ready = client.wait_instance(inst.id, status="ready", timeout=60)
    assert ready.ssh_port is not None
    target, port = f"root@{ready.ip}", str(ready.ssh_port)
    upload = tmp_path / "up.txt"
    upload.write_text("sent by scp\n" * 1000)

    sent = subprocess.run(["scp", "-P", port, "-i", str(key), *OPTIONS, str(upload), f"{target}:/workspace/up.txt"],
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent
    assert client.exec_instance(inst.id, "wc -l < /workspace/up.txt").stdout.strip() == "1000"

    batch = tmp_path / "batch"
    batch.write_text("cd /workspace\nput up.txt via-sftp.txt\nget via-sftp.txt down.txt\nls -1\n")
    ran = subprocess.run(["sftp", "-P", port, "-i", str(key), *OPTIONS, "-b", str(batch), target],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert ran.returncode == 0, ran
    assert (tmp_path / "down.txt").read_text() == upload.read_text()
    assert "via-sftp.txt" in ran.stdout and "up.txt" in ran.stdout
    owner = client.exec_instance(inst.id, "busybox stat -c %u /workspace/via-sftp.txt; id -u")
    file_uid, own_uid = owner.stdout.split()  # (a failure here shows what exec printed)
    assert file_uid == own_uid  # written by the instance's own user, from inside the instance

    secret = tmp_path / "batch-secret"
    secret.write_text(f"get /etc/shadow {tmp_path / 'shadow'}\n")
    stolen = subprocess.run(["sftp", "-P", port, "-i", str(key), *OPTIONS, "-b", str(secret), target],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert stolen.returncode != 0 and "not found" in stolen.stderr.lower(), stolen
    assert not (tmp_path / "shadow").exists()

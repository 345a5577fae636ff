"""The escape suite (issue 9): from inside a tenant's instance, on a real server and agent with the
docker and the process runtime, every way out that was once measured open must fail, and fail for
the reason isolation gives (no such file, no such process, read-only, refused), not by accident.
Each attempt that must fail has a control beside it that shows the same command works where it
is allowed, so a broken command cannot pass as a blocked escape."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import psutil
import pytest

from coldplate import Client
from coldplate.client import Instance
from tests.e2e.conftest import Cluster, free_port_block
from tests.e2e.test_runtimes_e2e import real_agent  # noqa: F401  (the fixture, for both runtimes)

SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes"]
NO_FILE = "No such file or directory"


def tenant(cluster: Cluster, name: str) -> Client:
    admin = {"Authorization": f"Bearer {cluster.admin_key}"}
    project = httpx.post(f"{cluster.url}/v1/projects", json={"name": name}, headers=admin).json()
    key = httpx.post(f"{cluster.url}/v1/projects/{project['id']}/keys", json={"name": "k"}, headers=admin).json()
    return Client(cluster.url, key["key"])


def sh(client: Client, inst: Instance, script: str) -> tuple[int, str, str]:
    done = client.exec_instance(inst.id, script, timeout=20)
    return done.exit_code, done.stdout, done.stderr


def host_pid_of(marker: str) -> int:
    """The host pid of the process whose command line carries `marker` (what an attacker would aim at)."""
    found = [p.info["pid"] for p in psutil.process_iter(["pid", "cmdline"])
             if marker in " ".join(p.info["cmdline"] or []) and "sh" in (p.info["cmdline"] or [""])[0]]
    assert found, marker
    return min(found)


@pytest.fixture
def host_secret_port() -> Iterator[int]:
    """A service on the host's loopback (like PostgreSQL or the agent) that no tenant may reach."""
    port = free_port_block(1)
    server = socket.create_server(("127.0.0.1", port))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"host-secret\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    stop.set()
    thread.join()
    server.close()


def test_a_tenant_cannot_escape(real_agent: tuple[Cluster, str], tmp_path: Path,  # noqa: F811
                                host_secret_port: int) -> None:
    cluster, image = real_agent
    runtime = "process" if image == "host" else "docker"
    victim_client, attacker_client = tenant(cluster, "victim"), tenant(cluster, "attacker")
    marker, word = f"victim-{uuid.uuid4().hex[:8]}", f"plum-{uuid.uuid4().hex[:8]}"
    hidden, own = free_port_block(1), free_port_block(1)  # unpublished ports inside the instances
    victim = victim_client.create_instance(
        name="victim", gpu="h100", image=image, vcpus=1, memory_gb=1, env={"SECRET_WORD": word},
        cmd=["sh", "-c", f"echo {word} > /workspace/secret; mkdir -p /workspace/www; echo {word} > /workspace/www/i; "
                         f"busybox httpd -p {hidden} -h /workspace/www; while true; do sleep 3600; done # {marker}"])
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    attacker = attacker_client.create_instance(
        name="attacker", gpu="h100", image=image, vcpus=1, memory_gb=1,
        ssh_keys=[(tmp_path / "id_ed25519.pub").read_text()],
        cmd=["sh", "-c", f"mkdir -p /workspace/www; echo mine > /workspace/www/i; "
                         f"busybox httpd -p {own} -h /workspace/www; exec sleep 3600"])
    victim = victim_client.wait_instance(victim.id, status="ready", timeout=60)
    attacker = attacker_client.wait_instance(attacker.id, status="ready", timeout=60)
    agent_dir, server_dir = cluster.data_dir / "agent", cluster.data_dir / "data"
    victim_pid = host_pid_of(marker)

    # identity: its own hostname; no capability that could remount, raw sockets in neither runtime
    code, out, _ = sh(attacker_client, attacker, "hostname; grep CapEff /proc/self/status")
    assert out.splitlines()[0] == "attacker"
    caps = int(out.split()[-1], 16)
    assert not caps & (1 << 21) and not caps & (1 << 13)  # CAP_SYS_ADMIN, CAP_NET_RAW
    if runtime == "process":
        assert caps == 0
        code, out, _ = sh(attacker_client, attacker, "id -u")
        assert int(out) >= 900_000  # an unprivileged uid of its own on the host
    host = attacker_client.hostnodes()[0]
    remapped = "userns" in host.enforced_limits  # a Docker engine with --userns-remap (the hostnode says)
    if runtime == "docker":  # and says truly: the engine's own account
        assert remapped == ("name=userns" in docker.from_env().info()["SecurityOptions"])
    if remapped:  # its root is root only inside: an unprivileged uid on the host
        code, out, _ = sh(attacker_client, attacker, "id -u; cat /proc/self/uid_map")
        uid, inside, outside, _count = (int(n) for n in out.split())
        assert uid == 0 == inside and outside >= 1000, out

    # host files: a root-only file, the admin key, the database, the agent's SSH host key
    assert Path("/etc/shadow").exists() and (server_dir / "admin-key").exists()
    assert (agent_dir / "ssh_host_ed25519_key").exists()
    for path in ("/etc/shadow", server_dir / "admin-key", server_dir / "coldplate.db",
                 agent_dir / "ssh_host_ed25519_key", agent_dir / "instances" / victim.id / "process.json",
                 agent_dir / "instances" / victim.id / "workspace" / "secret"):
        code, out, err = sh(attacker_client, attacker, f"cat {path}")
        assert code != 0 and NO_FILE in err and out == "", (path, out, err)
    host_only = ("/root", "/home", "/var", "/srv", "/mnt") if runtime == "process" else ("/home", "/var", "/srv")
    for folder in (*host_only, str(cluster.data_dir)):  # (a container's image may have its own /root, /mnt)
        code, out, err = sh(attacker_client, attacker, f"ls {folder}")
        assert code != 0 and NO_FILE in err, (folder, out, err)

    # another tenant's processes, env and files through /proc: not in this PID namespace
    code, out, _ = sh(attacker_client, attacker, "busybox ps -o pid,args")
    assert marker not in out and "coldplate" not in out
    pids = [int(p) for p in re.findall(r"^\s*(\d+)", out, re.M)]
    assert pids and max(pids) < 100, out  # only its own few, numbered from 1
    assert sh(victim_client, victim, "cat /workspace/secret")[1].strip() == word  # control: the victim can
    for path in (f"/proc/{victim_pid}/environ", f"/proc/{victim_pid}/root/workspace/secret",
                 f"/proc/{victim_pid}/cwd/secret"):
        code, out, err = sh(attacker_client, attacker, f"cat {path}")
        assert code != 0 and NO_FILE in err and word not in out, (path, out, err)
    code, out, _ = sh(attacker_client, attacker, "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'")
    assert word not in out

    # signal another tenant's workload: no such process, and the victim lives on
    code, out, err = sh(attacker_client, attacker, f"kill -9 {victim_pid}")
    assert code != 0 and re.search(r"No such process|can't kill", err), err
    assert psutil.pid_exists(victim_pid) and sh(victim_client, victim, "echo alive")[1] == "alive\n"

    # remount and write outside /workspace: not permitted, and nothing appears on the host
    denied = r"permission denied|operation not permitted|must be superuser"
    code, out, err = sh(attacker_client, attacker, "busybox mount -o remount,rw /proc")
    assert code != 0 and re.search(denied, err, re.I), err
    if runtime == "process":  # root in a user namespace of its own: the host's read-only binds stay locked
        code, out, err = sh(attacker_client, attacker, "unshare -Urm mount -o remount,rw,bind /usr")
        assert code != 0 and re.search(denied, err, re.I), err
    host_file = Path("/usr/lib/openssh/sftp-server")  # bound read-only into both: /usr, or /.coldplate/sftp
    size = host_file.stat().st_size
    attempts = ["echo x >> /usr/lib/openssh/sftp-server", "touch /usr/escape"] if runtime == "process" \
        else ["echo x >> /.coldplate/sftp/sftp-server"]
    two_barriers = runtime == "process" or remapped
    refusal = "Read-only file system|Permission denied" if two_barriers else "Read-only file system"
    for attempt in attempts:  # (an unprivileged host uid owns no system file: two barriers, either answers)
        code, out, err = sh(attacker_client, attacker, attempt)
        assert code != 0 and re.search(refusal, err), (attempt, err)
    assert host_file.stat().st_size == size and not Path("/usr/escape").exists()
    assert sh(attacker_client, attacker, "touch /workspace/mine && echo ok")[1] == "ok\n"  # control

    # another tenant's unpublished port: unreachable; the victim itself reaches it (control)
    fetch = "printf 'GET /i HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 3 {host} {port}"
    reached = sh(victim_client, victim, fetch.format(host="127.0.0.1", port=hidden))
    assert reached[1].strip().endswith(word), reached
    hosts = ["127.0.0.1"]
    if runtime == "docker":
        hosts.append(sh(victim_client, victim, "hostname -i")[1].split()[0])
    for host in hosts:
        code, out, err = sh(attacker_client, attacker, fetch.format(host=host, port=hidden))
        assert code != 0 and word not in out and re.search(r"refused|timed out|unreachable", err), (host, err)

    # ssh -L (direct-tcpip) reaches the instance's own loopback, never the host's
    ssh = [*(attacker.ssh_command or "").split(), "-i", str(key), *SSH_OPTIONS]
    mine = subprocess.run([*ssh, "-o", "LogLevel=ERROR", "-W", f"127.0.0.1:{own}"], input="GET /i HTTP/1.0\r\n\r\n",
                          capture_output=True, text=True, timeout=30)
    assert "mine" in mine.stdout, mine  # control: its own unpublished port, through the forward
    with socket.create_connection(("127.0.0.1", host_secret_port)) as conn:  # control: the service answers
        assert conn.recv(100) == b"host-secret\n"
    stolen = subprocess.run([*ssh, "-o", "LogLevel=VERBOSE", "-W", f"127.0.0.1:{host_secret_port}"], input="",
                            capture_output=True, text=True, timeout=30)
    assert "host-secret" not in stolen.stdout
    assert stolen.returncode != 0 and "not reachable from the instance" in stolen.stderr, stolen

"""The process runtime's sandbox as pure functions: which device nodes, mounts, /etc files and
privilege drop a workload gets (no GPU, no bubblewrap and no root needed to check these)."""

from __future__ import annotations

from pathlib import Path

from coldplate.agent.runtimes import sandbox
from coldplate.agent.runtimes.base import gpu_env
from coldplate.agent.runtimes.sandbox import Entry, Identity, Mount

H100_HOST_DEV = ["null", "zero", "nvidia0", "nvidia1", "nvidia2", "nvidia3", "nvidiactl", "nvidia-uvm",
                 "nvidia-uvm-tools", "nvidia-modeset", "nvidia-caps", "nvme0n1", "kvm"]


def test_only_the_allocated_gpus_and_the_control_devices() -> None:
    assert sandbox.gpu_device_nodes([2], H100_HOST_DEV) == [
        "nvidia2", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset"]
    assert sandbox.gpu_device_nodes([3, 0], H100_HOST_DEV)[:2] == ["nvidia0", "nvidia3"]
    assert "nvidia-caps" not in sandbox.gpu_device_nodes([0, 1, 2, 3], H100_HOST_DEV)


def test_no_gpu_means_no_nvidia_device_at_all() -> None:
    assert sandbox.gpu_device_nodes([], H100_HOST_DEV) == []


def test_a_gpu_whose_node_is_missing_is_not_invented() -> None:
    assert sandbox.gpu_device_nodes([7], ["nvidia0", "nvidiactl"]) == ["nvidiactl"]
    assert sandbox.gpu_device_nodes([0], []) == []  # a host with simulated GPUs


def test_cuda_numbers_isolated_gpus_from_zero() -> None:
    assert gpu_env([2, 5], isolated=True)["CUDA_VISIBLE_DEVICES"] == "0,1"
    assert gpu_env([2, 5])["CUDA_VISIBLE_DEVICES"] == "2,5"
    assert gpu_env([], isolated=True)["NVIDIA_VISIBLE_DEVICES"] == "void"


def args(identity: Identity, devices: list[str] | None = None, mounts: list[Mount] | None = None) -> list[str]:
    return sandbox.bwrap_args(
        hostname="box", workspace=Path("/data/instances/i/workspace"), etc_dir=Path("/data/instances/i/etc"),
        env=Path("/data/instances/i/env"),
        mounts=mounts or [], devices=devices or [],
        system=[Entry("usr"), Entry("bin", "usr/bin"), Entry("lib64", "usr/lib64"), Entry("opt")],
        etc=[Entry("ld.so.cache"), Entry("os-release", "../usr/lib/os-release")], identity=identity)


def pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


def test_the_sandbox_sees_a_minimal_read_only_system() -> None:
    argv = args(Identity(900_001, 900_001, drop=True))
    assert pairs(argv, "--ro-bind")[:2] == [("/usr", "/usr"), ("/opt", "/opt")]
    assert ("usr/bin", "/bin") in pairs(argv, "--symlink")
    bound = {target for _source, target in pairs(argv, "--ro-bind") + pairs(argv, "--bind")}
    assert bound == {"/usr", "/opt", "/etc/ld.so.cache", "/etc/group", "/etc/hostname", "/etc/hosts", "/etc/passwd",
                     "/workspace", sandbox.ENV_FILE}
    assert not any(t.startswith(("/home", "/root", "/var", "/srv", "/mnt", "/etc/shadow", "/etc/ssh"))
                   for t in bound)
    assert ("/data/instances/i/etc/passwd", "/etc/passwd") in pairs(argv, "--ro-bind")
    for private in ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net"):
        assert private in argv
    assert argv[argv.index("--hostname") + 1] == "box"
    assert "--dev-bind" not in argv  # no GPU: no device node beyond bubblewrap's minimal /dev


def test_gpus_and_volumes_are_bound_where_asked() -> None:
    argv = args(Identity(1000, 1000, drop=False), devices=["nvidia1", "nvidiactl"],
                mounts=[Mount(Path("/v/a"), "/data"), Mount(Path("/v/b"), "/ro", readonly=True)])
    assert pairs(argv, "--dev-bind") == [("/dev/nvidia1", "/dev/nvidia1"), ("/dev/nvidiactl", "/dev/nvidiactl")]
    assert ("/v/a", "/data") in pairs(argv, "--bind") and ("/v/b", "/ro") in pairs(argv, "--ro-bind")


def test_a_root_agent_drops_to_the_projects_uid_without_capabilities() -> None:
    identity = Identity(900_004, 900_004, drop=True)
    argv = args(identity)
    assert "--unshare-user" not in argv  # bubblewrap mounts as root, then setpriv drops everything
    drop = identity.setpriv()
    assert drop[0] == sandbox.SETPRIV and drop[-1] == "--"
    assert {"--reuid", "900004", "--regid", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all",
            "--no-new-privs"} <= set(drop)
    enter = sandbox.enter_args(4242, identity)
    assert enter[:3] == ["nsenter", "-t", "4242"] and enter[-len(drop) - 4:-4] == drop
    assert enter[-4:] == sandbox.ENV_LOADER  # the tenant's env is loaded after the drop, inside
    assert {"-m", "-u", "-i", "-n", "-p"} <= set(enter)


def test_an_unprivileged_agent_uses_a_user_namespace() -> None:
    identity = Identity(1000, 1000, drop=False)
    argv = args(identity)
    assert argv[argv.index("--unshare-user"):argv.index("--unshare-user") + 6] == [
        "--unshare-user", "--uid", "1000", "--gid", "1000", "--disable-userns"]
    assert identity.setpriv() == []
    assert "--user" in sandbox.enter_args(1, identity)


def test_etc_is_an_allowlist_without_secrets(tmp_path: Path) -> None:
    for name in ("passwd", "shadow", "gshadow", "ld.so.cache", "ssl"):
        (tmp_path / name).write_text("x")
    (tmp_path / "ssh").mkdir()
    (tmp_path / "os-release").symlink_to("../usr/lib/os-release")
    found = sandbox.list_entries(str(tmp_path), sandbox.ETC_ALLOWED)
    assert found == [Entry("ld.so.cache"), Entry("os-release", "../usr/lib/os-release"), Entry("ssl")]
    assert not {"shadow", "gshadow", "ssh", "passwd", "sudoers", "machine-id"} & set(sandbox.ETC_ALLOWED)


def test_generated_etc_names_no_host_account() -> None:
    files = sandbox.etc_files(name="trainer", uid=900_002, gid=900_002)
    assert "workload:x:900002:900002:" in files["passwd"] and files["hostname"] == "trainer\n"
    assert "trainer" in files["hosts"].splitlines()[0]
    assert sorted(files) == sorted(sandbox.GENERATED_ETC)


def test_the_tenants_env_is_a_file_read_inside() -> None:
    text = sandbox.env_file({"WORD": "it's $HOME; `id`", "LD_PRELOAD": "/x.so", "bad-name": "x", "PATH": "/bin"})
    assert text.splitlines() == ["export LD_PRELOAD=/x.so", "export PATH=/bin",
                                 "export WORD='it'\"'\"'s $HOME; `id`'"]
    assert sandbox.HOST_ENV.keys() == {"PATH"}

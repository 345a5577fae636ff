"""The candidate query leaves out hosts that cannot hold the request's vCPUs, memory or disk, so
its few slots go to hosts that can (found replaying the openb trace: 8 full hosts ahead of a free
one made a create fail)."""

from __future__ import annotations

from coldplate.clock import FakeClock
from coldplate.services import hostnodes, instances, projects
from coldplate.services.hostnodes import HostSpec
from coldplate.services.instances import CANDIDATES, InstanceRequest
from coldplate.state import AppState


def _spec(name: str, *, gpus: int, vcpus: int) -> HostSpec:
    return HostSpec(name=name, region="eu", city="", country="", address="127.0.0.1", gpu_model="H100",
                    gpu_count=gpus, gpu_memory_mb=0, gpu_uuids=[], vcpus=vcpus, memory_gb=512, disk_gb=4000,
                    port_lo=20000, port_hi=20999, prices_micros={"gpu_per_hour": 1, "spot_gpu_per_hour": 1})


def test_hosts_without_the_vcpus_do_not_take_the_candidate_slots(state: AppState, clock: FakeClock) -> None:
    with state.tx() as session:
        _, join = projects.create_join_token(session, clock=clock, name="t")
        project = projects.create_project(session, clock=clock, name="p")
        for i in range(CANDIDATES + 1):  # fewest GPUs free: first in the candidate order
            hostnodes.register(session, clock=clock, join_token=join, spec=_spec(f"tight{i}", gpus=1, vcpus=2))
        roomy, _ = hostnodes.register(session, clock=clock, join_token=join, spec=_spec("roomy", gpus=8, vcpus=64))
    with state.tx() as session:
        inst = instances.create(session, clock=clock, project_id=project.id,
                                req=InstanceRequest(name="a", gpu="H100", vcpus=8))
        assert inst.hostnode_id == roomy.id

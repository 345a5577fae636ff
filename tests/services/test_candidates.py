"""The candidate query leaves out hosts that cannot hold the request's vCPUs, memory or disk, so
its few slots go to hosts that can (found replaying the openb trace: 8 full hosts ahead of a free
one made a create fail)."""

from __future__ import annotations

from coldplate import protocol
from coldplate.clock import FakeClock
from coldplate.services import hostnodes, instances, join_tokens, projects
from coldplate.services.instances import CANDIDATES, InstanceRequest
from coldplate.state import AppState
from tests.hosts import host_info


def _spec(name: str, *, gpus: int, vcpus: int) -> protocol.HostInfo:
    return host_info(name, gpus=gpus, vcpus=vcpus, memory_gb=512, disk_gb=4000, ports=(20000, 20999),
                     price="0.000001", spot="0.000001")


def test_hosts_without_the_vcpus_do_not_take_the_candidate_slots(state: AppState, clock: FakeClock) -> None:
    with state.tx() as session:
        _, join = join_tokens.create(session, clock=clock, name="t")
        project = projects.create_project(session, clock=clock, name="p")
        for i in range(CANDIDATES + 1):  # fewest GPUs free: first in the candidate order
            hostnodes.register(session, clock=clock, join_token=join, spec=_spec(f"tight{i}", gpus=1, vcpus=2),
                               credential=None)
        roomy, _ = hostnodes.register(session, clock=clock, join_token=join, spec=_spec("roomy", gpus=8, vcpus=64),
                                      credential=None)
    with state.tx() as session:
        inst = instances.create(session, clock=clock, project_id=project.id,
                                req=InstanceRequest(name="a", gpu="H100", vcpus=8))
        assert inst.hostnode_id == roomy.id

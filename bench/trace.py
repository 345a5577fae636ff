"""Placement quality on a real trace: the Alibaba openb GPU cluster (1,213 nodes, 6,212 GPUs).

    python bench/trace.py [--traces /work/shared/traces] [--seeds 5]

Tasks arrive in creation order and are placed one by one, never leaving (as in the simulator of
Weng et al., ATC 2023, whose published figures sit beside ours in the traces' README); a task no
node can take is skipped. When the trace runs out before the arrived demand reaches 130 % of
capacity it is replayed from the start (names made unique). The figure is the share of the
cluster's GPUs allocated when the arrived GPU demand reaches 100 % of capacity.

- coldplate: the service's path (services/instances.create): the candidate query's choice (the
  CANDIDATES cheapest nodes with the GPUs free and the vCPUs and memory the task names, fewest
  free GPUs first), ranked by `domain.placement.rank`, allocated by `domain.placement.allocate`.
  Every node has the same price here (the trace has none), so the ranking decides.
- Random: a node drawn uniformly among those that fit (mean over seeds).
- BestFit: the fitting node left with the least free GPUs, then vCPUs, then memory (the
  simulator's best-fit scores remaining resources the same way).

Fractional GPU tasks (`gpu_milli` < 1000, a share of one GPU) are left out: coldplate does not
share a GPU between instances, so such a task would be a whole-GPU request. With
`--whole-fractional` they are placed as one whole GPU each and count as one GPU of demand; then
every policy but Random allocates about 99 % and the comparison says little. CPU-only
tasks (`num_gpu` 0) take vCPUs and memory on GPU nodes, as they do in the trace. `gpu_spec` (a
GPU model constraint) is honoured where a task has one. vCPUs are in milli-cores and memory in
MiB (the domain's arithmetic does not care about units).
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coldplate.domain import placement
from coldplate.services.instances import CANDIDATES

TRACES = Path("/work/shared/traces")
PRICE = 1_000_000  # the trace has no prices: every node costs the same


@dataclass
class Node:
    id: str
    model: str
    gpu_count: int
    cpu: int
    memory: int
    gpus_used: set[int]
    cpu_used: int = 0
    memory_used: int = 0

    @property
    def gpus_free(self) -> int:
        return self.gpu_count - len(self.gpus_used)

    def snapshot(self) -> placement.HostSnapshot:
        return placement.HostSnapshot(
            id=self.id, gpu_count=self.gpu_count, gpus_used=frozenset(self.gpus_used), vcpus=self.cpu,
            vcpus_used=self.cpu_used, memory_gb=self.memory, memory_gb_used=self.memory_used, disk_gb=0,
            disk_gb_used=0, port_lo=1, port_hi=0, ports_used=frozenset(), price_micros=PRICE, uptime_pct=100.0)


@dataclass(frozen=True)
class Task:
    gpus: int  # whole GPUs
    cpu: int
    memory: int
    models: frozenset[str]  # empty: any GPU model

    def demand(self) -> placement.Demand:
        return placement.Demand(gpu_count=self.gpus, vcpus=self.cpu, memory_gb=self.memory, disk_gb=0, ports=0)


def load_nodes(path: Path) -> list[Node]:
    with path.open() as f:
        return [Node(id=row["sn"], model=row["model"], gpu_count=int(row["gpu"]), cpu=int(row["cpu_milli"]),
                     memory=int(row["memory_mib"]), gpus_used=set()) for row in csv.DictReader(f)]


def load_tasks(path: Path, *, whole_fractional: bool = False) -> list[Task]:
    with path.open() as f:
        rows = list(csv.DictReader(f))  # in creation order (multigpu50 has no creation_time column)
    tasks = []
    for row in rows:
        gpus = int(row["num_gpu"])
        if gpus > 0 and int(row["gpu_milli"]) < 1000 and not whole_fractional:
            continue
        spec = row.get("gpu_spec") or ""
        tasks.append(Task(gpus=gpus, cpu=int(row["cpu_milli"]), memory=int(row["memory_mib"]),
                          models=frozenset(m for m in spec.split("|") if m)))
    return tasks


def _fits(node: Node, task: Task) -> bool:
    return (node.gpus_free >= task.gpus and node.cpu - node.cpu_used >= task.cpu
            and node.memory - node.memory_used >= task.memory and (not task.models or node.model in task.models))


Policy = Callable[[list[Node], Task], Node | None]


def coldplate_policy(nodes: list[Node], task: Task) -> Node | None:
    """What services/instances.create does: the candidate query (the same filter and order, in
    Python: GPUs, vCPUs and memory free; ORDER BY price, gpus_free; LIMIT CANDIDATES), then
    placement.rank over the candidates."""
    pool = [n for n in nodes if _fits(n, task)]
    pool.sort(key=lambda n: n.gpus_free)  # prices are equal here
    demand = task.demand()
    ranked = placement.rank((n.snapshot(), demand) for n in pool[:CANDIDATES])
    return _by_id(pool, ranked[0][0].id) if ranked else None


def _by_id(nodes: list[Node], node_id: str) -> Node:
    return next(n for n in nodes if n.id == node_id)


def random_policy(rng: random.Random) -> Policy:
    def choose(nodes: list[Node], task: Task) -> Node | None:
        fitting = [n for n in nodes if _fits(n, task)]
        return rng.choice(fitting) if fitting else None
    return choose


def best_fit_policy(nodes: list[Node], task: Task) -> Node | None:
    fitting = [n for n in nodes if _fits(n, task)]
    if not fitting:
        return None
    return min(fitting, key=lambda n: (n.gpus_free - task.gpus, n.cpu - n.cpu_used - task.cpu,
                                       n.memory - n.memory_used - task.memory))


def _place(node: Node, task: Task) -> None:
    alloc = placement.allocate(node.snapshot(), task.demand())
    node.gpus_used.update(alloc.gpu_indices)
    node.cpu_used += task.cpu
    node.memory_used += task.memory


@dataclass
class Result:
    allocated_at_100: float  # share of GPUs allocated when arrived demand = capacity
    placed: int
    seconds: float


def replay(nodes: list[Node], tasks: list[Task], policy: Policy) -> Result:
    capacity = sum(n.gpu_count for n in nodes)
    arrived = allocated = placed = 0
    start = time.perf_counter()
    for _ in range(10):  # replayed from the start while arrived demand is below capacity
        for task in tasks:
            arrived += task.gpus
            node = policy(nodes, task)
            if node is not None:
                _place(node, task)
                allocated += task.gpus
                placed += 1
            if arrived >= capacity:
                return Result(allocated / capacity, placed, time.perf_counter() - start)
    raise SystemExit("the trace never reached 100 % of capacity")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=Path, default=TRACES)
    parser.add_argument("--seeds", type=int, default=3, help="Random: runs averaged")
    parser.add_argument("--whole-fractional", action="store_true", help="place fractional tasks as whole GPUs")
    args = parser.parse_args(argv)
    node_file = args.traces / "openb_node_list_gpu_node.csv"
    nodes = load_nodes(node_file)
    fractional = "placed as whole GPUs" if args.whole_fractional else "left out"
    print(f"openb cluster: {len(nodes)} nodes, {sum(n.gpu_count for n in nodes)} GPUs; share of GPUs allocated "
          f"when arrived demand = 100 % of capacity; fractional-GPU tasks {fractional}; Random: mean of {args.seeds}")
    print(f"{'trace':<12} {'coldplate':>10} {'BestFit':>10} {'Random':>10} {'vs BestFit':>11} {'vs Random':>10}"
          f" {'placements/s':>13}")
    for trace in ("default", "multigpu50"):
        tasks = load_tasks(args.traces / f"openb_pod_list_{trace}.csv", whole_fractional=args.whole_fractional)
        ours = replay(load_nodes(node_file), tasks, coldplate_policy)
        best = replay(load_nodes(node_file), tasks, best_fit_policy)
        rand = statistics.mean(replay(load_nodes(node_file), tasks, random_policy(random.Random(seed))).allocated_at_100
                               for seed in range(args.seeds))
        rate = ours.placed / ours.seconds  # coldplate's replay: candidate selection + rank + allocate
        print(f"{trace:<12} {ours.allocated_at_100:>10.1%} {best.allocated_at_100:>10.1%} {rand:>10.1%}"
              f" {(ours.allocated_at_100 - best.allocated_at_100) * 100:>+10.1f}pp"
              f" {(ours.allocated_at_100 - rand) * 100:>+9.1f}pp {rate:>13.0f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

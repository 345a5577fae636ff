from coldplate.domain.placement import (
    Demand,
    HostSnapshot,
    allocate,
    default_share,
    fits,
    rank,
    shortfall,
    stranded,
    usable_gpus,
)


def host(id: str, *, gpus: int = 8, used: set[int] | None = None, price: int = 1, uptime: float = 100.0,
         ports: tuple[int, int] = (10000, 10009), ports_used: set[int] | None = None) -> HostSnapshot:
    return HostSnapshot(id=id, gpu_count=gpus, gpus_used=frozenset(used or ()), vcpus=64, vcpus_used=0,
                        memory_gb=512, memory_gb_used=0, disk_gb=1000, disk_gb_used=0, port_lo=ports[0],
                        port_hi=ports[1], ports_used=frozenset(ports_used or ()), price_micros=price,
                        uptime_pct=uptime)


D2 = Demand(gpu_count=2, vcpus=8, memory_gb=32, disk_gb=20, ports=1)


def test_rank_by_price_then_best_fit_then_uptime() -> None:
    cheap_roomy = host("a", price=1)
    cheap_tight = host("b", price=1, used={0, 1, 2, 3, 4, 5})
    dear = host("c", price=5)
    cheap_tight_flaky = host("d", price=1, used={0, 1, 2, 3, 4, 5}, uptime=90.0)
    order = [h.id for h, _ in rank([(dear, D2), (cheap_roomy, D2), (cheap_tight_flaky, D2), (cheap_tight, D2)])]
    assert order == ["b", "d", "a", "c"]


def test_hosts_that_do_not_fit_are_dropped() -> None:
    full = host("full", used=set(range(7)))
    no_ports = host("np", ports=(10000, 10000), ports_used={10000})
    assert shortfall(full, D2) == "GPUs (2 asked, 1 free)"
    assert shortfall(no_ports, D2) == "ports (1 asked, 0 free)"
    assert shortfall(host("cpu"), Demand(gpu_count=1, vcpus=65, memory_gb=1, disk_gb=1, ports=1)) \
        == "vCPUs (65 asked, 64 free)"
    assert shortfall(host("mem"), Demand(gpu_count=1, vcpus=1, memory_gb=513, disk_gb=1, ports=1)) \
        == "memory (513 GB asked, 512 GB free)"
    assert shortfall(host("disk"), Demand(gpu_count=1, vcpus=1, memory_gb=1, disk_gb=1001, ports=1)) \
        == "disk (1001 GB asked, 1000 GB free)"
    assert shortfall(host("ok"), D2) is None
    assert rank([(full, D2), (no_ports, D2)]) == []


def test_allocate_takes_lowest_free_indices_and_ports() -> None:
    h = host("a", used={0, 2}, ports_used={10000})
    alloc = allocate(h, Demand(gpu_count=2, vcpus=1, memory_gb=1, disk_gb=1, ports=2, fixed_ports=(10009,)))
    assert alloc.gpu_indices == (1, 3)
    assert alloc.ports == (10001, 10002, 10009)


def test_fixed_port_must_be_free_and_in_range() -> None:
    h = host("a", ports_used={10005})
    assert not fits(h, Demand(gpu_count=1, vcpus=1, memory_gb=1, disk_gb=1, ports=1, fixed_ports=(10005,)))
    assert not fits(h, Demand(gpu_count=1, vcpus=1, memory_gb=1, disk_gb=1, ports=1, fixed_ports=(20000,)))


def test_default_share() -> None:
    assert default_share(64, 2, 8, minimum=2) == 16
    assert default_share(64, 0, 0, minimum=2) == 2


def _with(h: HostSnapshot, *, vcpus_used: int = 0, memory_used: int = 0) -> HostSnapshot:
    return HostSnapshot(**{**h.__dict__, "vcpus_used": vcpus_used, "memory_gb_used": memory_used})


def test_a_placement_that_would_strand_gpus_goes_elsewhere() -> None:
    """64 vCPUs for 8 GPUs: 8 per GPU. On `tight` a 1-GPU, 24-vCPU request would leave 2 GPUs
    with 6 vCPUs between them; best fit alone would pick it (fewer GPUs left)."""
    tight = _with(host("tight", used={0, 1, 2, 3, 4}), vcpus_used=34)
    roomy = host("roomy", used={0, 1, 2, 3})
    heavy = Demand(gpu_count=1, vcpus=24, memory_gb=8, disk_gb=1, ports=1)
    assert stranded(tight, heavy) == 2 and stranded(roomy, heavy) == 0
    assert [h.id for h, _ in rank([(tight, heavy), (roomy, heavy)])] == ["roomy", "tight"]
    light = Demand(gpu_count=1, vcpus=8, memory_gb=8, disk_gb=1, ports=1)  # strands nothing: best fit decides
    assert [h.id for h, _ in rank([(roomy, light), (tight, light)])] == ["tight", "roomy"]


def test_a_cpu_only_request_goes_where_no_gpu_loses_its_share() -> None:
    gpus_free = host("free")
    gpus_taken = host("taken", used=set(range(8)))
    cpu_job = Demand(gpu_count=0, vcpus=40, memory_gb=16, disk_gb=1, ports=1)
    assert stranded(gpus_free, cpu_job) == 5 and stranded(gpus_taken, cpu_job) == 0
    assert [h.id for h, _ in rank([(gpus_free, cpu_job), (gpus_taken, cpu_job)])] == ["taken", "free"]
    assert usable_gpus(gpus_free, 8, 64, 512) == 8 and usable_gpus(gpus_free, 8, 20, 512) == 2


def test_price_still_comes_before_stranding() -> None:
    dear_taken = host("dear", used=set(range(8)), price=9)
    cheap_free = host("cheap", price=1)
    cpu_job = Demand(gpu_count=0, vcpus=40, memory_gb=16, disk_gb=1, ports=1)
    assert [h.id for h, _ in rank([(dear_taken, cpu_job), (cheap_free, cpu_job)])] == ["cheap", "dear"]

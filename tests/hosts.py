"""What a test host registers as: one `protocol.HostInfo` builder for the service-level tests."""

from __future__ import annotations

from coldplate import protocol


def host_info(name: str, *, gpus: int = 8, gpu: str = "H100", region: str = "eu", vcpus: int | None = None,
              memory_gb: int | None = None, disk_gb: int = 2000, ports: tuple[int, int] = (20000, 20099),
              price: str = "2.00", spot: str = "1.00", disk_price: str = "0", address: str = "127.0.0.1",
              heartbeat_timeout_s: int = 30) -> protocol.HostInfo:
    return protocol.HostInfo(
        name=name, region=region, address=address, location=protocol.Location(city="Frankfurt", country="DE"),
        gpu=protocol.Gpu(model=gpu, count=gpus), vcpus=vcpus or 16 * max(gpus, 1),
        memory_gb=memory_gb or 128 * max(gpus, 1), disk_gb=disk_gb, port_range=ports,
        prices=protocol.Prices.model_validate({"gpu_per_hour": price, "spot_gpu_per_hour": spot,
                                                "disk_gb_per_hour": disk_price}),
        heartbeat_timeout_seconds=heartbeat_timeout_s,
    )

"""coldplate: a self-hosted GPU cloud. `coldplate.Client` and `coldplate.AsyncClient` are the SDK."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Client", "AsyncClient", "__version__"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "AsyncClient"):
        from coldplate import client

        return getattr(client, name)
    raise AttributeError(name)

"""The coldplate Python SDK: `Client` (sync) and `AsyncClient`, typed models and errors."""

from coldplate.client.async_ import AsyncClient
from coldplate.client.errors import (
    AuthError,
    BudgetExceededError,
    ColdplateError,
    IdempotencyConflictError,
    InvalidStateError,
    NoCapacityError,
    NotFoundError,
    ValidationError,
    WaitTimeoutError,
)
from coldplate.client.models import (
    ApiKey,
    Costs,
    GpuType,
    Hostnode,
    Instance,
    InstanceEvent,
    LedgerEntry,
    Offer,
    Project,
    Region,
)
from coldplate.client.sync import Client

__all__ = [
    "AsyncClient", "Client", "ColdplateError", "AuthError", "IdempotencyConflictError", "InvalidStateError",
    "NoCapacityError", "NotFoundError", "ValidationError", "WaitTimeoutError", "ApiKey", "GpuType", "Hostnode",
    "Instance", "InstanceEvent", "Offer", "Project", "Region", "BudgetExceededError", "Costs", "LedgerEntry",
]

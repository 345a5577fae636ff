"""The coldplate Python SDK: `Client` (sync) and `AsyncClient`, typed models and errors."""

from coldplate.client.async_ import AsyncClient
from coldplate.client.errors import (
    AgentError,
    AuthError,
    BudgetExceededError,
    ColdplateError,
    ConflictError,
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
from coldplate.client.webhooks import Delivery, Event, Webhook

__all__ = [
    "AsyncClient", "Client", "ColdplateError", "AgentError", "AuthError", "ConflictError",
    "IdempotencyConflictError", "InvalidStateError",
    "NoCapacityError", "NotFoundError", "ValidationError", "WaitTimeoutError", "ApiKey", "GpuType", "Hostnode",
    "Instance", "InstanceEvent", "Offer", "Project", "Region", "Delivery", "Event", "Webhook",
    "BudgetExceededError", "Costs", "LedgerEntry",
]

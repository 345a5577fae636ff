"""The instance lifecycle: one transition table, nothing else decides what may follow what."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    STOPPED = "stopped"
    TERMINATED = "terminated"
    FAILED = "failed"


class Desired(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    TERMINATED = "terminated"


S = Status

TRANSITIONS: dict[Status, frozenset[Status]] = {
    S.PENDING: frozenset({S.PROVISIONING, S.FAILED, S.TERMINATED}),
    S.PROVISIONING: frozenset({S.STARTING, S.DRAINING, S.FAILED, S.TERMINATED}),
    S.STARTING: frozenset({S.READY, S.DRAINING, S.FAILED}),
    S.READY: frozenset({S.DRAINING, S.STOPPED, S.FAILED}),  # → stopped: the workload ended by itself
    S.DRAINING: frozenset({S.STOPPED, S.TERMINATED, S.FAILED}),
    S.STOPPED: frozenset({S.PROVISIONING, S.TERMINATED, S.FAILED}),
    S.FAILED: frozenset({S.TERMINATED}),
    S.TERMINATED: frozenset(),
}

FINAL: frozenset[Status] = frozenset({S.TERMINATED})
# States whose instance holds GPUs on its hostnode.
HOLDS_GPUS: frozenset[Status] = frozenset({S.PROVISIONING, S.STARTING, S.READY, S.DRAINING})
# States whose instance still holds its disk and ports on the hostnode.
HOLDS_DISK: frozenset[Status] = HOLDS_GPUS | {S.STOPPED}
# States an agent is told about.
ASSIGNED: frozenset[Status] = HOLDS_GPUS | {S.STOPPED}

# What a user action asks for, from which states.
ACTION_SOURCES: dict[str, frozenset[Status]] = {
    "stop": frozenset({S.PROVISIONING, S.STARTING, S.READY}),
    "start": frozenset({S.STOPPED}),
    "restart": frozenset({S.READY}),
    "terminate": frozenset({S.PENDING, S.PROVISIONING, S.STARTING, S.READY, S.DRAINING, S.STOPPED, S.FAILED}),
}


class InvalidTransition(Exception):
    def __init__(self, current: Status, target: Status) -> None:
        super().__init__(f"cannot go from {current} to {target}")
        self.current = current
        self.target = target


def can_transition(current: Status, target: Status) -> bool:
    return target in TRANSITIONS[current]


def check_transition(current: Status, target: Status) -> None:
    if not can_transition(current, target):
        raise InvalidTransition(current, target)


def action_allowed(action: str, current: Status) -> bool:
    return current in ACTION_SOURCES[action]

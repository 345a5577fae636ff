"""The instance lifecycle: one transition table, nothing else decides what may follow what."""

from __future__ import annotations

from dataclasses import dataclass
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


# --- What a failure does ---------------------------------------------------------------------------
# Whoever fails an instance (its agent, the host-lost loop): once a terminate was acknowledged the
# instance ends terminated; the failure is recorded on it, but it does not undo what was answered.
FAILURE_ENDS: dict[Desired, Status] = {
    Desired.RUNNING: S.FAILED, Desired.STOPPED: S.FAILED, Desired.TERMINATED: S.TERMINATED,
}


# --- What an agent's report does -----------------------------------------------------------------
# The agent says what it observed; what the instance becomes also depends on what was asked of it.
# The first rule that matches decides; a report no rule names moves the instance to what was reported.


@dataclass(frozen=True)
class ReportRule:
    reported: Status
    then: Status
    why: str
    current: frozenset[Status] | None = None  # None: from any status
    desired: Desired | None = None  # None: whatever was asked
    restart_pending: bool | None = None  # None: either
    reason: str | None = None  # the status_reason it records; None keeps the current one
    set_desired: Desired | None = None
    reprovision: bool = False  # provision again on the same host once `then` is reached
    via: Status | None = None  # a step on the way to `then`, taken first: its own transition and event

    def matches(self, current: Status, desired: Desired, restart_pending: bool, reported: Status) -> bool:
        return (self.reported is reported and (self.current is None or current in self.current)
                and (self.desired is None or self.desired is desired)
                and (self.restart_pending is None or self.restart_pending is restart_pending))


REPORT_RULES: tuple[ReportRule, ...] = (
    ReportRule(S.FAILED, S.FAILED, reason="failed",
               why="the workload could not start or run (FAILURE_ENDS: terminated if a terminate was asked)"),
    ReportRule(S.STOPPED, S.TERMINATED, desired=Desired.TERMINATED,
               why="the agent stopped it and we asked for more: it is deleted next"),
    ReportRule(S.STOPPED, S.STOPPED, current=frozenset({S.READY}), reason="exited", set_desired=Desired.STOPPED,
               why="nobody asked: the workload ended by itself, so it stays stopped"),
    ReportRule(S.STOPPED, S.STOPPED, restart_pending=True, reprovision=True,
               why="a pending restart provisions again on the same host"),
    ReportRule(S.READY, S.READY, current=frozenset({S.PROVISIONING}), via=S.STARTING,
               why="a start so quick that the agent did not say `starting` first (agent QUIET_START_S): "
                   "starting, then ready, two transitions and two events in one transaction"),
)


def report_rule(current: Status, desired: Desired, restart_pending: bool, reported: Status) -> ReportRule | None:
    """What a report of `reported` does; None for a repeat of the current status (agents retry)."""
    if reported is current:
        return None
    for rule in REPORT_RULES:
        if rule.matches(current, desired, restart_pending, reported):
            return rule
    return ReportRule(reported, reported, why="the agent moved it on")


# --- What a terminate does, by status ---------------------------------------------------------------


class TerminateStep(StrEnum):
    NOW = "now"  # nothing runs: terminated at once
    DRAIN = "drain"  # it runs: drain with desired=terminated, the agent stops and deletes it
    REDIRECT = "redirect"  # already draining: only `desired` changes (an `instance.desired_changed` event)


TERMINATE_STEPS: dict[Status, TerminateStep] = {
    S.PENDING: TerminateStep.NOW, S.STOPPED: TerminateStep.NOW, S.FAILED: TerminateStep.NOW,
    S.PROVISIONING: TerminateStep.DRAIN, S.STARTING: TerminateStep.DRAIN, S.READY: TerminateStep.DRAIN,
    S.DRAINING: TerminateStep.REDIRECT,
}
DESIRED_CHANGED = "instance.desired_changed"


# --- Hostnodes ---------------------------------------------------------------------------------------


class HostStatus(StrEnum):
    ONLINE = "online"  # takes new instances
    DRAINING = "draining"  # an admin keeps new instances off it; its instances run on
    MAINTENANCE = "maintenance"  # the same, for work on the machine
    OFFLINE = "offline"  # its agent stopped heartbeating; its instances fail after a grace period


H = HostStatus
HOST_TRANSITIONS: dict[HostStatus, frozenset[HostStatus]] = {
    H.ONLINE: frozenset({H.DRAINING, H.MAINTENANCE, H.OFFLINE}),
    H.DRAINING: frozenset({H.ONLINE, H.MAINTENANCE, H.OFFLINE}),
    H.MAINTENANCE: frozenset({H.ONLINE, H.DRAINING, H.OFFLINE}),
    H.OFFLINE: frozenset({H.ONLINE, H.DRAINING, H.MAINTENANCE}),
}
# What an admin may set; offline → online only by the agent (a heartbeat or a registration).
ADMIN_HOST_STATUSES: tuple[HostStatus, ...] = (H.ONLINE, H.DRAINING, H.MAINTENANCE)
# Hosts whose heartbeat is watched (an offline one is already known to be silent).
WATCHED_HOST_STATUSES: frozenset[HostStatus] = frozenset({H.ONLINE, H.DRAINING, H.MAINTENANCE})


def host_change_allowed(current: HostStatus, target: HostStatus, *, by_agent: bool) -> bool:
    """May a hostnode go from `current` to `target`? Staying put is always allowed."""
    if current is target:
        return True
    if current is H.OFFLINE and target is H.ONLINE:
        return by_agent
    return target in HOST_TRANSITIONS[current]


# --- The agent's decision, per assigned instance ----------------------------------------------------


class Busy(StrEnum):
    IDLE = "idle"  # nothing of the agent's in flight on this instance
    STARTING = "starting"  # a start is in flight (it may be a long cloud-init)
    WORKING = "working"  # some other work is in flight


class AgentAction(StrEnum):
    NOTHING = "nothing"
    START = "start"  # start the workload (idempotent), report starting/ready or failed
    STOP = "stop"  # stop it, keep its disk, report stopped
    TERMINATE = "terminate"  # stop it, delete it, report terminated
    OPEN_SSH = "open_ssh"  # the workload runs but its SSH endpoint does not (the agent restarted)
    REPORT_EXITED = "report_exited"  # it ended by itself: report stopped with its exit status


@dataclass(frozen=True)
class Plan:
    action: AgentAction
    cancel_busy: bool = False  # cancel the work in flight first (a stop wins over a start still booting)


def plan(status: Status, desired: Desired, running: bool | None, busy: Busy, *, ssh_missing: bool = False) -> Plan:
    """What the agent does for one assigned instance. `running`: whether its workload runs (None: not
    known at this point). Never two pieces of work at once on an instance: while something is in
    flight only a stop or terminate may replace a start."""
    if status in (S.PROVISIONING, S.STARTING) and desired is Desired.RUNNING:
        # `starting` with nothing in flight: our `ready` report was lost (or the agent restarted);
        # start is idempotent in every runtime, so start again and report again.
        action = AgentAction.START
    elif status is S.DRAINING:
        action = AgentAction.TERMINATE if desired is Desired.TERMINATED else AgentAction.STOP
    elif status is S.READY and desired is Desired.RUNNING and running is False:
        action = AgentAction.REPORT_EXITED
    elif status is S.READY and ssh_missing:
        action = AgentAction.OPEN_SSH
    else:
        return Plan(AgentAction.NOTHING)
    if busy is Busy.IDLE:
        return Plan(action)
    if busy is Busy.STARTING and action in (AgentAction.STOP, AgentAction.TERMINATE):
        return Plan(action, cancel_busy=True)
    return Plan(AgentAction.NOTHING)

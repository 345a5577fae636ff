import pytest

from coldplate.domain.lifecycle import (
    ACTION_SOURCES,
    FAILURE_ENDS,
    FINAL,
    HOST_TRANSITIONS,
    REPORT_RULES,
    TERMINATE_STEPS,
    TRANSITIONS,
    AgentAction,
    Busy,
    Desired,
    HostStatus,
    InvalidTransition,
    Plan,
    Status,
    TerminateStep,
    action_allowed,
    can_transition,
    check_transition,
    host_change_allowed,
    plan,
    report_rule,
)

S, D, A = Status, Desired, AgentAction


def test_every_status_has_a_row() -> None:
    assert set(TRANSITIONS) == set(Status)


def test_terminated_is_final_and_reached_from_everywhere_but_itself_and_the_running_states() -> None:
    assert TRANSITIONS[Status.TERMINATED] == frozenset()
    assert FINAL == {Status.TERMINATED}
    for status in (Status.PENDING, Status.PROVISIONING, Status.DRAINING, Status.STOPPED, Status.FAILED):
        assert can_transition(status, Status.TERMINATED)
    # a running workload must drain first
    assert not can_transition(Status.READY, Status.TERMINATED)
    assert not can_transition(Status.STARTING, Status.TERMINATED)
    # a workload that ends by itself leaves a stopped instance (its disk kept), not a failed one
    assert can_transition(Status.READY, Status.STOPPED)
    assert not can_transition(Status.STARTING, Status.STOPPED)


def test_happy_path_is_allowed_in_order() -> None:
    path = [Status.PROVISIONING, Status.STARTING, Status.READY, Status.DRAINING, Status.STOPPED,
            Status.PROVISIONING, Status.STARTING, Status.READY, Status.DRAINING, Status.TERMINATED]
    for a, b in zip(path, path[1:], strict=False):
        check_transition(a, b)


def test_illegal_transition_raises() -> None:
    with pytest.raises(InvalidTransition):
        check_transition(Status.STOPPED, Status.READY)
    with pytest.raises(InvalidTransition):
        check_transition(Status.TERMINATED, Status.PROVISIONING)
    with pytest.raises(InvalidTransition):
        check_transition(Status.FAILED, Status.READY)


def test_actions() -> None:
    assert action_allowed("stop", Status.READY)
    assert not action_allowed("stop", Status.STOPPED)
    assert action_allowed("start", Status.STOPPED)
    assert not action_allowed("start", Status.READY)
    assert action_allowed("restart", Status.READY)
    assert not action_allowed("terminate", Status.TERMINATED)
    assert set(ACTION_SOURCES) == {"stop", "start", "restart", "terminate"}


# --- report rules ---


def test_a_repeated_report_does_nothing() -> None:
    for status in Status:
        assert report_rule(status, D.RUNNING, False, status) is None


def test_stopped_while_a_terminate_is_asked_terminates() -> None:
    rule = report_rule(S.DRAINING, D.TERMINATED, False, S.STOPPED)
    assert rule is not None and rule.then is S.TERMINATED and rule.set_desired is None


def test_an_unrequested_stop_of_a_ready_workload_is_exited_and_stays_stopped() -> None:
    rule = report_rule(S.READY, D.RUNNING, False, S.STOPPED)
    assert rule is not None
    assert (rule.then, rule.reason, rule.set_desired, rule.reprovision) == (S.STOPPED, "exited", D.STOPPED, False)


def test_a_pending_restart_reprovisions_once_stopped() -> None:
    rule = report_rule(S.DRAINING, D.RUNNING, True, S.STOPPED)
    assert rule is not None and rule.then is S.STOPPED and rule.reprovision
    plain = report_rule(S.DRAINING, D.STOPPED, False, S.STOPPED)
    assert plain is not None and plain.then is S.STOPPED and not plain.reprovision and plain.reason is None


def test_a_failure_report_fails_with_its_reason() -> None:
    rule = report_rule(S.STARTING, D.RUNNING, False, S.FAILED)
    assert rule is not None and rule.then is S.FAILED and rule.reason == "failed"


def test_an_acknowledged_terminate_wins_over_any_failure() -> None:
    assert FAILURE_ENDS[D.TERMINATED] is S.TERMINATED
    assert FAILURE_ENDS[D.RUNNING] is S.FAILED and FAILURE_ENDS[D.STOPPED] is S.FAILED
    assert set(FAILURE_ENDS) == set(Desired)
    assert can_transition(S.DRAINING, S.TERMINATED)  # where a terminated-desired instance is


def test_other_reports_move_the_instance_to_what_was_reported() -> None:
    for current, reported in ((S.PROVISIONING, S.STARTING), (S.STARTING, S.READY), (S.DRAINING, S.TERMINATED)):
        rule = report_rule(current, D.RUNNING, False, reported)
        assert rule is not None and rule.then is reported and rule.reason is None


def test_every_report_rule_leads_where_the_table_allows() -> None:
    # where each rule can apply: its own `current`, or draining for a drain's outcome
    for rule in REPORT_RULES:
        for current in rule.current or {S.DRAINING}:
            steps = [current, *([rule.via] if rule.via else []), rule.then]
            assert all(can_transition(a, b) for a, b in zip(steps, steps[1:], strict=False)), rule


def test_ready_reported_while_provisioning_goes_through_starting() -> None:
    rule = report_rule(S.PROVISIONING, D.RUNNING, False, S.READY)
    assert rule is not None and (rule.via, rule.then, rule.reason) == (S.STARTING, S.READY, None)
    assert not can_transition(S.PROVISIONING, S.READY)  # the table itself is unchanged
    for current in (S.STARTING, S.DRAINING):  # no other status skips a step
        other = report_rule(current, D.RUNNING, False, S.READY)
        assert other is not None and other.via is None


# --- terminate ---


def test_terminate_steps_by_status() -> None:
    assert set(TERMINATE_STEPS) == set(ACTION_SOURCES["terminate"])
    assert {s for s, step in TERMINATE_STEPS.items() if step is TerminateStep.NOW} == {S.PENDING, S.STOPPED, S.FAILED}
    assert TERMINATE_STEPS[S.DRAINING] is TerminateStep.REDIRECT
    for status, step in TERMINATE_STEPS.items():
        target = S.TERMINATED if step is TerminateStep.NOW else S.DRAINING
        if step is not TerminateStep.REDIRECT:
            assert can_transition(status, target), status


# --- hostnodes ---


def test_host_status_table() -> None:
    assert set(HOST_TRANSITIONS) == set(HostStatus)
    assert host_change_allowed(HostStatus.ONLINE, HostStatus.OFFLINE, by_agent=True)
    assert host_change_allowed(HostStatus.ONLINE, HostStatus.MAINTENANCE, by_agent=False)
    assert host_change_allowed(HostStatus.MAINTENANCE, HostStatus.ONLINE, by_agent=False)
    assert host_change_allowed(HostStatus.ONLINE, HostStatus.ONLINE, by_agent=False)  # staying put


def test_only_the_agent_brings_an_offline_host_online() -> None:
    assert not host_change_allowed(HostStatus.OFFLINE, HostStatus.ONLINE, by_agent=False)
    assert host_change_allowed(HostStatus.OFFLINE, HostStatus.ONLINE, by_agent=True)
    assert host_change_allowed(HostStatus.OFFLINE, HostStatus.MAINTENANCE, by_agent=False)


# --- the agent's plan ---


@pytest.mark.parametrize(("status", "desired", "expected"), [
    (S.PROVISIONING, D.RUNNING, A.START), (S.STARTING, D.RUNNING, A.START),
    (S.DRAINING, D.STOPPED, A.STOP), (S.DRAINING, D.RUNNING, A.STOP), (S.DRAINING, D.TERMINATED, A.TERMINATE),
    (S.READY, D.RUNNING, A.NOTHING), (S.STOPPED, D.STOPPED, A.NOTHING), (S.FAILED, D.RUNNING, A.NOTHING),
])
def test_plan_when_idle(status: Status, desired: Desired, expected: AgentAction) -> None:
    assert plan(status, desired, None, Busy.IDLE) == Plan(expected)


def test_plan_reports_a_ready_workload_that_no_longer_runs_as_exited() -> None:
    assert plan(S.READY, D.RUNNING, False, Busy.IDLE) == Plan(A.REPORT_EXITED)
    assert plan(S.READY, D.RUNNING, True, Busy.IDLE) == Plan(A.NOTHING)
    assert plan(S.READY, D.RUNNING, None, Busy.IDLE) == Plan(A.NOTHING)  # not known: nothing assumed
    assert plan(S.READY, D.RUNNING, False, Busy.WORKING) == Plan(A.NOTHING)  # our own work is moving it


def test_plan_reopens_a_missing_ssh_endpoint_only_when_ready_and_idle() -> None:
    assert plan(S.READY, D.RUNNING, True, Busy.IDLE, ssh_missing=True) == Plan(A.OPEN_SSH)
    assert plan(S.READY, D.RUNNING, True, Busy.WORKING, ssh_missing=True) == Plan(A.NOTHING)
    assert plan(S.STARTING, D.RUNNING, None, Busy.IDLE, ssh_missing=True) == Plan(A.START)


def test_plan_never_runs_two_things_at_once_except_a_stop_over_a_start() -> None:
    assert plan(S.STARTING, D.RUNNING, None, Busy.STARTING) == Plan(A.NOTHING)
    assert plan(S.DRAINING, D.STOPPED, None, Busy.WORKING) == Plan(A.NOTHING)
    assert plan(S.DRAINING, D.STOPPED, None, Busy.STARTING) == Plan(A.STOP, cancel_busy=True)
    assert plan(S.DRAINING, D.TERMINATED, None, Busy.STARTING) == Plan(A.TERMINATE, cancel_busy=True)

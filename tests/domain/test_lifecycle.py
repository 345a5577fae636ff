import pytest

from coldplate.domain.lifecycle import (
    ACTION_SOURCES,
    FINAL,
    TRANSITIONS,
    InvalidTransition,
    Status,
    action_allowed,
    can_transition,
    check_transition,
)


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

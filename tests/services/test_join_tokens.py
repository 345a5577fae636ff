"""Join tokens in the service layer, on SQLite and PostgreSQL: expiry, use count, revocation."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from coldplate import protocol
from coldplate.clock import FakeClock, as_utc
from coldplate.services import hostnodes, join_tokens
from coldplate.services.errors import InvalidInput, ServiceError, Unauthorized
from coldplate.services.join_tokens import JoinTokenRefused
from coldplate.state import AppState
from tests.hosts import host_info


def spec(name: str) -> protocol.HostInfo:
    return host_info(name, vcpus=64, memory_gb=512, disk_gb=1000, spot="0.000001")


def make(state: AppState, **limits: object) -> tuple[str, str]:
    with state.tx() as session:
        token, secret = join_tokens.create(session, clock=state.clock, name="t", **limits)  # type: ignore[arg-type]
        return token.id, secret


def use(state: AppState, secret: str) -> None:
    with state.tx() as session:
        join_tokens.use(session, clock=state.clock, secret=secret)


def refusal(state: AppState, secret: str) -> str:
    with pytest.raises(JoinTokenRefused) as caught:
        use(state, secret)
    assert caught.value.param == "join_token"
    return caught.value.code


def test_expires_in_hours_runs_out(state: AppState, clock: FakeClock) -> None:
    token_id, secret = make(state, expires_in_hours=2)
    with state.read() as session:
        token = join_tokens.get(session, token_id=token_id)
        assert join_tokens.state_of(token, now=clock.now()) == "active"
    clock.advance(2 * 3600 - 1)
    use(state, secret)
    clock.advance(1)
    assert refusal(state, secret) == "join_token_expired"


def test_expires_at_is_kept_exactly(state: AppState, clock: FakeClock) -> None:
    at = clock.now() + timedelta(minutes=30)
    token_id, secret = make(state, expires_at=at)
    with state.read() as session:
        assert join_tokens.state_of(join_tokens.get(session, token_id=token_id), now=at) == "expired"
    clock.advance(30 * 60)
    assert refusal(state, secret) == "join_token_expired"


def test_max_uses_counts_each_use_and_then_refuses(state: AppState) -> None:
    token_id, secret = make(state, max_uses=2)
    use(state, secret)
    use(state, secret)
    assert refusal(state, secret) == "join_token_used_up"
    with state.read() as session:
        assert join_tokens.get(session, token_id=token_id).uses == 2  # the refusal did not count


def test_revoked_token_is_refused_and_revoking_again_keeps_the_first_time(state: AppState, clock: FakeClock) -> None:
    token_id, secret = make(state)
    use(state, secret)
    with state.tx() as session:
        first = clock.now()
        assert join_tokens.revoke(session, clock=clock, token_id=token_id).revoked_at == first
    clock.advance(60)
    with state.tx() as session:
        again = join_tokens.revoke(session, clock=clock, token_id=token_id).revoked_at
        assert again is not None and as_utc(again) == first
    assert refusal(state, secret) == "join_token_revoked"


def test_unknown_token_and_bad_limits(state: AppState, clock: FakeClock) -> None:
    with pytest.raises(Unauthorized):
        use(state, "cpj_nobody")
    cases = [({"expires_in_hours": 1, "expires_at": clock.now() + timedelta(hours=1)}, "expires_in_hours"),
             ({"expires_in_hours": 0}, "expires_in_hours"), ({"expires_at": clock.now()}, "expires_at"),
             ({"max_uses": 0}, "max_uses")]
    for limits, param in cases:
        with pytest.raises(InvalidInput) as caught:
            make(state, **limits)
        assert caught.value.param == param


def test_racing_registrations_cannot_share_the_last_use(state: AppState) -> None:
    """Eight hosts register at once with a one-use token: exactly one gets in (guarded UPDATE)."""
    token_id, secret = make(state, max_uses=1)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def register(i: int) -> None:
        barrier.wait()
        try:
            with state.tx() as session:
                hostnodes.register(session, clock=state.clock, spec=spec(f"racer-{i}"), join_token=secret,
                                   credential=None)
            results.append("in")
        except ServiceError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(results) == ["in"] + ["join_token_used_up"] * 7
    with state.read() as session:
        assert join_tokens.get(session, token_id=token_id).uses == 1
        assert len(hostnodes.list_hostnodes(session)) == 1

"""Who may register a hostnode under a name, on SQLite and PostgreSQL: a join token admits a new
name only; a registered name needs that host's own agent token or an admin key."""

from __future__ import annotations

import pytest
from sqlalchemy import event

from coldplate.ids import is_secret, new_secret
from coldplate.services import hostnodes, join_tokens
from coldplate.services.errors import Forbidden, Unauthorized
from coldplate.state import AppState
from tests.conftest import ADMIN_KEY
from tests.services.test_join_tokens import spec


def join(state: AppState, **limits: object) -> tuple[str, str]:
    with state.tx() as session:
        token, secret = join_tokens.create(session, clock=state.clock, name="t", **limits)  # type: ignore[arg-type]
        return token.id, secret


def register(state: AppState, name: str, *, join_token: str | None = None,
             credential: str | None = None) -> tuple[str, str]:
    with state.tx() as session:
        host, token = hostnodes.register(session, clock=state.clock, spec=spec(name), join_token=join_token,
                                         credential=credential)
        return host.id, token


def token_works(state: AppState, token: str) -> str | None:
    with state.read() as session:
        try:
            return hostnodes.authenticate_agent(session, token=token)
        except Unauthorized:
            return None


def uses(state: AppState, token_id: str) -> int:
    with state.read() as session:
        return join_tokens.get(session, token_id=token_id).uses


def test_a_join_token_cannot_take_over_a_registered_name(state: AppState) -> None:
    _, secret = join(state)
    host_id, token = register(state, "gpu-01", join_token=secret)
    with pytest.raises(Forbidden) as caught:
        register(state, "gpu-01", join_token=secret)
    assert caught.value.param == "name"
    assert token_works(state, token) == host_id  # the real agent is not locked out


def test_another_hosts_agent_token_cannot_take_over_a_name(state: AppState) -> None:
    _, secret = join(state)
    victim, victim_token = register(state, "victim", join_token=secret)
    _, attacker_token = register(state, "attacker", join_token=secret)
    with pytest.raises(Forbidden):
        register(state, "victim", join_token=secret, credential=attacker_token)
    assert token_works(state, victim_token) == victim


def test_own_agent_token_re_registers_keeping_token_and_join_token_uses(state: AppState) -> None:
    token_id, secret = join(state, max_uses=1)
    host_id, token = register(state, "gpu-01", join_token=secret)
    # a restarted agent: its token file, and no join token at all (or a used-up one)
    assert register(state, "gpu-01", credential=token) == (host_id, token)
    assert register(state, "gpu-01", join_token=secret, credential=token) == (host_id, token)
    assert uses(state, token_id) == 1
    assert token_works(state, token) == host_id


def test_admin_key_re_registers_with_a_fresh_token_that_replaces_the_old(state: AppState) -> None:
    _, secret = join(state)
    host_id, old = register(state, "gpu-01", join_token=secret)
    again, new = register(state, "gpu-01", credential=ADMIN_KEY)
    assert again == host_id and new != old
    assert token_works(state, new) == host_id
    assert token_works(state, old) is None


def test_a_new_name_needs_a_join_token_or_an_admin_key(state: AppState) -> None:
    token_id, secret = join(state)
    with pytest.raises(Unauthorized) as caught:
        register(state, "gpu-01")
    assert caught.value.param == "join_token"
    with pytest.raises(Unauthorized):
        register(state, "gpu-01", credential="cpa_stale_or_forged")  # a stale token is no credential
    with pytest.raises(Unauthorized):
        register(state, "gpu-01", join_token="cpj_wrong")
    register(state, "gpu-01", credential=ADMIN_KEY)
    assert uses(state, token_id) == 0
    # a stale agent token (the server's database was reset) with a valid join token registers anew
    host_id, token = register(state, "gpu-02", join_token=secret, credential="cpa_stale")
    assert token != "cpa_stale" and token_works(state, token) == host_id
    assert uses(state, token_id) == 1


def test_a_new_host_proposes_its_token_so_a_registration_whose_answer_was_lost_can_be_retried(
        state: AppState) -> None:
    """The agent keeps the token it proposes before asking; the server stores it. The answer lost
    (a timeout while the server was busy), the retry presents it and is let in, not refused."""
    token_id, secret = join(state)
    proposed = new_secret("cpa")
    host_id, token = register(state, "gpu-01", join_token=secret, credential=proposed)
    assert token == proposed and token_works(state, proposed) == host_id
    assert register(state, "gpu-01", join_token=secret, credential=proposed) == (host_id, proposed)
    assert uses(state, token_id) == 1


def test_a_proposed_token_that_is_malformed_or_another_hosts_is_not_taken(state: AppState) -> None:
    _, secret = join(state)
    first, first_token = register(state, "gpu-01", join_token=secret, credential=new_secret("cpa"))
    second, second_token = register(state, "gpu-02", join_token=secret, credential=first_token)
    assert second_token != first_token and token_works(state, first_token) == first
    assert token_works(state, second_token) == second
    for weak in ("cpa_short", "cpa_" + "a" * 42 + "!", "cp_" + "a" * 43):
        _, token = register(state, f"h-{len(weak)}-{weak[-1]}", join_token=secret, credential=weak)
        assert token != weak and is_secret(token, "cpa")


def test_the_join_tokens_use_is_the_registrations_last_statement(state: AppState) -> None:
    """Its guarded UPDATE locks the token's row until the commit, and a whole fleet registers with
    one token: taken first, the lock was held through the host's insert and its event, and on
    PostgreSQL 10,000 registrations queued on it (200 s; 118 s with the use taken last)."""
    token_id, secret = join(state)
    statements: list[str] = []
    engine = state.sessions.kw["bind"]

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement.lstrip().upper())

    event.listen(engine, "before_cursor_execute", seen)
    try:
        register(state, "gpu-01", join_token=secret)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    writes = [s for s in statements if s.startswith(("INSERT", "UPDATE", "DELETE"))]
    assert writes and writes[-1].startswith("UPDATE") and "JOIN_TOKENS" in writes[-1], writes
    assert any("HOSTNODES" in s for s in writes[:-1]) and uses(state, token_id) == 1

"""A row that cannot be answered (written before the checks existed, or by hand) is logged with
its id and left out; it never breaks a project's list or a host's assignments, on either database."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlalchemy.exc import DBAPIError

from coldplate.db.tables import Instance
from coldplate.state import AppState
from tests.api.hostile import assert_unharmed, world
from tests.conftest import Fleet, auth

BAD_ROWS = {
    "wrong-types": {"labels": {"k": 5}, "env": {"E": 5}, "ports": [{"internal_port": "x"}]},
    "lone-surrogate": {"labels": {"k": "\ud800"}, "env": {"E": "\ud800"}},  # what issue 8 found committed
}


@pytest.mark.parametrize("bad", sorted(BAD_ROWS))
def test_a_row_that_cannot_be_answered_is_skipped_and_logged(client: TestClient, fleet: Fleet, state: AppState,
                                                             caplog: pytest.LogCaptureFixture, bad: str) -> None:
    w = world(client, fleet)
    good = client.post("/v1/instances", json={"name": "good", "gpu": "h100"}, headers=auth(w.attacker)).json()["id"]
    try:
        with state.tx() as session:  # no request can write these any more
            session.execute(update(Instance).where(Instance.id == w.instance).values(**BAD_ROWS[bad]))
    except DBAPIError:
        pytest.skip("this database refuses the value itself")
    with caplog.at_level(logging.ERROR):
        listed = client.get("/v1/instances", headers=auth(w.attacker))
        assigned = fleet.assignments(w.host)["assignments"]
    assert listed.status_code == 200 and [i["id"] for i in listed.json()["data"]] == [good]
    assert [a["instance_id"] for a in assigned] == [good]
    skipped = [r for r in caplog.records if getattr(r, "row_id", None) == w.instance
               or getattr(r, "instance_id", None) == w.instance]
    assert len(skipped) >= 2  # once for the list, once for the assignments
    assert_unharmed(w)

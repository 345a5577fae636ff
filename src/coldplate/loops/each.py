"""One transaction per entity: the shape every loop pass shares."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from sqlalchemy.orm import Session

from coldplate.state import AppState

log = logging.getLogger(__name__)

BATCH = 100  # rows per claim


def each(app: AppState, ids: Iterable[str], act: Callable[[Session, str], bool], *, message: str,
         key: str) -> int:
    """Run `act` on each id in its own transaction; returns how many it acted on.

    A failure rolls back that entity only, is logged (`message`, the id under `key` in `extra`)
    and does not stop the pass: the next pass, or the next owner of its lease, tries again."""
    done = 0
    for entity_id in ids:
        try:  # a deadlock or a lost compare-and-set against a concurrent writer is retried at once
            done += app.transact(lambda session, entity_id=entity_id: act(session, entity_id))  # type: ignore[misc]
        except Exception:
            log.exception(message, extra={key: entity_id})
    return done


def each_claimed(app: AppState, claim: Callable[[Session, int], list[str]], act: Callable[[Session, str], bool], *,
                 message: str, key: str) -> int:
    """Claim leased rows a batch at a time (`claim(session, limit)`, its own transaction) and `act`
    on each in its own transaction, until a claim comes back short; returns how many it acted on."""
    done, seen = 0, set[str]()
    while True:
        with app.tx() as session:
            ids = claim(session, BATCH)
        repeated = seen.issuperset(ids)  # only rows this pass already had (a claim it could not finish): stop
        seen.update(ids)
        done += each(app, ids, act, message=message, key=key)
        if len(ids) < BATCH or repeated:
            return done

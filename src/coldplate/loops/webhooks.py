"""The webhook dispatcher: fan new outbox events out into deliveries, claim due deliveries under a
lease, POST them (Standard Webhooks headers and signature) with no transaction open, record each
attempt under the lease guard. Woken by every commit that wrote an event (the `outbox` wake-up),
and each loop interval for retries that come due."""

from __future__ import annotations

import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx

from coldplate.clock import SystemClock
from coldplate.ids import new_id
from coldplate.services import deliveries, destinations, webhooks
from coldplate.services.deliveries import Job, Outcome
from coldplate.state import AppState

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0
BATCH = 16  # deliveries claimed (and sent at once) per round; a round lasts at most about TIMEOUT_S
ROUNDS = 50  # rounds per pass before yielding to the runner
OWNER = new_id("disp")  # this process's lease owner
USER_AGENT = "coldplate-webhooks/1"
# The `webhook-timestamp` header is transport time, compared by the receiver with its own wall
# clock to refuse replays; business time (the payload's `timestamp`, retry due times) is app.clock.
WALL = SystemClock()

_pool = ThreadPoolExecutor(max_workers=BATCH, thread_name_prefix="webhook-send")
_client = httpx.Client(timeout=TIMEOUT_S, follow_redirects=False, headers={"user-agent": USER_AGENT})


def run_once(app: AppState, owner: str | None = None) -> int:
    """One pass: fan out and send until nothing is due. Returns the number of attempts made."""
    owner = owner or OWNER
    attempts = 0
    lease = timedelta(seconds=app.settings.webhook_lease_s)
    for _ in range(ROUNDS):
        # One commit to take new events and claim what is due, one to record the round's results:
        # a commit per delivery held PostgreSQL to about 40 deliveries a second.
        with app.tx() as session:
            fanned = deliveries.fan_out(session, clock=app.clock)
            jobs = deliveries.claim(session, clock=app.clock, owner=owner, limit=BATCH, lease=lease)
        if jobs:
            sender = functools.partial(send, allow_private=app.settings.allow_private_webhooks)
            results = list(zip(jobs, _pool.map(sender, jobs), strict=True))
            with app.tx() as session:
                lost = deliveries.record_all(session, clock=app.clock, owner=owner, results=results)
            for delivery_id in lost:
                log.warning("webhook lease lost before the result was recorded", extra={"delivery_id": delivery_id})
            attempts += len(jobs)
        if not jobs and not fanned:
            break
    return attempts


def send(job: Job, *, allow_private: bool) -> Outcome:
    """POST one delivery to the address its URL resolves to now (checked again at every attempt)."""
    started = time.monotonic()
    try:
        target = destinations.resolve(job.url, allow_private=allow_private)
    except destinations.DestinationRefused as exc:
        return Outcome(status_code=None, latency_ms=0, error=f"destination refused: {exc}")
    timestamp = int(WALL.now().timestamp())
    headers = {
        "host": target.host_header(), "content-type": "application/json", "webhook-id": job.delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhooks.sign(secrets_=job.secrets, msg_id=job.delivery_id, timestamp=timestamp,
                                           body=job.body),
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    try:
        with _client.stream("POST", target.pinned_url(), content=job.body.encode(), headers=headers,
                            extensions=extensions) as response:
            excerpt = b""
            for chunk in response.iter_bytes():
                excerpt += chunk
                if len(excerpt) >= deliveries.RESPONSE_EXCERPT:
                    break
        return Outcome(status_code=response.status_code, latency_ms=_ms(started),
                       response=excerpt[:deliveries.RESPONSE_EXCERPT].decode("utf-8", "replace"))
    except httpx.HTTPError as exc:
        return Outcome(status_code=None, latency_ms=_ms(started), error=f"{type(exc).__name__}: {exc}")


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)

"""The webhook destination guard. Refusals are tested without connecting anywhere: no traffic is
ever sent to a non-loopback address."""

from __future__ import annotations

from typing import Any

import pytest

from coldplate.loops import webhooks as dispatcher
from coldplate.services import destinations
from coldplate.services.deliveries import Job
from coldplate.services.errors import InvalidInput

PRIVATE = ["http://127.0.0.1/hook", "http://127.8.9.10:8080/", "http://10.1.2.3/", "http://172.16.0.9/",
           "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/",
           "http://[fe80::1]/", "http://[::ffff:127.0.0.1]/", "http://100.64.0.1/", "http://0.0.0.0/",
           "http://localhost:9000/", "https://[fd00::1]/"]


@pytest.mark.parametrize("url", PRIVATE)
def test_non_public_destinations_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(destinations.DestinationRefused, match="allow-private-webhooks"):
        destinations.resolve(url, allow_private=False)
    with pytest.raises(InvalidInput) as err:
        destinations.check_at_create(url, allow_private=False)
    assert err.value.param == "url"
    assert destinations.resolve(url, allow_private=True).address  # allowed: resolves to itself


def test_public_literal_addresses_pass_and_are_pinned() -> None:
    target = destinations.resolve("https://93.184.215.14:8443/a/b?c=d", allow_private=False)
    assert (target.address, target.port, target.scheme) == ("93.184.215.14", 8443, "https")
    assert target.pinned_url() == "https://93.184.215.14:8443/a/b?c=d"
    assert target.host_header() == "93.184.215.14:8443"
    v6 = destinations.resolve("http://[2606:4700::1111]/", allow_private=False)
    assert v6.pinned_url() == "http://[2606:4700::1111]:80/" and v6.host_header() == "[2606:4700::1111]"


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://example.com/x", "http"), ("file:///etc/passwd", "http"), ("http:///nohost", "host"),
    ("http://user:pw@example.com/", "credentials"), ("http://example.com:99999/", "valid"), ("example.com", "http"),
])
def test_malformed_urls_are_input_errors(url: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why) as err:
        destinations.check_at_create(url, allow_private=True)
    assert err.value.param == "url"


def test_a_name_that_does_not_resolve_is_accepted_at_create_and_refused_at_delivery() -> None:
    url = "http://no-such-host.invalid/hook"
    destinations.check_at_create(url, allow_private=False)
    with pytest.raises(destinations.Unresolvable):
        destinations.resolve(url, allow_private=False)


def test_the_dispatcher_refuses_before_connecting(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spy on the HTTP client: a refused destination never reaches it."""
    calls: list[Any] = []
    monkeypatch.setattr(dispatcher._client, "stream", lambda *a, **k: calls.append(a))
    for url in ("http://10.0.0.1/hook", "http://169.254.169.254/", "http://127.0.0.1:1/"):
        job = Job(delivery_id="msg_x", webhook_id="wh_x", url=url, body="{}", secrets=["whsec_AAAA"], attempt=1)
        outcome = dispatcher.send(job, allow_private=False)
        assert outcome.status_code is None and outcome.error is not None
        assert outcome.error.startswith("destination refused")
    assert calls == []

"""The FCM channel (HTTP v1 with google-auth service-account credentials) against a local FCM:
the OAuth jwt-bearer exchange happens for real, against the token_uri of a service-account JSON
with a freshly generated key; then one request per device token."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from channels.base import Delivery, DeliveryUnknown, Failed, OutboundMessage, Rejected, Retryable, load_channel
from channels.fcm import SCOPE, ConfigurationError, FcmChannel

from .fakes import HANG, FcmFake, Reply, closed_port_url


def push(**over: Any) -> OutboundMessage:
    fields: dict[str, Any] = dict(
        delivery_id="run-1:nudge:1:push", channel="push", to=("tok-a", "tok-b"), subject="Still thinking?",
        body="Your Trail shoe is waiting", link="https://nw.example/c/1",
        metadata={"journey": "cart_abandonment", "step": "nudge"},
    )
    fields.update(over)
    return OutboundMessage(**fields)


def channel(fake: FcmFake, **over: Any) -> FcmChannel:
    options: dict[str, Any] = dict(credentials=fake.service_account, api_base=fake.url, timeout=1.0)
    options.update(over)
    return FcmChannel(**options)


def test_one_request_per_device_token_with_collapse_key_and_deep_link(fcm: FcmFake) -> None:
    delivery = channel(fcm).send(push())
    sends = fcm.sends
    assert [r.path for r in sends] == ["/v1/projects/demo-proj/messages:send"] * 2
    bodies = [r.json() for r in sends]
    assert [b["message"]["token"] for b in bodies] == ["tok-a", "tok-b"]
    msg = bodies[0]["message"]
    assert msg["notification"] == {"title": "Still thinking?", "body": "Your Trail shoe is waiting"}
    assert msg["data"] == {"delivery_id": "run-1:nudge:1:push", "link": "https://nw.example/c/1"}
    assert all(isinstance(v, str) for v in msg["data"].values())  # FCM data values must be strings
    assert msg["android"] == {"collapse_key": "cart_abandonment.nudge"}
    assert msg["apns"] == {"headers": {"apns-collapse-id": "cart_abandonment.nudge"}}
    assert msg["webpush"] == {"fcm_options": {"link": "https://nw.example/c/1"}}
    assert isinstance(delivery, Delivery)
    assert delivery.provider_id.startswith("projects/demo-proj/messages/")
    assert (delivery.status, delivery.dead_tokens) == ("sent", ())


def test_the_token_exchange_happens_once_and_is_reused(fcm: FcmFake) -> None:
    ch = channel(fcm)
    ch.send(push())
    ch.send(push(to="tok-c"))
    assert len(fcm.token_requests) == 1 and len(fcm.sends) == 3
    form = fcm.token_requests[0].form()
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = fcm.assertions[0]
    assert claims["iss"] == fcm.service_account["client_email"]
    assert claims["scope"] == SCOPE
    assert {r.header("Authorization") for r in fcm.sends} == {f"Bearer {fcm.issued[0]}"}


def test_a_token_the_sender_rejects_is_refreshed_once(fcm: FcmFake) -> None:
    """An access token FCM no longer accepts (401): google-auth refreshes and retries."""
    ch = channel(fcm)
    ch.send(push(to="tok-a"))
    fcm.issued.clear()  # FCM forgets the token it issued
    delivery = ch.send(push(to="tok-a"))
    assert delivery.provider_id and len(fcm.token_requests) == 2


def test_credentials_from_a_file_or_json_in_the_environment(fcm: FcmFake, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(fcm.service_account), encoding="utf-8")
    monkeypatch.setenv("FCM_CREDENTIALS", str(path))
    monkeypatch.setenv("FCM_API_BASE", fcm.url)
    load_channel("fcm").send(push(to="tok-a"))
    monkeypatch.setenv("FCM_CREDENTIALS", json.dumps(fcm.service_account))
    load_channel("fcm").send(push(to="tok-b"))
    assert [r.json()["message"]["token"] for r in fcm.sends] == ["tok-a", "tok-b"]
    monkeypatch.delenv("FCM_CREDENTIALS")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(ConfigurationError):
        FcmChannel()


def test_a_single_token_string_and_no_link(fcm: FcmFake) -> None:
    channel(fcm).send(push(to="tok-a", link=None, metadata={}))
    msg = fcm.sends[0].json()["message"]
    assert msg["token"] == "tok-a" and "webpush" not in msg and "link" not in msg["data"]
    assert msg["android"]["collapse_key"] == "journey.message"


def test_no_tokens_is_rejected_without_a_request(fcm: FcmFake) -> None:
    with pytest.raises(Rejected):
        channel(fcm).send(push(to=()))
    assert fcm.requests == []


def test_unregistered_on_one_of_two_tokens_is_delivered_with_that_dead_token(fcm: FcmFake) -> None:
    fcm.per_token["tok-a"] = FcmFake.unregistered()
    delivery = channel(fcm).send(push())
    assert delivery.dead_tokens == ("tok-a",)
    assert delivery.provider_id and len(fcm.sent) == 1


def test_an_invalid_token_counts_as_dead(fcm: FcmFake) -> None:
    fcm.per_token["tok-b"] = FcmFake.invalid_token()
    assert channel(fcm).send(push()).dead_tokens == ("tok-b",)


def test_unregistered_on_every_token_is_rejected_with_the_dead_tokens(fcm: FcmFake) -> None:
    fcm.per_token["tok-a"] = FcmFake.unregistered()
    fcm.per_token["tok-b"] = FcmFake.invalid_token()
    with pytest.raises(Rejected) as err:
        channel(fcm).send(push())
    assert err.value.dead_tokens == ("tok-a", "tok-b")


def test_a_not_found_that_is_not_unregistered_kills_no_token(fcm: FcmFake) -> None:
    """A 404 without FCM's UNREGISTERED error code (a wrong project, a proxy's answer) says
    nothing about the device: removing every user's tokens on it could not be undone."""
    fcm.per_token["tok-a"] = FcmFake.error(404, "NOT_FOUND", None, "Requested entity was not found.")
    with pytest.raises(Failed):
        channel(fcm).send(push(to="tok-a"))


def test_an_invalid_payload_is_failed_and_kills_no_token(fcm: FcmFake) -> None:
    fcm.per_token["tok-a"] = FcmFake.invalid_payload()
    with pytest.raises(Failed):
        channel(fcm).send(push(to="tok-a"))


def test_quota_exceeded_is_retryable_after_the_retry_after_seconds(fcm: FcmFake) -> None:
    fcm.per_token["tok-a"] = fcm.per_token["tok-b"] = FcmFake.quota_exceeded(after=30)
    with pytest.raises(Retryable) as err:
        channel(fcm).send(push())
    assert err.value.after == 30.0
    assert len(fcm.sends) == 2  # no hidden retries inside the call


def test_503_is_retryable(fcm: FcmFake) -> None:
    fcm.per_token["tok-a"] = FcmFake.unavailable()
    with pytest.raises(Retryable):
        channel(fcm).send(push(to="tok-a"))
    assert len(fcm.sends) == 1


def test_connection_refused_is_retryable(fcm: FcmFake) -> None:
    with pytest.raises(Retryable):
        channel(fcm, api_base=closed_port_url()).send(push())


def test_a_token_endpoint_that_cannot_be_reached_is_retryable(fcm: FcmFake) -> None:
    """Nothing reached FCM: the OAuth exchange itself failed to connect."""
    info = {**fcm.service_account, "token_uri": closed_port_url() + "/token"}
    with pytest.raises(Retryable):
        channel(fcm, credentials=info).send(push())
    assert fcm.sends == []


def test_a_token_endpoint_refusing_our_key_is_failed(fcm: FcmFake) -> None:
    fcm.token_script.append(Reply(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}))
    with pytest.raises(Failed):
        channel(fcm).send(push())
    assert fcm.sends == []


def test_401_is_failed_not_rejected(fcm: FcmFake) -> None:
    """FCM keeps refusing our credentials even after a refresh: a configuration problem."""
    fcm.per_token["tok-a"] = FcmFake.error(401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR",
                                           "Request had invalid authentication credentials.")
    with pytest.raises(Failed) as err:
        channel(fcm).send(push(to="tok-a"))
    assert not isinstance(err.value, Rejected)


def test_sender_id_mismatch_is_failed(fcm: FcmFake) -> None:
    fcm.per_token["tok-a"] = FcmFake.error(403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch")
    with pytest.raises(Failed):
        channel(fcm).send(push(to="tok-a"))


def test_a_read_timeout_is_unknown(fcm: FcmFake) -> None:
    fcm.per_token["tok-a"] = HANG
    started = time.monotonic()
    with pytest.raises(DeliveryUnknown):
        channel(fcm, timeout=0.5).send(push(to="tok-a"))
    assert time.monotonic() - started < 5
    assert len(fcm.sends) == 1


def test_a_read_timeout_on_one_token_after_another_got_it_is_sent(fcm: FcmFake) -> None:
    fcm.per_token["tok-b"] = HANG
    delivery = channel(fcm, timeout=0.5).send(push())
    assert delivery.provider_id and delivery.dead_tokens == ()

"""The webhook plug-in channel (httpx) against a local endpoint, loaded through its entry point
as a third-party channel would be; plus the connect-timeout case for every adapter (a connection
that never opens sent nothing: it is retryable, never "unknown")."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any, Iterator

import pytest

from channels.base import Delivery, DeliveryUnknown, Failed, OutboundMessage, Rejected, Retryable, load_channel
from channels.fcm import FcmChannel
from channels.sendgrid import SendGridChannel
from channels.twilio import TwilioChannel
from channels.webhook import WebhookChannel

from .fakes import HANG, Blackhole, FcmFake, ReceiverFake, Reply, closed_port_url


@pytest.fixture
def receiver() -> Iterator[ReceiverFake]:
    fake = ReceiverFake()
    yield fake
    fake.close()


def message(**over: Any) -> OutboundMessage:
    fields: dict[str, Any] = dict(
        delivery_id="run-1:nudge:1:inbox", channel="inbox", to="u1", subject="Hi", body="Your cart",
        link="https://nw.example/c/1", metadata={"journey": "cart_abandonment", "step": "nudge"},
    )
    fields.update(over)
    return OutboundMessage(**fields)


def test_loaded_through_the_entry_point_and_signed(receiver: ReceiverFake) -> None:
    ch = load_channel("webhook", url=receiver.url + "/inbox", secret="s3cret", timeout=1.0)
    delivery = ch.send(message())
    req = receiver.requests[0]
    assert (req.method, req.path) == ("POST", "/inbox")
    assert req.header("Idempotency-Key") == "run-1:nudge:1:inbox"
    assert req.header("X-Journey-Signature") == hmac.new(b"s3cret", req.body, hashlib.sha256).hexdigest()
    sent = req.json()
    assert sent["delivery_id"] == "run-1:nudge:1:inbox" and sent["to"] == "u1"
    assert sent["metadata"] == {"journey": "cart_abandonment", "step": "nudge"}
    assert isinstance(delivery, Delivery) and delivery.provider_id == "msg-1"


def test_unsigned_without_a_secret(receiver: ReceiverFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_CHANNEL_URL", receiver.url)
    monkeypatch.delenv("WEBHOOK_CHANNEL_SECRET", raising=False)
    WebhookChannel().send(message(to=("a", "b")))
    req = receiver.requests[0]
    assert req.header("X-Journey-Signature") is None
    assert json.loads(req.body)["to"] == ["a", "b"]


@pytest.mark.parametrize("reply, outcome, after", [
    (Reply(429, b"slow down", {"Retry-After": "12"}), Retryable, 12.0),
    (Reply(500), Retryable, None),
    (Reply(503, b"", {"Retry-After": "5"}), Retryable, 5.0),
    (Reply(410), Rejected, None),
    (Reply(400, b"bad payload"), Failed, None),
    (Reply(401), Failed, None),
])
def test_answers_are_classified(receiver: ReceiverFake, reply: Reply, outcome: type, after: float | None) -> None:
    receiver.queue(reply)
    with pytest.raises(outcome) as err:
        WebhookChannel(receiver.url, timeout=1.0).send(message())
    if outcome is Retryable:
        assert err.value.after == after


def test_connection_refused_is_retryable() -> None:
    with pytest.raises(Retryable):
        WebhookChannel(closed_port_url(), timeout=1.0).send(message())


def test_a_read_timeout_is_unknown(receiver: ReceiverFake) -> None:
    receiver.queue(HANG)
    started = time.monotonic()
    with pytest.raises(DeliveryUnknown):
        WebhookChannel(receiver.url, timeout=0.5).send(message())
    assert time.monotonic() - started < 5


# -- a connect timeout, on every adapter -------------------------------------------------------

def _email() -> OutboundMessage:
    return OutboundMessage("d:1:email", "email", "ana@example.com", "Subject", "Body")


def _sms() -> OutboundMessage:
    return OutboundMessage("d:1:sms", "sms", "+14155550123", None, "Body STOP")


def _push() -> OutboundMessage:
    return OutboundMessage("d:1:push", "push", ("tok-a",), "Title", "Body")


def test_a_connect_timeout_is_retryable_on_every_adapter(blackhole: Blackhole, fcm: FcmFake) -> None:
    cases = [
        (WebhookChannel(blackhole.url, timeout=0.3), message()),
        (SendGridChannel(api_key="SG.x", from_email="a@example.com", host=blackhole.url, timeout=0.3), _email()),
        (TwilioChannel(account_sid="AC" + "1" * 32, auth_token="t", from_number="+15005550006",
                       api_base=blackhole.url, timeout=0.3), _sms()),
        (FcmChannel(fcm.service_account, api_base=blackhole.url, timeout=0.3), _push()),
    ]
    for ch, msg in cases:
        with pytest.raises(Retryable):
            ch.send(msg)

"""The Twilio channel through the official ``twilio`` SDK against a local Messages API: what
goes on the wire, the opt-out text, and how every answer is classified."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from channels.base import Delivery, DeliveryUnknown, Failed, OutboundMessage, Rejected, Retryable, load_channel
from channels.twilio import OPT_OUT_TEXT, ConfigurationError, TwilioChannel

from .fakes import HANG, Reply, TwilioFake, closed_port_url

CALLBACK = "https://journeys.example.com/v1/webhooks/twilio/status?d=run-1%3Anudge%3A1%3Asms"
SERVICE = "MG" + "a" * 32


def sms(**over: Any) -> OutboundMessage:
    fields: dict[str, Any] = dict(
        delivery_id="run-1:nudge:1:sms", channel="sms", to="+14155550123", subject=None,
        body="Northwind: your cart is saved: https://nw.example/c/1 Reply STOP to opt out.",
        metadata={"journey": "cart_abandonment", "step": "nudge"}, status_callback=CALLBACK,
    )
    fields.update(over)
    return OutboundMessage(**fields)


def channel(fake: TwilioFake, **over: Any) -> TwilioChannel:
    options: dict[str, Any] = dict(account_sid=fake.account_sid, auth_token=fake.auth_token,
                                   messaging_service_sid=SERVICE, api_base=fake.url, timeout=1.0)
    options.update(over)
    return TwilioChannel(**options)


def test_the_request_on_the_wire_with_a_messaging_service(twilio: TwilioFake) -> None:
    delivery = channel(twilio).send(sms())
    req = twilio.requests[0]
    assert (req.method, req.path) == ("POST", f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json")
    basic = base64.b64encode(f"{twilio.account_sid}:{twilio.auth_token}".encode()).decode()
    assert req.header("Authorization") == f"Basic {basic}"
    assert req.header("Content-Type") == "application/x-www-form-urlencoded"
    assert req.form() == {"To": "+14155550123", "Body": sms().body, "MessagingServiceSid": SERVICE,
                          "StatusCallback": CALLBACK}
    assert isinstance(delivery, Delivery)
    assert delivery.provider_id and delivery.provider_id.startswith("SM")
    assert delivery.provider_id == twilio.sids[0]
    assert (delivery.status, delivery.segments) == ("queued", 1)


def test_from_a_number_when_there_is_no_messaging_service(twilio: TwilioFake) -> None:
    channel(twilio, messaging_service_sid=None, from_number="+15005550006").send(sms(status_callback=None))
    form = twilio.requests[0].form()
    assert form["From"] == "+15005550006"
    assert "MessagingServiceSid" not in form and "StatusCallback" not in form


def test_segments_come_from_twilio(twilio: TwilioFake) -> None:
    delivery = channel(twilio).send(sms(body="x" * 200 + " STOP"))
    assert delivery.segments == 2


@pytest.mark.parametrize("to, body, sent", [
    ("+14155550123", "Your code ships today.", f"Your code ships today. {OPT_OUT_TEXT}"),  # US
    ("+16045550123", "Your code ships today.", f"Your code ships today. {OPT_OUT_TEXT}"),  # Canada
    ("+14155550123", "Deals inside. Reply STOP to opt out.", "Deals inside. Reply STOP to opt out."),
    ("+14155550123", "Deals inside. Text stop to end.", "Deals inside. Text stop to end."),
    ("+14155550123", "Nonstop savings all week.", f"Nonstop savings all week. {OPT_OUT_TEXT}"),
    ("+447700900123", "Your code ships today.", "Your code ships today."),  # UK: no US wording
    ("+33612345678", "Livraison gratuite.", "Livraison gratuite."),
])
def test_opt_out_text_for_north_american_numbers_without_stop_wording(
    twilio: TwilioFake, to: str, body: str, sent: str
) -> None:
    channel(twilio).send(sms(to=to, body=body))
    assert twilio.requests[0].form()["Body"] == sent


def test_configuration_from_the_environment(twilio: TwilioFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", twilio.account_sid)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", twilio.auth_token)
    monkeypatch.setenv("TWILIO_FROM_NUMBER", "+15005550006")
    monkeypatch.setenv("TWILIO_API_BASE", twilio.url)
    ch = load_channel("twilio")
    ch.send(sms())
    assert twilio.requests[0].form()["From"] == "+15005550006"
    monkeypatch.delenv("TWILIO_FROM_NUMBER")
    with pytest.raises(ConfigurationError):
        TwilioChannel()


def test_no_number_is_rejected_without_a_request(twilio: TwilioFake) -> None:
    with pytest.raises(Rejected):
        channel(twilio).send(sms(to=""))
    assert twilio.requests == []


def test_429_is_retryable_after_the_retry_after_seconds(twilio: TwilioFake) -> None:
    twilio.queue(TwilioFake.rate_limited(after=3))
    with pytest.raises(Retryable) as err:
        channel(twilio).send(sms())
    assert err.value.after == 3.0
    assert "20429" in str(err.value)


def test_429_reads_its_own_retry_after_not_an_earlier_answer(twilio: TwilioFake) -> None:
    """The SDK's exception has no headers: the channel keeps the last response's headers. A
    429 without Retry-After after another 429 with one must not reuse the old value."""
    ch = channel(twilio)
    twilio.queue(TwilioFake.rate_limited(after=9), TwilioFake.error(429, 20429, "Too Many Requests"))
    with pytest.raises(Retryable) as first:
        ch.send(sms())
    with pytest.raises(Retryable) as second:
        ch.send(sms())
    assert (first.value.after, second.value.after) == (9.0, 1.0)


@pytest.mark.parametrize("reply", [TwilioFake.server_error(500), TwilioFake.server_error(503),
                                   TwilioFake.error(500, 20500, "Internal Server Error")])
def test_5xx_is_retryable(twilio: TwilioFake, reply: Reply) -> None:
    twilio.queue(reply)
    with pytest.raises(Retryable):
        channel(twilio).send(sms())


def test_connection_refused_is_retryable() -> None:
    ch = TwilioChannel(account_sid="AC" + "1" * 32, auth_token="t", from_number="+15005550006",
                       api_base=closed_port_url(), timeout=1)
    with pytest.raises(Retryable):
        ch.send(sms())


@pytest.mark.parametrize("reply", [TwilioFake.invalid_number(), TwilioFake.unsubscribed()])
def test_an_invalid_or_unsubscribed_number_is_rejected(twilio: TwilioFake, reply: Reply) -> None:
    twilio.queue(reply)
    with pytest.raises(Rejected) as err:
        channel(twilio).send(sms())
    assert str(reply.body["code"]) in str(err.value)


def test_401_is_failed_not_rejected(twilio: TwilioFake) -> None:
    with pytest.raises(Failed) as err:
        channel(twilio, auth_token="wrong").send(sms())
    assert "20003" in str(err.value) and not isinstance(err.value, Rejected)


def test_an_error_about_the_message_is_failed(twilio: TwilioFake) -> None:
    twilio.queue(TwilioFake.error(400, 21617, "The concatenated message body exceeds the 1600 character limit."))
    with pytest.raises(Failed):
        channel(twilio).send(sms())


def test_an_rfc_9457_error_body_is_classified_too(twilio: TwilioFake) -> None:
    """Newer Twilio APIs answer with application/problem+json; the SDK raises another class."""
    twilio.queue(Reply(400, {"type": "https://www.twilio.com/docs/errors/21211", "title": "Invalid 'To' Phone Number",
                             "status": 400, "code": 21211, "detail": "+1555 is not a valid phone number"},
                       {"Content-Type": "application/problem+json"}))
    with pytest.raises(Rejected):
        channel(twilio).send(sms())


def test_a_read_timeout_is_unknown(twilio: TwilioFake) -> None:
    twilio.queue(HANG)
    started = time.monotonic()
    with pytest.raises(DeliveryUnknown):
        channel(twilio, timeout=0.5).send(sms())
    assert time.monotonic() - started < 5
    assert len(twilio.requests) == 1

"""The SendGrid channel through the official ``sendgrid`` SDK against a local v3 Mail Send
server: what goes on the wire, and how every answer is classified."""

from __future__ import annotations

import time
from typing import Any

import pytest

from channels.base import Delivery, DeliveryUnknown, Failed, OutboundMessage, Rejected, Retryable, load_channel
from channels.sendgrid import ConfigurationError, SendGridChannel

from .fakes import HANG, SendGridFake, closed_port_url

UNSUB = "https://journeys.example.com/v1/unsubscribe/eyJ1MSJd.c2lnbmF0dXJl"


def email(**over: Any) -> OutboundMessage:
    fields: dict[str, Any] = dict(
        delivery_id="run-1:nudge:1:email", channel="email", to="ana@example.com", subject="Your cart",
        body="Plain body", html="<p>HTML body</p>", link="https://shop.example.com/c/1",
        metadata={"journey": "cart_abandonment", "step": "nudge", "variant": None, "run_id": "run-1"},
        unsubscribe_url=UNSUB,
    )
    fields.update(over)
    return OutboundMessage(**fields)


def channel(fake: SendGridFake, **over: Any) -> SendGridChannel:
    options: dict[str, Any] = dict(api_key=fake.api_key, from_email="shop@example.com", from_name="Northwind",
                                   host=fake.url, timeout=1.0)
    options.update(over)
    return SendGridChannel(**options)


def test_the_request_on_the_wire(sendgrid: SendGridFake) -> None:
    delivery = channel(sendgrid).send(email())
    assert len(sendgrid.requests) == 1
    req = sendgrid.requests[0]
    assert (req.method, req.path) == ("POST", "/v3/mail/send")
    assert req.header("Authorization") == f"Bearer {sendgrid.api_key}"
    assert req.header("Content-Type") == "application/json"
    mail = req.json()
    assert mail["from"] == {"email": "shop@example.com", "name": "Northwind"}
    assert mail["subject"] == "Your cart"
    assert mail["personalizations"] == [{"to": [{"email": "ana@example.com"}]}]
    # text/plain first, then text/html, as v3 requires
    assert mail["content"] == [{"type": "text/plain", "value": "Plain body"},
                               {"type": "text/html", "value": "<p>HTML body</p>"}]
    assert mail["headers"] == {"List-Unsubscribe": f"<{UNSUB}>",
                               "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}
    assert mail["custom_args"] == {"delivery_id": "run-1:nudge:1:email", "journey": "cart_abandonment",
                                   "step": "nudge"}
    assert all(isinstance(v, str) for v in mail["custom_args"].values())  # SendGrid requires strings
    assert mail["mail_settings"] == {"sandbox_mode": {"enable": False}}
    assert 1 <= len(mail["categories"]) <= 10
    # 202 Accepted: the X-Message-Id is what Event Webhook events carry in sg_message_id
    assert isinstance(delivery, Delivery)
    assert delivery.delivery_id == "run-1:nudge:1:email"
    assert delivery.provider_id == sendgrid.message_ids[0]
    assert delivery.status == "queued"


def test_text_only_and_no_unsubscribe_url(sendgrid: SendGridFake) -> None:
    channel(sendgrid, from_name=None).send(email(html=None, unsubscribe_url=None))
    mail = sendgrid.requests[0].json()
    assert mail["content"] == [{"type": "text/plain", "value": "Plain body"}]
    assert "headers" not in mail
    assert mail["from"] == {"email": "shop@example.com"}


def test_configuration_from_the_environment_with_sandbox_mode(sendgrid: SendGridFake,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENDGRID_API_KEY", sendgrid.api_key)
    monkeypatch.setenv("SENDGRID_FROM_EMAIL", "env@example.com")
    monkeypatch.setenv("SENDGRID_SANDBOX", "1")
    monkeypatch.setenv("SENDGRID_API_HOST", sendgrid.url + "/")  # a trailing slash is tolerated
    ch = load_channel("sendgrid")  # through the entry point, as JOURNEY_CHANNELS=email=sendgrid does
    delivery = ch.send(email())
    req = sendgrid.requests[0]
    assert req.path == "/v3/mail/send"
    mail = req.json()
    assert mail["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert mail["from"] == {"email": "env@example.com"}
    assert delivery.provider_id is None  # sandbox: 200 OK, nothing queued
    monkeypatch.delenv("SENDGRID_API_KEY")
    with pytest.raises(ConfigurationError):
        SendGridChannel()


def test_no_address_is_rejected_without_a_request(sendgrid: SendGridFake) -> None:
    with pytest.raises(Rejected):
        channel(sendgrid).send(email(to=""))
    assert sendgrid.requests == []


@pytest.mark.parametrize("reply, after", [
    (SendGridFake.rate_limited(after=7), 7.0),
    (SendGridFake.rate_limited(after=None), 60.0),  # no hint: a minute
])
def test_429_is_retryable_after_the_retry_after_seconds(sendgrid: SendGridFake, reply: Any, after: float) -> None:
    sendgrid.queue(reply)
    with pytest.raises(Retryable) as err:
        channel(sendgrid).send(email())
    assert err.value.after == after
    assert "429" in str(err.value)


def test_429_with_only_the_rate_limit_reset_header(sendgrid: SendGridFake) -> None:
    """SendGrid documents X-RateLimit-Reset (a unix time) on its 429s."""
    sendgrid.queue(SendGridFake.rate_limited(after=None, reset_in=20))
    with pytest.raises(Retryable) as err:
        channel(sendgrid).send(email())
    assert err.value.after is not None and 17 <= err.value.after <= 20


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retryable(sendgrid: SendGridFake, status: int) -> None:
    sendgrid.queue(SendGridFake.server_error(status))
    with pytest.raises(Retryable):
        channel(sendgrid).send(email())


def test_connection_refused_is_retryable() -> None:
    ch = SendGridChannel(api_key="SG.x", from_email="shop@example.com", host=closed_port_url(), timeout=1)
    with pytest.raises(Retryable) as err:
        ch.send(email())
    assert err.value.after is None


def test_an_invalid_address_is_rejected(sendgrid: SendGridFake) -> None:
    sendgrid.queue(SendGridFake.invalid_address())
    with pytest.raises(Rejected) as err:
        channel(sendgrid).send(email(to="not-an-address"))
    assert "valid address" in str(err.value)
    assert err.value.dead_tokens == ()


@pytest.mark.parametrize("reply", [
    SendGridFake.bad_request("from.email", "The from email does not contain a valid address."),
    SendGridFake.bad_request("from", "The from object must be provided for every email send. It is an object "
                             "that requires the email parameter, but may also contain a name parameter."),
    SendGridFake.bad_request("reply_to.email", "The reply_to email does not contain a valid address."),
    SendGridFake.bad_request("content.0.value",
                             "The content value must be a string at least one character in length."),
    SendGridFake.bad_request("personalizations.0.custom_args.step",
                             "Invalid type. Expected: string, given: integer."),
    SendGridFake.unverified_sender(),
])
def test_errors_about_our_request_fail_the_message_and_never_blame_the_recipient(
    sendgrid: SendGridFake, reply: Any
) -> None:
    """Rejected would suppress the user's email address for good (consent 'rejected'); an error
    about the sender, the subject or the arguments says nothing about the recipient."""
    sendgrid.queue(reply)
    with pytest.raises(Failed):
        channel(sendgrid).send(email())


def test_401_is_failed_not_rejected(sendgrid: SendGridFake) -> None:
    with pytest.raises(Failed) as err:
        channel(sendgrid, api_key="SG.wrong").send(email())
    assert "401" in str(err.value)
    assert not isinstance(err.value, Rejected)


def test_a_read_timeout_is_unknown(sendgrid: SendGridFake) -> None:
    sendgrid.queue(HANG)
    started = time.monotonic()
    with pytest.raises(DeliveryUnknown):
        channel(sendgrid, timeout=0.5).send(email())
    assert time.monotonic() - started < 5
    assert len(sendgrid.requests) == 1  # it did reach the provider

"""Provider webhooks and the one-click unsubscribe link, on the real API app (FastAPI TestClient)
of a runtime sending through the real SDKs to the fake providers: SendGrid's ECDSA-signed Event
Webhook (signed here with a P-256 key generated for the test, exactly as SendGrid signs),
Twilio's status callbacks and inbound messages (X-Twilio-Signature from the SDK's own
RequestValidator), and the signed unsubscribe URL found in an email the runtime sent."""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from orchestrator.api import create_app
from orchestrator.links import LinkSigner
from orchestrator.runtime import work
from orchestrator.store.schema import consents, deliveries, delivery_events, outbox, timers

from runtime.conftest import CART, LESSON
from runtime.harness import Harness

from .fakes import FcmFake, Recorded, SendGridFake, TwilioFake
from .stack import LINKS_BASE, SECRET, SERVICE, provider_harness

SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"
PHONE = "+14155550123"
HELP = "Northwind: reply STOP to stop, START to start again. Help: nw.example/help"


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_b64(key: ec.EllipticCurvePrivateKey) -> str:
    """The verification key as SendGrid's settings page shows it: base64 DER SubjectPublicKeyInfo."""
    return base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


def sendgrid_signature(key: ec.EllipticCurvePrivateKey, timestamp: str, body: bytes) -> str:
    return base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


@dataclass
class Api:
    h: Harness
    client: TestClient
    sendgrid: SendGridFake
    twilio: TwilioFake
    fcm: FcmFake
    key: ec.EllipticCurvePrivateKey

    # -- SendGrid --------------------------------------------------------------------------
    def event(self, mail: int, name: str, **extra: Any) -> dict[str, Any]:
        """A SendGrid event about the ``mail``-th email the fake accepted, as SendGrid posts it
        (custom_args flattened into the event)."""
        sent = self.sendgrid.mails[mail].json()
        return {
            "email": sent["personalizations"][0]["to"][0]["email"], "timestamp": int(time.time()),
            "event": name, "sg_event_id": secrets.token_urlsafe(16),
            "sg_message_id": f"{self.sendgrid.message_ids[mail]}.recvd-5f8d7c4-1-{mail}",
            "smtp-id": f"<{secrets.token_hex(8)}@ismtpd0001p1lon1.sendgrid.net>",
            "category": sent["categories"], **sent["custom_args"], **extra,
        }

    def post_events(self, events: list[dict[str, Any]], *, key: ec.EllipticCurvePrivateKey | None = None,
                    timestamp: str | None = None, headers: dict[str, str] | None = None,
                    body: bytes | None = None) -> Any:
        raw = json.dumps(events).encode()
        ts = timestamp or str(int(time.time()))
        signed = {SIGNATURE: sendgrid_signature(key or self.key, ts, raw), TIMESTAMP: ts,
                  "Content-Type": "application/json"}
        signed.update(headers or {})
        return self.client.post("/v1/webhooks/sendgrid", content=body if body is not None else raw,
                                headers={k: v for k, v in signed.items() if v is not None})

    # -- Twilio ----------------------------------------------------------------------------
    def twilio_post(self, url: str, params: dict[str, str], *, token: str | None = None,
                    signature: str | None = None) -> Any:
        """POST as Twilio does: to ``url`` (our public URL), form fields, X-Twilio-Signature."""
        sig = signature if signature is not None else \
            RequestValidator(token or self.twilio.auth_token).compute_signature(url, params)
        parts = urlsplit(url)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return self.client.post(path, data=params, headers={"X-Twilio-Signature": sig} if sig else {})

    def status_callback(self, message: Recorded, status: str, error_code: str | None = None,
                        **kwargs: Any) -> Any:
        form = message.form()
        sid = self.twilio.sids[self.twilio.messages.index(message)]
        params = {"AccountSid": self.twilio.account_sid, "ApiVersion": "2010-04-01", "From": "+15005550006",
                  "MessageSid": sid, "MessageStatus": status, "MessagingServiceSid": SERVICE,
                  "SmsSid": sid, "SmsStatus": status, "To": form["To"]}
        if error_code:
            params["ErrorCode"] = error_code
        return self.twilio_post(form["StatusCallback"], params, **kwargs)

    def inbound(self, body: str, phone: str = PHONE, **kwargs: Any) -> Any:
        params = {"AccountSid": self.twilio.account_sid, "ApiVersion": "2010-04-01", "Body": body,
                  "From": phone, "MessageSid": "SM" + secrets.token_hex(16), "NumMedia": "0",
                  "NumSegments": "1", "SmsMessageSid": "SM" + secrets.token_hex(16),
                  "To": "+15005550006", "FromCountry": "US"}
        return self.twilio_post(f"{LINKS_BASE}/v1/webhooks/twilio/inbound", params, **kwargs)

    # -- the store -------------------------------------------------------------------------
    def events_stored(self) -> int:
        with self.h.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(delivery_events)).scalar_one())

    def consent(self, user_id: str, channel: str) -> str | None:
        rows = self.h.rows(consents, user_id=user_id, channel=channel)
        return rows[0]["status"] if rows else None


def _api(make: Callable[..., Harness], sendgrid: SendGridFake, twilio: TwilioFake, fcm: FcmFake,
         **settings: Any) -> Iterator[Api]:
    key = new_key()
    h = provider_harness(make, sendgrid, twilio, fcm, **{
        "sendgrid_webhook_key": public_b64(key), "twilio_auth_token": twilio.auth_token,
        "sms_help_text": HELP, **settings})
    with TestClient(create_app(h.runtime, h.dispatcher)) as client:
        yield Api(h, client, sendgrid, twilio, fcm, key)


@pytest.fixture
def api(make_sqlite_harness: Callable[..., Harness], sendgrid: SendGridFake, twilio: TwilioFake,
        fcm: FcmFake) -> Iterator[Api]:
    yield from _api(make_sqlite_harness, sendgrid, twilio, fcm)


@pytest.fixture
def api_both(make_harness: Callable[..., Harness], sendgrid: SendGridFake, twilio: TwilioFake,
             fcm: FcmFake) -> Iterator[Api]:
    yield from _api(make_harness, sendgrid, twilio, fcm)


def email_nudge(api: Api, user_id: str = "ana") -> dict[str, Any]:
    """A cart nudge sent by email through SendGrid; its ledger row."""
    api.h.profile(user_id, email=f"{user_id}@example.com", phone=PHONE)
    api.h.track(user_id, "cart_updated", CART)
    api.h.tick(seconds=2)
    row = api.h.one(deliveries, user_id=user_id, step="nudge")
    assert (row["channel"], row["status"]) == ("email", "sent")
    return row


def sms_nudge(api: Api, user_id: str = "cy", **contact: Any) -> dict[str, Any]:
    api.h.profile(user_id, phone=PHONE, attributes={"preferred_channel": "sms"}, **contact)
    api.h.track(user_id, "cart_updated", CART)
    api.h.tick(seconds=2)
    row = api.h.rows(deliveries, order_by="id", user_id=user_id)[-1]
    assert (row["channel"], row["status"]) == ("sms", "sent")
    return row


# -- SendGrid Event Webhook ---------------------------------------------------------------------

def test_signed_events_update_the_delivery(api: Api) -> None:
    row = email_nudge(api)
    resp = api.post_events([api.event(0, "processed"), api.event(0, "delivered")])
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"applied": 2, "duplicates": 0, "unmatched": 0}
    assert api.h.one(deliveries, id=row["id"])["status"] == "delivered"
    assert api.events_stored() == 2
    assert api.consent("ana", "email") is None


def test_events_match_by_message_id_without_our_custom_args(api: Api) -> None:
    row = email_nudge(api)
    event = api.event(0, "delivered")
    for k in ("delivery_id", "journey", "step"):
        del event[k]
    assert api.post_events([event]).json()["applied"] == 1
    assert api.h.one(deliveries, id=row["id"])["status"] == "delivered"


def test_a_bounce_stops_every_journeys_email_at_once_including_queued_messages(api: Api) -> None:
    h = api.h
    email_nudge(api)  # the cart nudge: email 0
    h.track("ana", "lesson_completed", LESSON)
    h.clock.advance(seconds=3)
    # The lesson reminder and the cart offer come due; a worker queues them and has not sent them yet.
    due = [t["id"] for t in h.rows(timers, status="pending") if t["fire_at"] <= h.now]
    queued = work.fire_timers(h.engine, h.runtime.registry, due, h.now)
    assert len(queued.messages) == 2

    resp = api.post_events([api.event(0, "bounce", reason="550 5.1.1 The email account does not exist",
                                      type="bounce", status="5.1.1")])
    assert resp.json()["applied"] == 1
    assert api.consent("ana", "email") == "bounced"
    assert h.one(deliveries, step="nudge")["status"] == "bounced"

    report = h.runtime.send_messages(list(queued.messages))
    assert (report.sent, report.skipped) == (0, 2)
    offer = h.one(outbox, step="offer")  # email only
    assert (offer["status"], offer["reason"], offer["detail"]) == ("skipped", "unsubscribed", "email: unsubscribed")
    reminder = h.one(outbox, journey="lesson_reminder")  # push (no device) or email
    assert (reminder["status"], reminder["reason"]) == ("skipped", "no_reachable_channel")
    assert "email: unsubscribed" in reminder["detail"]
    assert len(api.sendgrid.requests) == 1
    h.track("ana", "cart_updated", {**CART, "cart_id": "c-2"})
    h.tick(seconds=2)  # a new nudge falls back to sms
    assert len(api.twilio.messages) == 1


def test_a_spam_report_stops_email(api: Api) -> None:
    email_nudge(api)
    assert api.post_events([api.event(0, "spamreport")]).json()["applied"] == 1
    assert api.consent("ana", "email") == "spam"
    assert api.h.one(deliveries)["status"] == "sent"  # a spam report is no delivery status


def test_an_unsubscribe_event_stops_email(api: Api) -> None:
    email_nudge(api)
    api.post_events([api.event(0, "unsubscribe")])
    assert api.consent("ana", "email") == "unsubscribed"


def test_a_duplicate_event_is_applied_once(api: Api) -> None:
    email_nudge(api)
    event = api.event(0, "delivered")
    first = api.post_events([event])
    again = api.post_events([event])  # SendGrid retries a batch it got no 2xx for
    in_one_batch = api.post_events([api.event(0, "open"), *[dict(event)] * 2])
    assert first.json()["applied"] == 1
    assert again.json() == {"applied": 0, "duplicates": 1, "unmatched": 0}
    assert in_one_batch.json() == {"applied": 1, "duplicates": 2, "unmatched": 0}
    assert api.events_stored() == 2


def test_out_of_order_events_never_move_a_delivery_back(api: Api) -> None:
    email_nudge(api)
    api.post_events([api.event(0, "delivered")])
    api.post_events([api.event(0, "processed")])  # arrives late
    api.post_events([api.event(0, "deferred", response="400 try again later")])
    api.post_events([api.event(0, "open")])
    assert api.h.one(deliveries)["status"] == "delivered"
    assert api.events_stored() == 4


def test_unmatched_events_are_recorded_and_counted(api: Api) -> None:
    email_nudge(api)
    event = {**api.event(0, "delivered"), "delivery_id": "nope", "sg_message_id": "unknown.filter"}
    assert api.post_events([event]).json() == {"applied": 0, "duplicates": 0, "unmatched": 1}
    assert api.h.one(deliveries)["status"] == "sent"


@pytest.mark.parametrize("forge", [
    "other_key", "tampered_body", "no_signature", "no_timestamp", "stale_timestamp", "future_timestamp",
    "garbage_signature", "other_timestamp",
])
def test_forged_or_unsigned_events_are_refused_and_change_nothing(api: Api, forge: str) -> None:
    email_nudge(api)
    events = [api.event(0, "bounce"), api.event(0, "spamreport")]
    if forge == "other_key":
        resp = api.post_events(events, key=new_key())
    elif forge == "tampered_body":
        good = json.dumps(events).encode()
        ts = str(int(time.time()))
        evil = json.dumps([{**events[0], "delivery_id": "x"}, events[1]]).encode()
        resp = api.client.post("/v1/webhooks/sendgrid", content=evil, headers={
            SIGNATURE: sendgrid_signature(api.key, ts, good), TIMESTAMP: ts})
    elif forge == "no_signature":
        resp = api.post_events(events, headers={SIGNATURE: None})  # type: ignore[dict-item]
    elif forge == "no_timestamp":
        resp = api.post_events(events, headers={TIMESTAMP: None})  # type: ignore[dict-item]
    elif forge == "stale_timestamp":  # correctly signed, but captured an hour ago and replayed
        resp = api.post_events(events, timestamp=str(int(time.time()) - 3600))
    elif forge == "future_timestamp":
        resp = api.post_events(events, timestamp=str(int(time.time()) + 3600))
    elif forge == "garbage_signature":
        resp = api.post_events(events, headers={SIGNATURE: "not base64 !!"})
    else:  # signed for one timestamp, sent with another
        ts = str(int(time.time()))
        raw = json.dumps(events).encode()
        resp = api.client.post("/v1/webhooks/sendgrid", content=raw, headers={
            SIGNATURE: sendgrid_signature(api.key, ts, raw), TIMESTAMP: str(int(ts) - 1)})
    assert resp.status_code == 401, resp.text
    assert api.events_stored() == 0
    assert api.h.one(deliveries)["status"] == "sent"
    assert api.h.rows(consents) == []


def test_without_a_configured_key_every_event_is_refused(
    make_sqlite_harness: Callable[..., Harness], sendgrid: SendGridFake, twilio: TwilioFake, fcm: FcmFake,
) -> None:
    for api in _api(make_sqlite_harness, sendgrid, twilio, fcm, sendgrid_webhook_key="", twilio_auth_token=""):
        email_nudge(api)
        assert api.post_events([api.event(0, "bounce")]).status_code == 401
        assert api.inbound("STOP").status_code == 401
        assert api.events_stored() == 0 and api.h.rows(consents) == []


# -- Twilio ---------------------------------------------------------------------------------------

def test_a_signed_status_callback_marks_the_sms_delivered(api: Api) -> None:
    row = sms_nudge(api)
    (message,) = api.twilio.messages
    assert api.status_callback(message, "sent").status_code == 200
    resp = api.status_callback(message, "delivered")
    assert resp.status_code == 200, resp.text
    assert resp.json()["applied"] == 1
    assert api.h.one(deliveries, id=row["id"])["status"] == "delivered"
    assert api.status_callback(message, "sent").json()["duplicates"] == 1  # replayed: nothing moves
    assert api.h.one(deliveries, id=row["id"])["status"] == "delivered"


def test_an_undelivered_sms_to_a_dead_number_suppresses_sms(api: Api) -> None:
    row = sms_nudge(api)
    api.status_callback(api.twilio.messages[0], "undelivered", "30006")  # landline or unreachable carrier
    assert api.h.one(deliveries, id=row["id"])["status"] == "failed"
    assert api.consent("cy", "sms") == "rejected"


def test_forged_status_callbacks_are_refused(api: Api) -> None:
    row = sms_nudge(api)
    message = api.twilio.messages[0]
    assert api.status_callback(message, "delivered", token="not-our-token").status_code == 401
    assert api.status_callback(message, "delivered", signature="").status_code == 401
    # a genuine signature for other parameters
    good = RequestValidator(api.twilio.auth_token).compute_signature(
        message.form()["StatusCallback"], {"MessageStatus": "sent"})
    assert api.status_callback(message, "delivered", signature=good).status_code == 401
    assert api.events_stored() == 0
    assert api.h.one(deliveries, id=row["id"])["status"] == "sent"


def test_inbound_stop_start_and_help(api: Api) -> None:
    h = api.h
    sms_nudge(api, consent={"sms": "opted_in"})
    resp = api.inbound("Stop")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("application/xml")
    assert "<Message>" not in resp.text  # Twilio answers STOP itself
    assert api.consent("cy", "sms") == "unsubscribed"
    h.track("cy", "cart_updated", {**CART, "cart_id": "c-2"})
    h.tick(seconds=2)  # the next sms is skipped (cy has no other channel)
    box = h.rows(outbox, order_by="id")[-1]
    assert (box["status"], box["reason"]) == ("skipped", "no_reachable_channel")
    assert "sms: unsubscribed" in box["detail"]
    assert len(api.twilio.requests) == 1

    resp = api.inbound("HELP")
    assert f"<Message>{HELP}</Message>" in resp.text
    assert api.consent("cy", "sms") == "unsubscribed"

    assert "<Message>" not in api.inbound(" start ").text
    assert api.consent("cy", "sms") == "opted_in"
    h.track("cy", "cart_updated", {**CART, "cart_id": "c-3"})
    h.tick(seconds=2)
    assert len(api.twilio.messages) == 2

    assert api.inbound("Thanks!").status_code == 200  # not a keyword: nothing changes
    assert api.consent("cy", "sms") == "opted_in"
    assert api.inbound("STOP", phone="+14155559999").status_code == 200  # nobody's number
    assert api.consent("cy", "sms") == "opted_in"


def test_a_forged_inbound_stop_is_refused(api: Api) -> None:
    sms_nudge(api)
    assert api.inbound("STOP", token="not-our-token").status_code == 401
    assert api.inbound("STOP", signature="").status_code == 401
    assert api.consent("cy", "sms") is None


# -- the one-click unsubscribe link --------------------------------------------------------------

def unsubscribe_url(api: Api, mail: int = 0) -> str:
    header = api.sendgrid.mails[mail].json()["headers"]["List-Unsubscribe"]
    assert header.startswith("<") and header.endswith(">")
    return header[1:-1]


def test_the_link_in_an_email_shows_a_page_and_post_unsubscribes_that_channel_only(api: Api) -> None:
    h = api.h
    email_nudge(api)
    url = unsubscribe_url(api)
    assert url.startswith(f"{LINKS_BASE}/v1/unsubscribe/")
    path = urlsplit(url).path

    page = api.client.get(path)  # a mail scanner following the link: nothing happens
    assert page.status_code == 200
    assert f'<form method="post" action="{url}"><button type="submit">' in page.text
    assert h.rows(consents) == []

    # the mailbox's RFC 8058 one-click POST
    done = api.client.post(path, content=b"List-Unsubscribe=One-Click",
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status_code == 200 and "unsubscribed" in done.text
    (row,) = h.rows(consents)
    assert (row["user_id"], row["channel"], row["status"], row["source"]) == ("ana", "email", "unsubscribed", "link")

    h.track("ana", "cart_updated", {**CART, "cart_id": "c-2"})
    h.tick(seconds=2)  # email is off; sms (the same user) still works
    assert len(api.sendgrid.mails) == 1 and len(api.twilio.messages) == 1
    assert api.client.post(path).status_code == 200  # twice: still fine


@pytest.mark.parametrize("tamper", ["other_user", "other_channel", "other_secret", "no_mac", "garbage"])
def test_a_tampered_link_is_refused_and_changes_nothing(api: Api, tamper: str) -> None:
    email_nudge(api)
    email_nudge(api, "bob")
    token = urlsplit(unsubscribe_url(api)).path.rsplit("/", 1)[1]
    payload, mac = token.split(".")
    forged_payload = {
        "other_user": LinkSigner(b"x", "").token("bob", "email").split(".")[0],
        "other_channel": LinkSigner(b"x", "").token("ana", "sms").split(".")[0],
    }
    bad = {
        "other_user": f"{forged_payload['other_user']}.{mac}",
        "other_channel": f"{forged_payload['other_channel']}.{mac}",
        "other_secret": LinkSigner(b"not-" + SECRET.encode(), LINKS_BASE).token("bob", "email"),
        "no_mac": payload,
        "garbage": "%%%.%%%",
    }[tamper]
    assert api.client.get(f"/v1/unsubscribe/{bad}").status_code == 400
    assert api.client.post(f"/v1/unsubscribe/{bad}").status_code == 400
    assert api.h.rows(consents) == []


def test_without_a_secret_key_there_is_no_link_and_no_page(
    make_sqlite_harness: Callable[..., Harness], sendgrid: SendGridFake, twilio: TwilioFake, fcm: FcmFake,
) -> None:
    for api in _api(make_sqlite_harness, sendgrid, twilio, fcm, secret_key=""):
        email_nudge(api)
        assert "headers" not in api.sendgrid.mails[0].json()
        token = LinkSigner(SECRET.encode(), LINKS_BASE).token("ana", "email")
        assert api.client.post(f"/v1/unsubscribe/{token}").status_code == 400
        assert api.h.rows(consents) == []


# -- a webhook arriving before the provider call has returned -------------------------------------

def test_a_status_that_arrives_before_the_send_returns_is_not_overwritten(api_both: Api) -> None:
    """Twilio and SendGrid post their first events within a second or two; the runtime writes
    the outcome of a send only after every call of its batch. A 'delivered' (or a bounce) that
    lands in between must not be turned back into 'sent'."""
    api = api_both

    def deliver_sms_at_once(req: Recorded) -> None:
        if req.path.endswith("/Messages.json"):
            form = req.form()
            params = {"MessageSid": "SMearly", "MessageStatus": "delivered", "To": form["To"],
                      "AccountSid": api.twilio.account_sid}
            api.twilio_post(form["StatusCallback"], params)

    def bounce_email_at_once(req: Recorded) -> None:
        mail = req.json()
        event = {"email": mail["personalizations"][0]["to"][0]["email"], "timestamp": int(time.time()),
                 "event": "bounce", "sg_event_id": "early-bounce", "sg_message_id": "early.filter",
                 **mail["custom_args"]}
        assert api.post_events([event]).json()["applied"] == 1

    api.twilio.on_request = deliver_sms_at_once
    api.sendgrid.on_request = bounce_email_at_once
    api.h.profile("cy", phone=PHONE, attributes={"preferred_channel": "sms"})
    api.h.profile("ana", email="ana@example.com")
    api.h.track("cy", "cart_updated", CART)
    api.h.track("ana", "cart_updated", CART)
    api.h.tick(seconds=2)
    sms = api.h.one(deliveries, user_id="cy")
    email = api.h.one(deliveries, user_id="ana")
    assert (sms["status"], sms["provider_id"]) == ("delivered", api.twilio.sids[0])
    assert (email["status"], email["provider_id"]) == ("bounced", api.sendgrid.message_ids[0])
    assert sms["sent_at"] is not None and email["sent_at"] is not None
    assert api.consent("ana", "email") == "bounced"


def test_the_unsubscribe_link_in_the_email_body_leads_to_the_page(api: Api) -> None:
    email_nudge(api)
    text = api.sendgrid.mails[0].json()["content"][0]["value"]
    (line,) = [ln for ln in text.splitlines() if ln.startswith("Unsubscribe: ")]
    url = line.removeprefix("Unsubscribe: ")
    assert url.startswith(LINKS_BASE)
    page = api.client.get(url.removeprefix(LINKS_BASE))
    assert page.status_code == 200 and "<form method=\"post\"" in page.text

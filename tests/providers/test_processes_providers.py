"""End to end with real processes and the real provider SDKs: the Procfile's web, worker and
scheduler (tests/runtime/procs.py) on PostgreSQL and Redis, configured only through the
environment as an operator would (``JOURNEY_CHANNELS=email=sendgrid,sms=twilio,push=fcm`` and
each provider's variables), sending to the fake SendGrid, Twilio and FCM servers running in
this test process (tests/providers/fakes.py). Events go in over HTTP with the Python client;
the provider webhooks (a signed Twilio inbound STOP, a signed SendGrid bounce) and the one-click
unsubscribe POST of the List-Unsubscribe URL go to the web process over HTTP as the providers
and mailboxes send them.

Journeys wait seconds: the cart nudge goes 2 s after the cart and the offer 5 s after that; the
lesson reminder 3 s after the lesson; onboarding welcomes at once, nudges by push after 1 s and
texts after 5 s more.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from typing import Any, Iterator

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from orchestrator.links import LinkSigner
from orchestrator.store.schema import consents, deliveries, outbox

from runtime.conftest import CART, LESSON, ROOT
from runtime.harness import write_journey
from runtime.procs import Stack, diagnosed, wait_until, write_project

from .fakes import FcmFake, SendGridFake, TwilioFake

SECRET = "e2e-provider-secret"
SERVICE = "MG" + "c" * 32
SHOP = "shop@northwind.example"
SETTLE = 20.0  # seconds for something that should take one or two
INSTALL = {"platform": "ios", "app_version": "4.2.0"}
CART_TEXT = """
trigger:
  event: cart_updated
  when: "event['items'] | length > 0"
re_entry: restart
goals: [order_completed]
conversion_window: 60s
steps:
  - id: wait_a_bit
    wait: 2s
  - id: nudge
    send: {channel: preferred, fallback: [push, email, sms], template: cart_nudge}
  - id: wait_for_order
    wait_for: {event: order_completed, timeout: 5s, on_event: end, on_timeout: offer}
  - id: offer
    send: {channel: email, template: cart_discount}
"""


def uid(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def phone() -> str:
    return f"+1415{secrets.randbelow(10**7):07d}"


# -- the providers, the keys, the processes -----------------------------------------------------

@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[SendGridFake, TwilioFake, FcmFake]]:
    made = (SendGridFake(), TwilioFake(), FcmFake())
    yield made
    for fake in made:
        fake.close()


@pytest.fixture(scope="module")
def webhook_key() -> ec.EllipticCurvePrivateKey:
    """The key SendGrid signs its Event Webhook with (a fresh P-256 key for the test)."""
    return ec.generate_private_key(ec.SECP256R1())


def public_b64(key: ec.EllipticCurvePrivateKey) -> str:
    return base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, fakes: tuple[SendGridFake, TwilioFake, FcmFake],
         webhook_key: ec.EllipticCurvePrivateKey) -> Iterator[Stack]:
    sendgrid, twilio, fcm = fakes
    project = write_project(tmp_path_factory.mktemp("providers-e2e") / "project")
    write_journey(project, "cart_abandonment", CART_TEXT)
    onboarding = (ROOT / "journeys" / "onboarding.yaml").read_text(encoding="utf-8")
    write_journey(project, "onboarding", onboarding.replace("wait: 1d", "wait: 1s").replace("wait: 2d", "wait: 5s"))
    stack = Stack.create(
        tmp_path_factory.mktemp("providers-live"), project,
        JOURNEY_CHANNELS="email=sendgrid,sms=twilio,push=fcm",
        JOURNEY_SECRET_KEY=SECRET,
        SENDGRID_API_KEY=sendgrid.api_key, SENDGRID_FROM_EMAIL=SHOP, SENDGRID_FROM_NAME="Northwind",
        SENDGRID_API_HOST=sendgrid.url, SENDGRID_WEBHOOK_PUBLIC_KEY=public_b64(webhook_key),
        TWILIO_ACCOUNT_SID=twilio.account_sid, TWILIO_AUTH_TOKEN=twilio.auth_token,
        TWILIO_MESSAGING_SERVICE_SID=SERVICE, TWILIO_API_BASE=twilio.url,
        FCM_CREDENTIALS=json.dumps(fcm.service_account), FCM_API_BASE=fcm.url,
    )
    # JOURNEY_LINKS_BASE is the web process (Stack.create): links and callbacks lead there.
    assert stack.env["JOURNEY_LINKS_BASE"] == stack.base_url
    try:
        stack.journey("db", "upgrade")
        deployed = stack.journey("deploy")
        assert all(f"{j}: version" in deployed for j in ("cart_abandonment", "lesson_reminder", "onboarding"))
        stack.start_all()
        yield stack
    finally:
        stack.close()


# -- reading what arrived -------------------------------------------------------------------------

def mails_to(sendgrid: SendGridFake, address: str) -> list[dict[str, Any]]:
    return [m.json() for m in list(sendgrid.mails)
            if m.json()["personalizations"][0]["to"][0]["email"] == address]


def texts_to(twilio: TwilioFake, number: str) -> list[dict[str, str]]:
    return [r.form() for r in list(twilio.messages) if r.form().get("To") == number]


def pushes_to(fcm: FcmFake, token: str) -> list[dict[str, Any]]:
    return [r.json()["message"] for r in list(fcm.sent) if r.json()["message"].get("token") == token]


def requests_to(fake: SendGridFake | TwilioFake, needle: str) -> int:
    """Every request that reached the fake mentioning ``needle`` (accepted or not)."""
    return sum(needle in r.body.decode("utf-8", "replace") for r in list(fake.requests))


def ledger(stack: Stack, user_id: str) -> list[dict[str, Any]]:
    return stack.select(select(deliveries).where(deliveries.c.user_id == user_id).order_by(deliveries.c.id))


def steps(stack: Stack, user_id: str, step: str) -> list[dict[str, Any]]:
    return stack.select(select(outbox).where(outbox.c.user_id == user_id, outbox.c.step == step)
                        .order_by(outbox.c.id))


def settled(stack: Stack, user_id: str, step: str) -> dict[str, Any] | None:
    """The user's latest outbox row for ``step``, once it is decided."""
    rows = steps(stack, user_id, step)
    return rows[-1] if rows and rows[-1]["status"] in ("sent", "skipped", "failed", "rejected") else None


def consent(stack: Stack, user_id: str, channel: str) -> tuple[str, str] | None:
    rows = stack.select(select(consents).where(consents.c.user_id == user_id, consents.c.channel == channel))
    return (rows[0]["status"], rows[0]["source"]) if rows else None


# -- what the providers post --------------------------------------------------------------------

def twilio_inbound(stack: Stack, twilio: TwilioFake, sender: str, body: str) -> httpx.Response:
    """An inbound SMS as Twilio posts it to our webhook, signed with the account's auth token
    over our public URL and the form fields (the SDK's own RequestValidator)."""
    url = f"{stack.env['JOURNEY_LINKS_BASE']}/v1/webhooks/twilio/inbound"
    params = {"AccountSid": twilio.account_sid, "ApiVersion": "2010-04-01", "Body": body, "From": sender,
              "MessageSid": "SM" + secrets.token_hex(16), "NumMedia": "0", "NumSegments": "1",
              "SmsMessageSid": "SM" + secrets.token_hex(16), "To": "+15005550006", "FromCountry": "US"}
    signature = RequestValidator(twilio.auth_token).compute_signature(url, params)
    return httpx.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)


def sendgrid_events(stack: Stack, key: ec.EllipticCurvePrivateKey, events: list[dict[str, Any]]) -> httpx.Response:
    """SendGrid's Event Webhook: a JSON list, ECDSA-signed over timestamp + body."""
    raw = json.dumps(events).encode()
    stamp = str(int(time.time()))
    signature = base64.b64encode(key.sign(stamp.encode() + raw, ec.ECDSA(hashes.SHA256()))).decode()
    return httpx.post(f"{stack.base_url}/v1/webhooks/sendgrid", content=raw, timeout=10, headers={
        "Content-Type": "application/json", "X-Twilio-Email-Event-Webhook-Signature": signature,
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp})


def bounce_of(stack: Stack, mail: dict[str, Any]) -> dict[str, Any]:
    """A hard bounce of ``mail`` as SendGrid reports it: custom_args flattened into the event,
    sg_message_id = the X-Message-Id SendGrid answered the send with, plus a filter suffix."""
    args = mail["custom_args"]
    (row,) = stack.select(select(deliveries).where(deliveries.c.key == args["delivery_id"]))
    return {"email": mail["personalizations"][0]["to"][0]["email"], "timestamp": int(time.time()),
            "event": "bounce", "type": "bounce", "status": "5.1.1",
            "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
            "sg_event_id": secrets.token_urlsafe(16),
            "sg_message_id": f"{row['provider_id']}.recvd-5f8d7c4-1-0",
            "smtp-id": f"<{secrets.token_hex(8)}@ismtpd0001p1lon1.sendgrid.net>",
            "category": mail.get("categories", []), **args}


# -- the tests -------------------------------------------------------------------------------------

@diagnosed
def test_each_journey_arrives_at_sendgrid_twilio_and_fcm_through_the_sdks(
    live: Stack, fakes: tuple[SendGridFake, TwilioFake, FcmFake],
) -> None:
    sendgrid, twilio, fcm = fakes
    client = live.client()
    ana, ben, cy = uid("ana"), uid("ben"), uid("cy")
    cy_phone = phone()
    client.put_profile(ana, email=f"{ana}@example.com", push_tokens=[f"tok-{ana}"],
                       attributes={"first_name": "Ana", "preferred_channel": "push"})
    client.put_profile(ben, email=f"{ben}@example.com", attributes={"first_name": "Ben"})
    client.put_profile(cy, email=f"{cy}@example.com", phone=cy_phone, push_tokens=[f"tok-{cy}"],
                       consent={"sms": "opted_in"}, attributes={"first_name": "Cy"})
    client.track(ana, "cart_updated", CART)
    client.track(ben, "lesson_completed", LESSON)
    client.track(cy, "app_installed", INSTALL)

    # onboarding: the welcome email at once, the profile nudge by push, then the SMS offer
    (welcome,) = wait_until(lambda: mails_to(sendgrid, f"{cy}@example.com"), SETTLE, "cy's welcome email")
    assert welcome["subject"] == "Welcome to Northwind, Cy!"
    assert welcome["from"] == {"email": SHOP, "name": "Northwind"}
    assert welcome["custom_args"]["journey"] == "onboarding" and welcome["custom_args"]["step"] == "welcome"
    signer = LinkSigner(SECRET.encode(), live.base_url)
    assert welcome["headers"]["List-Unsubscribe"] == f"<{signer.unsubscribe_url(cy, 'email')}>"
    (profile_push,) = wait_until(lambda: pushes_to(fcm, f"tok-{cy}"), SETTLE, "cy's profile push")
    assert profile_push["notification"]["title"] == "Finish your profile"
    assert profile_push["data"]["link"] == "northwind://profile"

    # the cart: the nudge by push (preferred), then the offer by email
    (nudge,) = wait_until(lambda: pushes_to(fcm, f"tok-{ana}"), SETTLE, "ana's cart nudge push")
    assert nudge["notification"]["body"] == "Your Trail shoe is still in your cart. Tap to check out."
    assert nudge["data"]["link"] == "northwind://cart/c-1"
    assert len(fcm.token_requests) >= 1  # the OAuth exchange went to the fake token endpoint

    # the lesson: the reminder by email (no push token)
    (reminder,) = wait_until(lambda: mails_to(sendgrid, f"{ben}@example.com"), SETTLE, "ben's reminder")
    assert reminder["subject"] == "Keep your 5-day streak going"
    assert [c["type"] for c in reminder["content"]] == ["text/plain", "text/html"]
    assert reminder["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    (text,) = wait_until(lambda: texts_to(twilio, cy_phone), SETTLE, "cy's first-order SMS")
    assert text["Body"].startswith("Northwind: Cy, your first order ships free")
    assert text["MessagingServiceSid"] == SERVICE and "From" not in text
    assert text["StatusCallback"].startswith(f"{live.base_url}/v1/webhooks/twilio/status?d=")

    (offer,) = wait_until(lambda: mails_to(sendgrid, f"{ana}@example.com"), SETTLE, "ana's cart offer")
    assert offer["subject"] == "10% off the items in your cart"
    assert offer["custom_args"]["step"] == "offer"

    # The ledger knows each one as sent, under the provider's own id.
    def all_sent() -> list[dict[str, Any]] | None:
        rows = [d for u in (ana, ben, cy) for d in ledger(live, u)]
        return rows if len(rows) == 6 and all(d["status"] == "sent" for d in rows) else None

    rows = wait_until(all_sent, SETTLE, "six deliveries marked sent")
    by_step = {(d["user_id"], d["step"]): d for d in rows}
    assert by_step[(cy, "first_order_sms")]["provider_id"] in twilio.sids
    assert by_step[(ben, "reminder")]["provider_id"] in sendgrid.message_ids
    assert str(by_step[(ana, "nudge")]["provider_id"]).startswith("projects/demo-proj/messages/")
    assert {d["channel"] for d in rows} == {"email", "sms", "push"}


@diagnosed
def test_a_twilio_stop_and_a_sendgrid_bounce_stop_every_journey_at_once(
    live: Stack, fakes: tuple[SendGridFake, TwilioFake, FcmFake], webhook_key: ec.EllipticCurvePrivateKey,
) -> None:
    sendgrid, twilio, fcm = fakes
    client = live.client()
    dee, number = uid("dee"), phone()
    email = f"{dee}@example.com"
    # No push token; SMS preferred; opted in to SMS (the attribute onboarding's branch reads).
    client.put_profile(dee, email=email, phone=number,
                       attributes={"first_name": "Dee", "preferred_channel": "sms", "sms_opt_in": True})
    client.track(dee, "app_installed", INSTALL)  # welcome email now; SMS offer in 6 s
    client.track(dee, "cart_updated", CART)  # SMS nudge in 2 s; email offer in 7 s

    (welcome,) = wait_until(lambda: mails_to(sendgrid, email), SETTLE, "dee's welcome email")
    (nudge,) = wait_until(lambda: texts_to(twilio, number), SETTLE, "dee's cart nudge SMS")
    assert welcome["custom_args"]["journey"] == "onboarding" and nudge["Body"].startswith("Northwind: Dee")
    wait_until(lambda: all(d["status"] == "sent" for d in ledger(live, dee)) and len(ledger(live, dee)) == 2,
               SETTLE, "both marked sent")

    # Dee answers the cart SMS with STOP; the welcome email bounces.
    answer = twilio_inbound(live, twilio, number, "Stop")
    assert answer.status_code == 200, answer.text
    assert "<Message>" not in answer.text  # Twilio answers STOP itself; we stay silent
    bounced = sendgrid_events(live, webhook_key, [bounce_of(live, welcome)])
    assert bounced.status_code == 200, bounced.text
    assert bounced.json() == {"applied": 1, "duplicates": 0, "unmatched": 0}
    assert consent(live, dee, "sms") == ("unsubscribed", "sms_keyword")
    assert consent(live, dee, "email") == ("bounced", "sendgrid")
    welcome_row = next(d for d in ledger(live, dee) if d["step"] == "welcome")
    assert welcome_row["status"] == "bounced"
    client.track(dee, "lesson_completed", LESSON)  # a third journey: reminder by push or email in 3 s

    # Every later SMS and email for dee, whichever journey queued it, is skipped at send time.
    text_offer = wait_until(lambda: settled(live, dee, "first_order_sms"), SETTLE, "onboarding's SMS decided")
    assert (text_offer["status"], text_offer["reason"]) == ("skipped", "unsubscribed")
    assert text_offer["detail"] == "sms: unsubscribed"
    mail_offer = wait_until(lambda: settled(live, dee, "offer"), SETTLE, "the cart's email offer decided")
    assert (mail_offer["status"], mail_offer["reason"]) == ("skipped", "unsubscribed")
    assert mail_offer["detail"] == "email: unsubscribed"
    reminder = wait_until(lambda: settled(live, dee, "reminder"), SETTLE, "the lesson reminder decided")
    assert reminder["status"] == "skipped"
    assert reminder["detail"] == "push: no push token; email: unsubscribed"

    assert texts_to(twilio, number) == [nudge] and requests_to(twilio, number.lstrip("+")) == 1
    assert mails_to(sendgrid, email) == [welcome] and requests_to(sendgrid, email) == 1
    assert [(d["step"], d["channel"]) for d in ledger(live, dee)] == [("welcome", "email"), ("nudge", "sms")]


@diagnosed
def test_the_one_click_unsubscribe_url_the_mailbox_received_stops_email(
    live: Stack, fakes: tuple[SendGridFake, TwilioFake, FcmFake],
) -> None:
    sendgrid, _, _ = fakes
    client = live.client()
    eve = uid("eve")
    email = f"{eve}@example.com"
    client.put_profile(eve, email=email, attributes={"first_name": "Eve"})
    client.track(eve, "lesson_completed", LESSON)
    (reminder,) = wait_until(lambda: mails_to(sendgrid, email), SETTLE, "eve's reminder")

    # RFC 8058: the mailbox POSTs "List-Unsubscribe=One-Click" to the List-Unsubscribe URL.
    header = reminder["headers"]["List-Unsubscribe"]
    assert header.startswith("<") and header.endswith(">")
    url = header[1:-1]
    assert url.startswith(f"{live.base_url}/v1/unsubscribe/")
    assert url in reminder["content"][0]["value"]  # the same link in the footer
    page = httpx.get(url, timeout=10)  # a mail scanner following the link changes nothing
    assert page.status_code == 200 and consent(live, eve, "email") is None
    done = httpx.post(url, content=b"List-Unsubscribe=One-Click", timeout=10,
                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert done.status_code == 200 and "You are unsubscribed" in done.text
    assert consent(live, eve, "email") == ("unsubscribed", "link")

    client.track(eve, "lesson_completed", {**LESSON, "lesson_number": 13, "streak": 6})
    client.track(eve, "cart_updated", CART)  # another journey: email is its only way to her too

    def second_reminder() -> dict[str, Any] | None:
        rows = steps(live, eve, "reminder")
        return rows[1] if len(rows) == 2 and rows[1]["status"] != "pending" else None

    again = wait_until(second_reminder, SETTLE, "the second reminder decided")
    assert (again["status"], again["reason"], again["detail"]) == \
        ("skipped", "no_reachable_channel", "push: no push token; email: unsubscribed")
    nudge = wait_until(lambda: settled(live, eve, "nudge"), SETTLE, "the cart nudge decided")
    assert (nudge["status"], nudge["detail"]) == \
        ("skipped", "push: no push token; email: unsubscribed; sms: no phone number")
    assert mails_to(sendgrid, email) == [reminder] and requests_to(sendgrid, email) == 1

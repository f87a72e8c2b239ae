"""The runtime sending through the three official SDKs to the fake providers: the journeys'
messages on the wire, and what each provider answer does to the ledger, the consents and the
profile."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Callable
from urllib.parse import quote

from channels.twilio import TwilioChannel
from orchestrator.links import LinkSigner
from orchestrator.store.schema import consents, deliveries, outbox, profiles

from runtime.conftest import CART, LESSON
from runtime.harness import Harness

from .fakes import HANG, FcmFake, SendGridFake, TwilioFake
from .stack import LINKS_BASE, SECRET, SERVICE, SHOP, add_fast_onboarding, provider_harness

PHONE = "+14155550123"


def ledger(h: Harness, user_id: str) -> list[dict[str, object]]:
    return h.rows(deliveries, order_by="id", user_id=user_id)


def test_the_three_journeys_go_out_through_the_three_sdks(
    make_harness: Callable[..., Harness], fast_project: Path,
    sendgrid: SendGridFake, twilio: TwilioFake, fcm: FcmFake,
) -> None:
    add_fast_onboarding(fast_project)
    h = provider_harness(make_harness, sendgrid, twilio, fcm)
    h.profile("ana", email="ana@example.com", push_tokens=["tok-ana"], attributes={"first_name": "Ana"})
    h.profile("ben", email="ben@example.com", attributes={"first_name": "Ben"})
    h.profile("cy", email="cy@example.com", phone=PHONE, consent={"sms": "opted_in"},
              attributes={"first_name": "Cy", "profile_completed": True})
    h.track("ana", "cart_updated", CART)
    h.track("ben", "lesson_completed", LESSON)
    h.track("cy", "app_installed", {"platform": "ios", "app_version": "4.2.0"})  # the welcome email: now
    assert [m.json()["personalizations"][0]["to"][0]["email"] for m in sendgrid.mails] == ["cy@example.com"]
    for _ in range(5):  # nudge at 2 s, reminder at 3 s, onboarding sms at 4 s, cart offer at 5 s
        h.tick(seconds=1)

    # push: the cart nudge through FCM, one request for the one device
    assert len(fcm.sent) == 1 and len(fcm.token_requests) == 1
    push = fcm.sent[0].json()["message"]
    assert push["token"] == "tok-ana"
    assert push["notification"] == {"title": "Still thinking it over?",
                                    "body": "Your Trail shoe is still in your cart. Tap to check out."}
    assert push["data"]["link"] == "northwind://cart/c-1"
    assert push["android"]["collapse_key"] == "cart_abandonment.nudge"
    (nudge,) = [d for d in ledger(h, "ana") if d["step"] == "nudge"]
    assert (nudge["channel"], nudge["status"]) == ("push", "sent")
    assert nudge["provider_id"] and str(nudge["provider_id"]).startswith("projects/demo-proj/messages/")
    assert push["data"]["delivery_id"] == nudge["key"]

    # email: the welcome, the lesson reminder and the cart offer through SendGrid
    mails = {m.json()["personalizations"][0]["to"][0]["email"]: m.json() for m in sendgrid.mails}
    assert sorted(mails) == ["ana@example.com", "ben@example.com", "cy@example.com"]
    reminder = mails["ben@example.com"]
    assert reminder["from"] == {"email": SHOP, "name": "Northwind"}
    assert "5-day Spanish streak" in reminder["content"][0]["value"]
    assert [c["type"] for c in reminder["content"]] == ["text/plain", "text/html"]
    signer = LinkSigner(SECRET.encode(), LINKS_BASE)
    assert reminder["headers"]["List-Unsubscribe"] == f"<{signer.unsubscribe_url('ben', 'email')}>"
    assert reminder["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    (ben,) = ledger(h, "ben")
    assert reminder["custom_args"]["delivery_id"] == ben["key"]
    assert (ben["channel"], ben["status"]) == ("email", "sent")
    assert ben["provider_id"] in sendgrid.message_ids
    assert mails["ana@example.com"]["custom_args"]["step"] == "offer"

    # sms: day 3 of onboarding, for the opted-in user, through Twilio
    assert len(twilio.messages) == 1
    form = twilio.messages[0].form()
    sms = [d for d in ledger(h, "cy") if d["channel"] == "sms"]
    assert len(sms) == 1 and sms[0]["step"] == "first_order_sms" and sms[0]["status"] == "sent"
    assert form["To"] == PHONE and form["MessagingServiceSid"] == SERVICE and "From" not in form
    assert form["Body"].startswith("Northwind: Cy, your first order ships free")
    assert form["Body"].count("STOP") == 1  # the template has it: not appended twice
    assert form["StatusCallback"] == f"{LINKS_BASE}/v1/webhooks/twilio/status?d={quote(str(sms[0]['key']), safe='')}"
    assert sms[0]["provider_id"] == twilio.sids[0]
    assert sms[0]["segments"] == 1
    assert {d["status"] for d in h.rows(deliveries)} == {"sent"}
    assert {r["status"] for r in h.rows(outbox)} == {"sent"}


def test_a_number_that_said_stop_to_twilio_suppresses_sms_but_not_email(
    make_sqlite_harness: Callable[..., Harness], sendgrid: SendGridFake, twilio: TwilioFake, fcm: FcmFake,
) -> None:
    h = provider_harness(make_sqlite_harness, sendgrid, twilio, fcm)
    h.profile("dee", email="dee@example.com", phone=PHONE, attributes={"preferred_channel": "sms"})
    twilio.queue(TwilioFake.unsubscribed())  # 21610
    h.track("dee", "cart_updated", CART)
    h.tick(seconds=2)  # the nudge, on the preferred channel
    assert len(twilio.requests) == 1 and twilio.messages == []
    (nudge,) = ledger(h, "dee")
    assert (nudge["channel"], nudge["status"]) == ("sms", "rejected") and "21610" in str(nudge["error"])
    box = h.one(outbox, step="nudge")
    assert (box["status"], box["reason"]) == ("rejected", "rejected")
    consent = h.one(consents, user_id="dee", channel="sms")
    assert (consent["status"], consent["source"]) == ("rejected", "provider")
    assert h.rows(consents, user_id="dee", channel="email") == []

    h.tick(seconds=3)  # no order: the offer goes by email
    assert [m.json()["custom_args"]["step"] for m in sendgrid.mails] == ["offer"]
    h.track("dee", "cart_updated", {**CART, "cart_id": "c-2"})
    h.tick(seconds=2)  # a new nudge: sms is suppressed, push has no token: email
    assert [m.json()["custom_args"]["step"] for m in sendgrid.mails] == ["offer", "nudge"]
    assert len(twilio.requests) == 1
    assert h.rows(outbox, order_by="id")[-1]["detail"] == "fell back from sms, push"


def test_unregistered_push_tokens_are_removed_from_the_profile(
    make_harness: Callable[..., Harness], sendgrid: SendGridFake, twilio: TwilioFake, fcm: FcmFake,
) -> None:
    h = provider_harness(make_harness, sendgrid, twilio, fcm)
    h.profile("eve", email="eve@example.com", push_tokens=["tok-dead", "tok-live"])
    fcm.per_token["tok-dead"] = FcmFake.unregistered()
    h.track("eve", "lesson_completed", LESSON)
    h.tick(seconds=3)
    assert [r.json()["message"]["token"] for r in fcm.sends] == ["tok-dead", "tok-live"]
    (first,) = ledger(h, "eve")
    assert (first["channel"], first["status"]) == ("push", "sent")
    assert h.one(profiles, user_id="eve")["push_tokens"] == ["tok-live"]

    fcm.per_token["tok-live"] = FcmFake.unregistered()  # the last device goes too
    h.track("eve", "lesson_completed", LESSON)
    h.tick(seconds=3)
    second = ledger(h, "eve")[-1]
    assert (second["channel"], second["status"]) == ("push", "rejected")
    assert h.one(profiles, user_id="eve")["push_tokens"] == []
    assert h.rows(consents, user_id="eve") == []  # a dead device is not an opt-out
    assert [r.json()["message"]["token"] for r in fcm.sends] == ["tok-dead", "tok-live", "tok-live"]

    h.track("eve", "lesson_completed", LESSON)
    h.tick(seconds=3)  # no device left: the reminder goes by email
    assert ledger(h, "eve")[-1]["channel"] == "email" and len(sendgrid.mails) == 1
    assert len(fcm.sends) == 3


def test_a_read_timeout_leaves_the_delivery_unknown_and_it_is_never_resent(
    make_sqlite_harness: Callable[..., Harness], sendgrid: SendGridFake, twilio: TwilioFake, fcm: FcmFake,
) -> None:
    h = provider_harness(make_sqlite_harness, sendgrid, twilio, fcm, timeout=0.5)
    h.profile("ben", email="ben@example.com")
    sendgrid.queue(HANG)
    h.track("ben", "lesson_completed", LESSON)
    h.tick(seconds=3)
    (row,) = ledger(h, "ben")
    assert row["status"] == "unknown" and "SendGrid" in str(row["error"])
    box = h.one(outbox)
    assert (box["status"], box["reason"]) == ("unknown", "unknown_outcome")
    for _ in range(3):
        h.tick(seconds=h.settings.lease + 1)
    h.runtime.send_messages([box["id"]])
    assert len(sendgrid.requests) == 1
    assert h.one(deliveries)["status"] == "unknown"


def test_a_429_puts_the_message_back_for_the_retry_after_seconds(
    make_sqlite_harness: Callable[..., Harness], sendgrid: SendGridFake, twilio: TwilioFake, fcm: FcmFake,
) -> None:
    h = provider_harness(make_sqlite_harness, sendgrid, twilio, fcm)
    h.profile("ben", email="ben@example.com")
    sendgrid.queue(SendGridFake.rate_limited(after=7))
    h.track("ben", "lesson_completed", LESSON)
    h.tick(seconds=3)
    box = h.one(outbox)
    assert (box["status"], box["attempts"], box["due_at"]) == ("pending", 1, h.now + timedelta(seconds=7))
    assert h.one(deliveries)["status"] == "retry"
    h.tick(seconds=6)
    assert len(sendgrid.requests) == 1
    h.tick(seconds=1)
    assert len(sendgrid.requests) == 2 and len(sendgrid.mails) == 1
    row = h.one(deliveries)
    assert (row["status"], row["provider_id"]) == ("sent", sendgrid.message_ids[0])
    # the retry is the same delivery: the same idempotency key on the wire
    assert {r.json()["custom_args"]["delivery_id"] for r in sendgrid.requests} == {row["key"]}


def test_sms_to_a_number_twilio_calls_invalid_falls_back_next_time(
    make_sqlite_harness: Callable[..., Harness], sendgrid: SendGridFake, twilio: TwilioFake, fcm: FcmFake,
) -> None:
    """A permanent failure on one SMS: Failed (Twilio refused our request) suppresses nothing."""
    h = provider_harness(make_sqlite_harness, sendgrid, twilio, fcm)
    assert isinstance(h.runtime.router.get("sms"), TwilioChannel)
    h.profile("fay", phone=PHONE, attributes={"preferred_channel": "sms"})
    twilio.queue(TwilioFake.error(400, 21617, "The concatenated message body exceeds the 1600 character limit."))
    h.track("fay", "cart_updated", CART)
    h.tick(seconds=2)
    box = h.one(outbox, step="nudge")
    assert (box["status"], box["reason"]) == ("failed", "provider_refused")
    assert h.rows(consents, user_id="fay") == []
    h.track("fay", "cart_updated", {**CART, "cart_id": "c-2"})
    h.tick(seconds=2)
    assert len(twilio.messages) == 1

"""A runtime whose channels are the real provider adapters pointed at the fake providers."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from channels.fcm import FcmChannel
from channels.sendgrid import SendGridChannel
from channels.twilio import TwilioChannel
from orchestrator.runtime.sending import ChannelRouter

from runtime.conftest import ROOT
from runtime.harness import Harness, write_journey

from .fakes import FcmFake, SendGridFake, TwilioFake

SECRET = "journey-test-secret"
LINKS_BASE = "https://journeys.example.com"
SERVICE = "MG" + "b" * 32
SHOP = "shop@northwind.example"


def provider_router(sendgrid: SendGridFake, twilio: TwilioFake, fcm: FcmFake, timeout: float = 1.0) -> ChannelRouter:
    return ChannelRouter({}, instances={
        "email": SendGridChannel(api_key=sendgrid.api_key, from_email=SHOP, from_name="Northwind",
                                 host=sendgrid.url, timeout=timeout),
        "sms": TwilioChannel(account_sid=twilio.account_sid, auth_token=twilio.auth_token,
                             messaging_service_sid=SERVICE, api_base=twilio.url, timeout=timeout),
        "push": FcmChannel(fcm.service_account, api_base=fcm.url, timeout=timeout),
    })


def add_fast_onboarding(project: Path) -> None:
    """The shipped onboarding journey with seconds instead of days."""
    text = (ROOT / "journeys" / "onboarding.yaml").read_text(encoding="utf-8")
    text = text.replace("wait: 1d", "wait: 1s").replace("wait: 2d", "wait: 2s")
    write_journey(project, "onboarding", text)


def provider_harness(make: Callable[..., Harness], sendgrid: SendGridFake, twilio: TwilioFake, fcm: FcmFake,
                     *, timeout: float = 1.0, **settings: Any) -> Harness:
    """A harness (tests/runtime/harness.py) sending through the three SDKs, with signed
    unsubscribe links and the webhook secrets in its settings."""
    h = make(router=provider_router(sendgrid, twilio, fcm, timeout))
    configured = dataclasses.replace(h.settings, **{"secret_key": SECRET, "links_base": LINKS_BASE, **settings})
    h.settings = configured
    h.runtime.settings = configured
    return h

"""The shipped journeys and templates: they compile, and every message every journey may send
renders for every sample user."""

from __future__ import annotations

import re
from typing import Any

import pytest

from orchestrator.compiler import compile_all
from orchestrator.effects import Send
from orchestrator.engine import Run, user_view
from orchestrator.inputs import read_users
from orchestrator.machine import Machine, SendState
from orchestrator.outbox import message_context
from orchestrator.render import Rendered
from orchestrator.segments import sms_size

try:
    from dryrun_helpers import JOURNEYS, PROJECT, SAMPLE_USERS, START, cart, example, machine, renderer, user
except ImportError:  # tests/ imported as a package
    from tests.dryrun_helpers import (
        JOURNEYS, PROJECT, SAMPLE_USERS, START, cart, example, machine, renderer, user,
    )

SAMPLE = read_users(SAMPLE_USERS)


def test_every_shipped_journey_compiles() -> None:
    machines, errors = compile_all(PROJECT)
    assert [str(e) for e in errors] == []
    assert sorted(machines) == sorted(JOURNEYS) == sorted(PROJECT.journey_names())
    for m in machines.values():
        assert m.version and m.states


def _cases() -> list[tuple[str, str, str, str]]:
    """``(journey, step, channel, template)`` for every channel every send step may use."""
    out = []
    for j in JOURNEYS:
        for sid, state in machine(j).states.items():
            if isinstance(state, SendState):
                for channel in state.channels:
                    out.append((j, sid, channel, state.template))
    return out


CASES = _cases()


def render_for(
    m: Machine, step: str, channel: str, template: str, profile: dict[str, Any], trigger: dict[str, Any]
) -> Rendered:
    run = Run(f"{m.journey}:{profile['id']}:1", m.journey, m.version, str(profile["id"]), START, trigger)
    send = Send(run.run_id, step, template, (channel,), False, 1, None)
    ctx = message_context(m, run, user_view(m, profile), send, channel, START, "https://example.invalid")
    return renderer().render(channel, template, ctx)


def test_cases_cover_every_channel_of_every_send_step() -> None:
    # Guard against the parametrization silently shrinking.
    assert ("cart_abandonment", "nudge", "sms", "cart_nudge") in CASES
    assert ("cart_abandonment", "nudge", "push", "cart_nudge") in CASES
    assert ("cart_abandonment", "nudge", "email", "cart_nudge") in CASES
    assert ("lesson_reminder", "reminder", "email", "streak_reminder") in CASES
    assert ("onboarding", "first_order_sms", "sms", "first_order_offer") in CASES
    assert len(CASES) == 10
    assert len(SAMPLE) == 10


@pytest.mark.parametrize("journey, step, channel, template", CASES)
def test_renders_for_every_sample_user(journey: str, step: str, channel: str, template: str) -> None:
    m = machine(journey)
    trigger = example(m.trigger_event)
    assert trigger, f"catalog.yaml has no example for {m.trigger_event}"
    for profile in SAMPLE:
        msg = render_for(m, step, channel, template, profile, trigger)
        where = f"{journey}/{step}/{channel} for {profile['id']}"
        assert msg.channel == channel
        assert msg.body.strip(), where
        assert "{{" not in msg.body and "}}" not in msg.body, where
        assert "None" not in msg.body.split(), where
        if channel == "email":
            assert msg.subject and msg.html, where
        if channel == "push":
            assert msg.subject and msg.link, where
        if channel == "sms":
            assert msg.segments == sms_size(msg.body).segments
            assert 1 <= msg.segments <= 2, f"{where}: {msg.segments} segments: {msg.body!r}"
        name = profile.get("first_name")
        if name and channel != "push":
            assert name in (msg.body + (msg.subject or "")), where


def test_a_user_without_first_name_is_greeted_generically() -> None:
    m = machine("onboarding")
    farah = next(u for u in SAMPLE if u["id"] == "u-farah")
    assert "first_name" not in farah
    msg = render_for(m, "welcome", "email", "welcome", farah, example("app_installed"))
    assert msg.subject == "Welcome to Northwind, friend!"
    assert msg.body.startswith("Hi there,")


# -- carts ------------------------------------------------------------------------------------

THREE = cart(
    "cart-777",
    ("SHIRT-L", "Linen shirt", 45.0, 1),
    ("TOTE-01", "Canvas tote", 12.5, 2),
    ("SOCK-W", "Wool socks", 9.0, 3),
)
CART_TEMPLATES = sorted(
    {(j, s, t) for j, s, ch, t in CASES if j == "cart_abandonment" and ch == "email"}
)


def test_cart_templates_are_found() -> None:
    assert {t for _, _, t in CART_TEMPLATES} == {"cart_nudge", "cart_discount"}


@pytest.mark.parametrize("journey, step, template", CART_TEMPLATES)
@pytest.mark.parametrize("trigger", [THREE, example("cart_updated")], ids=["three_items", "catalog"])
def test_cart_emails_list_every_item(journey: str, step: str, template: str, trigger: dict[str, Any]) -> None:
    m = machine(journey)
    msg = render_for(m, step, "email", template, user("u-1", first_name="Ana"), trigger)
    assert msg.html is not None
    for item in trigger["items"]:
        line_total = f"${item['price'] * item['quantity']:,.2f}"
        assert item["name"] in msg.body, f"{item['name']} missing from the text part"
        assert item["name"] in msg.html, f"{item['name']} missing from the html part"
        assert item["image_url"] in msg.html
        qty = f" x {item['quantity']}" if item["quantity"] > 1 else ""
        assert f"- {item['name']}{qty}: {line_total}" in msg.body
        assert line_total in msg.html
    assert f"Total: ${trigger['total']:,.2f}" in msg.body
    assert trigger["cart_id"] in msg.body and trigger["cart_id"] in msg.html
    # One line per item, no more (a loop that repeats or drops lines would show here).
    assert sum(1 for line in msg.body.splitlines() if line.startswith("- ")) == len(trigger["items"])


def test_three_item_cart_totals() -> None:
    assert THREE["total"] == 45.0 + 25.0 + 27.0
    m = machine("cart_abandonment")
    msg = render_for(m, "discount_email", "email", "cart_discount", user("u-1"), THREE)
    assert "With the code you pay $87.30." in msg.body  # 97.00 less 10%
    nudge = render_for(m, "nudge", "email", "cart_nudge", user("u-1"), THREE)
    assert "You left 3 items in your cart" in nudge.body
    assert nudge.subject == "U, your cart is waiting"


def test_cart_sms_and_push_summarise_the_cart() -> None:
    m = machine("cart_abandonment")
    sms = render_for(m, "nudge", "sms", "cart_nudge", user("u-1", first_name="Ana"), THREE)
    assert "your cart (3 items, $97.00)" in sms.body
    assert "https://nw.example/c/cart-777" in sms.body
    assert sms.segments == 1
    push = render_for(m, "nudge", "push", "cart_nudge", user("u-1"), THREE)
    assert push.body == "Linen shirt and 2 more items are still in your cart. Tap to check out."
    assert push.link == "northwind://cart/cart-777"
    one = cart("cart-1", ("CAP", "Olive cap", 37.5, 1))
    push1 = render_for(m, "nudge", "push", "cart_nudge", user("u-1"), one)
    assert push1.body == "Your Olive cap is still in your cart. Tap to check out."
    sms1 = render_for(m, "nudge", "sms", "cart_nudge", user("u-1", first_name="Ana"), one)
    assert "(1 item, $37.50)" in sms1.body


def test_item_names_are_escaped_in_html_only() -> None:
    m = machine("cart_abandonment")
    odd = cart("c-9", ("X", "Salt & <Pepper>", 3.0, 1), ("Y", "Tea", 2.0, 1))
    msg = render_for(m, "nudge", "email", "cart_nudge", user("u-1"), odd)
    assert msg.html is not None
    assert "Salt &amp; &lt;Pepper&gt;" in msg.html and "<Pepper>" not in msg.html
    assert "- Salt & <Pepper>: $3.00" in msg.body


def test_quantities_are_shown_in_both_parts() -> None:
    m = machine("cart_abandonment")
    msg = render_for(m, "nudge", "email", "cart_nudge", user("u-1"), THREE)
    assert msg.html is not None
    assert "Wool socks &times; 3" in msg.html
    assert "Linen shirt &times;" not in msg.html
    assert re.search(r"- Canvas tote x 2: \$25\.00", msg.body)


def test_sms_stays_within_two_segments_for_a_long_name() -> None:
    m = machine("cart_abandonment")
    long_name = "Maximiliana-Konstantina"
    for step, template in (("nudge", "cart_nudge"), ("free_shipping_sms", "cart_free_shipping")):
        msg = render_for(m, step, "sms", template, user("u-1", first_name=long_name), THREE)
        assert msg.segments is not None and msg.segments <= 2, msg.body

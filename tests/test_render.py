"""The template sandbox and the shipped layouts: what a template may and may not do."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from orchestrator.effects import Send
from orchestrator.engine import Run, user_view
from orchestrator.errors import RenderError
from orchestrator.machine import SendState
from orchestrator.outbox import message_context
from orchestrator.render import Conditions, Renderer, _money

try:
    from dryrun_helpers import START, example, machine, renderer, user
except ImportError:  # tests/ imported as a package
    from tests.dryrun_helpers import START, example, machine, renderer, user


# -- a scratch templates folder --------------------------------------------------------------


@pytest.fixture
def scratch(tmp_path: Path):
    """``render(source, **context)`` renders ``source`` as an SMS template in a fresh folder."""
    (tmp_path / "sms").mkdir()
    counter = iter(range(10_000))

    def render(source: str, **context: Any) -> str:
        name = f"t{next(counter)}"
        (tmp_path / "sms" / f"{name}.txt").write_text(source, encoding="utf-8")
        return Renderer(tmp_path).render("sms", name, context).body

    return render


def _ctx() -> dict[str, Any]:
    return {
        "user": {"id": "u-1", "first_name": "Ana", "last_name": None, "plan": "free"},
        "event": copy.deepcopy(example("cart_updated")),
    }


# -- sandbox ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ user.__class__ }}",
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__.mro() }}",
        "{{ user.mro }}",
        "{{ event['items'].__class__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ '{0.__class__}'.format(user) }}",
    ],
)
def test_template_cannot_reach_python_internals(scratch, source: str) -> None:
    with pytest.raises(RenderError):
        scratch(source, **_ctx())


def test_security_error_surfaces_as_render_error_saying_not_allowed(scratch) -> None:
    with pytest.raises(RenderError, match="not allowed") as info:
        scratch("{{ ''.__class__.__mro__[1].__subclasses__() }}", **_ctx())
    assert "__class__" in str(info.value)


def test_template_cannot_update_the_user(scratch) -> None:
    ctx = _ctx()
    before = copy.deepcopy(ctx["user"])
    for source in (
        "{{ user.update({'first_name': 'Mallory'}) }}",
        "{% set _ = user.update({'first_name': 'Mallory'}) %}x",
        "{{ (user | attr('update'))({'first_name': 'Mallory'}) }}",
        "{{ user.pop('first_name') }}",
        "{{ user.clear() }}",
    ):
        with pytest.raises(RenderError):
            scratch(source, **ctx)
    assert ctx["user"] == before


def test_template_cannot_append_to_the_cart(scratch) -> None:
    ctx = _ctx()
    items_before = copy.deepcopy(ctx["event"]["items"])
    for source in (
        "{{ event['items'].append({'name': 'free TV'}) }}",
        "{% set _ = event['items'].append(1) %}x",
        "{{ event['items'].pop() }}",
        "{{ event['items'].sort() }}",
        "{{ event['items'][0].update({'price': 0}) }}",
    ):
        with pytest.raises(RenderError):
            scratch(source, **ctx)
    assert ctx["event"]["items"] == items_before


def test_append_is_refused_by_the_immutable_sandbox(scratch) -> None:
    # Not merely "undefined": the sandbox itself refuses a list-mutating method.
    with pytest.raises(RenderError, match="not allowed.*append"):
        scratch("{{ event['items'].append(1) }}", **_ctx())


def test_reading_is_still_allowed(scratch) -> None:
    out = scratch(
        "{{ user.first_name }} {{ event['items'] | map(attribute='name') | join(', ') }}",
        **_ctx(),
    )
    assert out == "Ana Black tee (M), Olive cap"


# -- strictness -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    ["{{ nobody }}", "{{ user.nickname }}", "{{ event.itmes | length }}", "{{ event['nope'] }}"],
)
def test_undefined_variable_raises_render_error(scratch, source: str) -> None:
    with pytest.raises(RenderError):
        scratch(source, **_ctx())


def test_printing_none_raises_render_error(scratch) -> None:
    with pytest.raises(RenderError, match="empty value"):
        scratch("Hi {{ user.last_name }}", **_ctx())


def test_default_with_boolean_true_replaces_none(scratch) -> None:
    assert scratch("Hi {{ user.last_name | default('x', true) }}", **_ctx()) == "Hi x"
    # And an attribute that has a value keeps it.
    assert scratch("{{ user.first_name | default('x', true) }}", **_ctx()) == "Ana"


def test_if_guards_a_none_attribute(scratch) -> None:
    assert scratch("{% if user.last_name %}{{ user.last_name }}{% else %}-{% endif %}", **_ctx()) == "-"


def test_event_items_is_the_item_list_not_dict_items(scratch) -> None:
    ctx = _ctx()
    assert scratch("{{ event.items | length }}", **ctx) == "2"
    assert scratch("{% for i in event.items %}[{{ i.sku }}]{% endfor %}", **ctx) == (
        "[TEE-BLK-M][CAP-OLV]"
    )
    assert scratch("{{ event.items[1].name }}", **ctx) == "Olive cap"


def test_mapping_methods_are_not_reachable_as_attributes(scratch) -> None:
    # ``user.keys`` is not dict.keys: a mapping exposes its keys only.
    with pytest.raises(RenderError):
        scratch("{{ user.keys() | list }}", **_ctx())


# -- escaping ---------------------------------------------------------------------------------


def _email_for(first_name: str, template: str = "cart_nudge", journey: str = "cart_abandonment"):
    m = machine(journey)
    profile = user("u-esc", first_name=first_name)
    run = Run("r-esc", m.journey, m.version, "u-esc", START, example(m.trigger_event))
    send = Send("r-esc", "nudge", template, ("email",), False, 0)
    ctx = message_context(m, run, user_view(m, profile), send, "email", START, "https://links.test")
    return renderer().render("email", template, ctx)


def test_html_part_is_autoescaped_and_text_part_is_not() -> None:
    msg = _email_for("<script>alert(1)</script>")
    assert msg.html is not None
    assert "<script>" not in msg.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in msg.html
    assert "Hi <script>alert(1)</script>," in msg.body


def test_email_subject_is_plain_text_not_html_escaped() -> None:
    # The subject is a mail header, not HTML: an apostrophe or ampersand in a name must not
    # reach the inbox as &#39; or &amp;.
    msg = _email_for("O'Brien & Co")
    assert msg.subject == "O'Brien & Co, your cart is waiting"
    assert msg.html is not None and "O&#39;Brien &amp; Co" in msg.html


def test_sms_and_push_are_not_escaped() -> None:
    m = machine("cart_abandonment")
    profile = user("u-esc", first_name="Zoë & <Bo>")
    run = Run("r", m.journey, m.version, "u-esc", START, example("cart_updated"))
    for channel in ("sms", "push"):
        send = Send("r", "nudge", "cart_nudge", (channel,), False, 0)
        ctx = message_context(m, run, user_view(m, profile), send, channel, START, "https://l.test")
        msg = renderer().render(channel, "cart_nudge", ctx)
        if channel == "sms":
            assert "Zoë & <Bo>" in msg.body
        assert "&amp;" not in msg.body and "&lt;" not in msg.body


# -- the money filter -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount, currency, expected",
    [
        (87.5, "USD", "$87.50"),
        (0, "USD", "$0.00"),
        (1234.5, "EUR", "€1,234.50"),
        (1234.5, "eur", "€1,234.50"),
        (19, "GBP", "£19.00"),
        (99.999, "INR", "₹100.00"),
        (12, "BRL", "R$12.00"),
        (12, "CHF", "12.00 CHF"),
        ("7.5", "USD", "$7.50"),
        ("n/a", "USD", "n/a"),
    ],
)
def test_money(amount: Any, currency: str, expected: str) -> None:
    assert _money(amount, currency) == expected


def test_money_filter_in_a_template(scratch) -> None:
    assert scratch("{{ event.total | money(event.currency) }}", **_ctx()) == "$87.50"
    assert scratch("{{ 5 | money }}", **_ctx()) == "$5.00"
    assert scratch("{{ (event.total * 0.9) | money('EUR') }}", **_ctx()) == "€78.75"


# -- every shipped email and push -------------------------------------------------------------


def _send_templates(channel: str) -> list[tuple[str, str]]:
    """``(journey, template)`` for every send step that may use ``channel``."""
    out = []
    for j in ("cart_abandonment", "lesson_reminder", "onboarding"):
        for state in machine(j).states.values():
            if isinstance(state, SendState) and channel in state.channels:
                out.append((j, state.template))
    return sorted(set(out))


def _render_shipped(journey: str, template: str, channel: str, profile: dict[str, Any]):
    m = machine(journey)
    run = Run("r-1", m.journey, m.version, str(profile["id"]), START, example(m.trigger_event))
    send = Send("r-1", "step", template, (channel,), False, 0)
    view = user_view(m, profile)
    ctx = message_context(m, run, view, send, channel, START, "https://links.test")
    return renderer().render(channel, template, ctx)


def test_every_shipped_email_template_is_used_by_some_journey() -> None:
    shipped = {p.stem for p in (renderer().templates_dir / "email").glob("*.html")}
    assert shipped == {t for _, t in _send_templates("email")}


@pytest.mark.parametrize("journey, template", _send_templates("email"))
def test_every_email_has_subject_branded_html_and_text(journey: str, template: str) -> None:
    msg = _render_shipped(journey, template, "email", user("u-1", first_name="Ana"))
    assert msg.channel == "email"
    assert msg.subject and msg.subject.strip() == msg.subject
    assert msg.html is not None
    assert "Northwind" in msg.html
    assert 'href="https://links.test/unsubscribe?user=u-1&amp;channel=email"' in msg.html
    assert msg.html.lstrip().lower().startswith("<!doctype html>")
    assert f"<title>{msg.subject}</title>" in msg.html
    assert msg.body.strip()
    assert "{{" not in msg.body and "{%" not in msg.body
    assert "Unsubscribe: https://links.test/unsubscribe?user=u-1&channel=email" in msg.body
    assert "<p>" not in msg.body and "</" not in msg.body  # no HTML in the text part


@pytest.mark.parametrize("journey, template", _send_templates("push"))
def test_every_push_has_title_body_and_link(journey: str, template: str) -> None:
    msg = _render_shipped(journey, template, "push", user("u-1", first_name="Ana"))
    assert msg.channel == "push"
    assert msg.subject and msg.subject.strip()
    assert msg.body.strip()
    assert msg.link and "://" in msg.link and " " not in msg.link
    assert msg.html is None


# -- conditions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, context, expected",
    [
        ("user.country == 'FR'", {"user": {"country": "FR"}}, True),
        ("user.country == 'FR'", {"user": {"country": "DE"}}, False),
        ("user.country == 'FR'", {"user": {}}, False),  # missing attribute
        ("user.country == 'FR'", {}, False),  # missing user
        ("user.country != 'FR'", {"user": {}}, False),  # missing data never holds
        ("not user.profile_completed", {"user": {"profile_completed": False}}, True),
        ("not user.profile_completed", {"user": {"profile_completed": True}}, False),
        ("not user.profile_completed", {"user": {}}, False),
        ("user.sms_opt_in and not user.has_purchased", {"user": {"sms_opt_in": True, "has_purchased": False}}, True),
        ("user.sms_opt_in and not user.has_purchased", {"user": {"sms_opt_in": True, "has_purchased": True}}, False),
        ("event['items'] | length > 0", {"event": {"items": [1]}}, True),
        ("event['items'] | length > 0", {"event": {"items": []}}, False),
        ("event['items'] | length > 0", {"event": {}}, False),
        ("event.total > 50", {"event": {"total": 87.5}}, True),
        ("event.total > 50", {"event": {"total": 12}}, False),
        ("event.total > 50", {"event": {"total": "lots"}}, False),  # type error
        ("event.total / event.count > 1", {"event": {"total": 5, "count": 0}}, False),
        ("user.plan in ['pro', 'team']", {"user": {"plan": "pro"}}, True),
        ("user.plan in ['pro', 'team']", {"user": {"plan": None}}, False),
    ],
)
def test_conditions_evaluate(source: str, context: dict[str, Any], expected: bool) -> None:
    assert Conditions().evaluate(source, context) is expected


def test_conditions_cannot_mutate_either() -> None:
    ctx = {"user": {"first_name": "Ana"}, "event": {"items": [1, 2]}}
    assert Conditions().evaluate("event['items'].append(3) or true", ctx) is False
    assert Conditions().evaluate("user.update({'x': 1}) or true", ctx) is False
    assert ctx == {"user": {"first_name": "Ana"}, "event": {"items": [1, 2]}}


def test_conditions_check_rejects_braces_and_bad_syntax() -> None:
    c = Conditions()
    assert c.check("user.country == 'FR'") is None
    assert c.check("{{ user.country }}") is not None
    assert c.check("user.country ==") is not None

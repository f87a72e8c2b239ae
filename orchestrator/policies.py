"""Delivery policy: may this message go out now, on which channel, or why not. Core: pure
decisions over a read-only view of the user, their message history and ``now``.

Decided at send time, in this order, identically in the dry-run and in production:

1. **Run ended**: a message queued for a run that a goal or exit event has since ended is
   dropped (``goal_reached`` / ``exited``): nobody gets a cart reminder after buying.
2. **Channel choice**: the step's channels in order, the user's ``preferred_channel`` first
   when the step says ``preferred``. A channel is usable if the user has its contact point
   (``email``, ``phone``, ``push_tokens``) and has not unsubscribed from it (``unsubscribed``
   lists channels, or ``all``), nor, where the journey lists the channel under
   ``opt_in_required``, lacks ``<channel>_opt_in: true``. No usable channel: skipped,
   ``unsubscribed`` if opt-outs ruled out every channel, ``no_consent`` if opt-outs and missing
   opt-ins did, ``no_contact`` if contact points are missing, ``no_reachable_channel`` for a mix.
3. **Quiet hours** in the user's time zone (the journey's default zone if they have none): a
   message due inside the window is deferred to its end, then decided again.
4. **Frequency caps** over rolling windows, counted across everything the user was sent: a
   capped channel falls through to the next usable one; if all are capped, skipped
   (``frequency_cap``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import Any, Iterable, Mapping, Sequence

from .durations import format_duration
from .effects import quick_init
from .localtime import parse_hhmm, window_end, zone
from .machine import Cap, Delivery

CONTACT_FIELD = {"email": "email", "sms": "phone", "push": "push_tokens"}
CONTACT_LABEL = {"email": "no email address", "sms": "no phone number", "push": "no push token"}


@quick_init
@dataclass(frozen=True, slots=True)
class Deliver:
    channel: str
    fell_back_from: tuple[str, ...] = ()  # channels passed over, e.g. ("push",)


@quick_init
@dataclass(frozen=True, slots=True)
class Skip:
    # unsubscribed | no_consent | no_contact | no_reachable_channel | frequency_cap |
    # goal_reached | exited
    reason: str
    detail: str = ""


@quick_init
@dataclass(frozen=True, slots=True)
class Defer:
    until: datetime
    reason: str = "quiet_hours"


Decision = Deliver | Skip | Defer


@quick_init
@dataclass(frozen=True, slots=True)
class Sent:
    """One message in a user's history, for frequency caps."""

    channel: str
    at: datetime


def channel_order(channels: Sequence[str], prefer_user: bool, user: Mapping[str, Any]) -> list[str]:
    order = list(channels)
    preferred = user.get("preferred_channel")
    if prefer_user and preferred in order:
        order.remove(preferred)
        order.insert(0, preferred)
    return order


NOT_OPTED_IN = "not opted in"
CONSENT_PROBLEMS = frozenset({"unsubscribed", NOT_OPTED_IN})


def unusable_because(
    channel: str, user: Mapping[str, Any], opt_in_required: Sequence[str] = ()
) -> str | None:
    """Why ``channel`` cannot reach ``user``: ``"unsubscribed"``, ``"not opted in"`` (the
    journey requires ``<channel>_opt_in`` and the user lacks it) or a missing contact point."""
    opted_out = user.get("unsubscribed") or ()
    if isinstance(opted_out, str):
        opted_out = [opted_out]
    if channel in opted_out or "all" in opted_out:
        return "unsubscribed"
    if channel in opt_in_required and user.get(f"{channel}_opt_in") is not True:
        return NOT_OPTED_IN
    contact = user.get(CONTACT_FIELD[channel])
    if not contact:
        return CONTACT_LABEL[channel]
    return None


def quiet_until(delivery: Delivery, user: Mapping[str, Any], now: datetime) -> datetime | None:
    """When the user's quiet hours end, if ``now`` is inside them."""
    if not delivery.quiet_hours:
        return None
    start, end = _clock_window(tuple(delivery.quiet_hours))
    return window_end(now, start, end, zone(user.get("timezone"), delivery.timezone))


@lru_cache(maxsize=64)
def _clock_window(quiet_hours: tuple[str, str]) -> tuple[time, time]:
    """``("21:00", "08:00")`` parsed; cached on the (immutable) pair of strings."""
    start, end = quiet_hours
    return parse_hhmm(start), parse_hhmm(end)


def capped(caps: Iterable[Cap], channel: str, history: Sequence[Sent], now: datetime) -> Cap | None:
    for cap in caps:
        if cap.channel is not None and cap.channel != channel:
            continue
        since = now - timedelta(seconds=cap.per)
        count = 0
        for h in history:
            if since < h.at <= now and (cap.channel is None or h.channel == cap.channel):
                count += 1
        if count >= cap.max:
            return cap
    return None


def decide(
    delivery: Delivery,
    channels: Sequence[str],
    prefer_user: bool,
    user: Mapping[str, Any],
    history: Sequence[Sent],
    now: datetime,
    run_ended: str | None = None,
) -> Decision:
    """The policy decision for one queued message. ``run_ended`` is the exit reason of a run
    that ended by a goal or exit event after the message was queued."""
    if run_ended is not None:
        if run_ended.startswith("goal:"):
            return Skip("goal_reached", run_ended.removeprefix("goal:"))
        if run_ended.startswith("exit:"):
            return Skip("exited", run_ended.removeprefix("exit:"))
    usable: list[str] = []
    passed: list[str] = []
    why: dict[str, str] = {}
    for channel in channel_order(channels, prefer_user, user):
        problem = unusable_because(channel, user, delivery.opt_in_required)
        if problem is None:
            usable.append(channel)
        else:
            why[channel] = problem
            if not usable:
                passed.append(channel)
    if not usable:
        detail = "; ".join(f"{c}: {w}" for c, w in why.items())
        if all(w == "unsubscribed" for w in why.values()):
            return Skip("unsubscribed", detail)
        if all(w in CONSENT_PROBLEMS for w in why.values()):
            return Skip("no_consent", detail)
        if all(w not in CONSENT_PROBLEMS for w in why.values()):
            return Skip("no_contact", detail)
        return Skip("no_reachable_channel", detail)
    until = quiet_until(delivery, user, now)
    if until is not None:
        return Defer(until)
    for channel in usable:
        cap = capped(delivery.frequency_caps, channel, history, now)
        if cap is None:
            return Deliver(channel, tuple(passed))
        passed.append(channel)
        why[channel] = f"capped at {cap.max} per {format_duration(cap.per)}"
    return Skip("frequency_cap", "; ".join(f"{c}: {why[c]}" for c in usable))

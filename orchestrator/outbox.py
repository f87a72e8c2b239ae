"""From a queued ``Send`` to a rendered message or a reason it does not go out. Core: policy
decision plus rendering, no I/O besides reading templates; shared by the dry-run and the
production send worker so both decide and render identically.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote

from .effects import Send, quick_init
from .engine import Run, user_view
from .errors import RenderError
from .localtime import zone
from .machine import Machine
from .policies import Defer, Deliver, Sent, Skip, decide
from .render import Rendered, Renderer


@quick_init
@dataclass(frozen=True, slots=True)
class Prepared:
    """What happens to one queued message now."""

    action: str  # send | skip | defer
    channel: str | None = None
    message: Rendered | None = None
    reason: str | None = None
    detail: str | None = None
    until: datetime | None = None


def message_context(
    machine: Machine,
    run: Run,
    user: Mapping[str, Any],
    send: Send,
    channel: str,
    now: datetime,
    links_base: str,
    unsubscribe_url: Callable[[str, str], str] | None = None,
) -> dict[str, Any]:
    """The names a template can use; see docs/journey-language.md. Production passes
    ``unsubscribe_url`` (signed links to the API's unsubscribe page); previews show a
    placeholder under ``links_base``."""
    tz = zone(user.get("timezone"), machine.delivery.timezone)
    return {
        "user": user,
        "event": run.trigger,
        "trigger": run.trigger,
        "journey": {"name": machine.journey, "version": machine.version},
        "step": send.step,
        "variant": send.variant,
        "now": now.astimezone(tz),
        "unsubscribe_url": (
            unsubscribe_url(str(run.user_id), channel)
            if unsubscribe_url is not None
            else f"{links_base}/unsubscribe?user={_url_quote(str(run.user_id))}&channel={channel}"
        ),
    }


_URL_SAFE = frozenset(string.ascii_letters + string.digits + "_.-~/")


def _url_quote(text: str) -> str:
    """``urllib.parse.quote(text)``, skipping the work for the usual id made of safe
    characters (which ``quote`` returns unchanged)."""
    return text if _URL_SAFE.issuperset(text) else quote(text)


def prepare(
    machine: Machine,
    send: Send,
    run: Run,
    profile: Mapping[str, Any],
    history: Sequence[Sent],
    now: datetime,
    renderer: Renderer,
    links_base: str = "https://example.invalid",
    unsubscribe_url: Callable[[str, str], str] | None = None,
    *,
    view: Mapping[str, Any] | None = None,
) -> Prepared:
    """Decide and render ``send`` for ``run`` now. ``view``: ``user_view(machine, profile)``
    if the caller already has it (the dry-run caches it per profile)."""
    if send.generation < run.started_generation:
        # Queued (e.g. held by quiet hours) before a newer trigger restarted the run: the
        # restarted run sends its own message, so this one would be a duplicate.
        return Prepared("skip", reason="restarted", detail="a newer trigger restarted the run")
    user = view if view is not None else user_view(machine, profile)
    ended = run.exit_reason if run.finished else None
    decision = decide(
        machine.delivery, send.channels, send.prefer_user, user, history, now, ended
    )
    match decision:
        case Skip():
            return Prepared("skip", reason=decision.reason, detail=decision.detail)
        case Defer():
            return Prepared("defer", reason=decision.reason, until=decision.until)
        case Deliver():
            ctx = message_context(
                machine, run, user, send, decision.channel, now, links_base, unsubscribe_url
            )
            try:
                message = renderer.render(decision.channel, send.template, ctx)
            except RenderError as exc:
                return Prepared(
                    "skip", channel=decision.channel, reason="render_error", detail=str(exc)
                )
            detail = (
                f"fell back from {', '.join(decision.fell_back_from)}"
                if decision.fell_back_from
                else None
            )
            return Prepared("send", channel=decision.channel, message=message, detail=detail)
    raise AssertionError(f"unknown decision {decision!r}")

"""Which message gets the credit for a conversion. Core: pure.

Rule (last touch): a conversion is credited to the last message delivered to the user before
the goal event and no earlier than the journey's conversion window before it, whichever
journey sent it. "Delivered" means the provider accepted it and did not report a failure
(ledger status ``sent`` or ``delivered``); a bounced, failed, rejected or unknown message did not
reach the user, and a skipped one was never sent.

So when two journeys message the same user and the user buys, each journey still counts its
run as converted (each journey's experiment compares its own treated users with its own
holdout), but only one message, the last one, is credited; the other journey reports the
conversion as credited elsewhere. A conversion with no qualifying message (a holdout user, or
one who bought before the first message went out) is credited to no message.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass
from datetime import timedelta

from .facts import DeliveryFact, History


@dataclass(frozen=True, slots=True)
class Touch:
    journey: str
    run_id: str
    step: str
    channel: str


def attribute(history: History, window_seconds: float) -> dict[str, Touch | None]:
    """The credited message for each conversion of ``history`` (keyed by run id)."""
    converting = {c.user_id for c in history.conversions}
    by_user: dict[str, list[DeliveryFact]] = defaultdict(list)
    for d in history.deliveries:
        if d.user_id in converting and d.counts_for_attribution:
            by_user[d.user_id].append(d)
    for ds in by_user.values():
        # Same instant: a stable, documented tie-break (journey, then step, then channel).
        ds.sort(key=lambda d: (d.at, d.journey, d.step, d.channel))
    window = timedelta(seconds=window_seconds)
    credited: dict[str, Touch | None] = {}
    for conv in history.conversions:
        ds = by_user.get(conv.user_id, [])
        i = bisect_right([d.at for d in ds], conv.at)
        last = ds[i - 1] if i else None
        if last is None or last.at < conv.at - window:
            credited[conv.run_id] = None
        else:
            credited[conv.run_id] = Touch(last.journey, last.run_id, last.step, last.channel)
    return credited

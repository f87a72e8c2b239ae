"""Durations (``30m``, ``23.5h``, ``23h30m``, ``2d``) and clock times (``21:00``). Core.

Durations are whole seconds: one or more ``<number><unit>`` parts, units ``s``, ``m``, ``h``,
``d``, ``w``, largest first, optionally separated by spaces. ``23.5h`` and ``23h30m`` are the
same 84,600 seconds.
"""

from __future__ import annotations

import re
from datetime import time
from fractions import Fraction

_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([wdhms])")
DURATION_HELP = "a duration such as 30m, 1h, 23.5h, 23h30m or 2d"
TIME_HELP = "a 24-hour clock time such as 08:00 or 21:30"


def parse_duration(text: object) -> int:
    """Seconds in ``text``; raises ``ValueError`` saying what was expected."""
    if isinstance(text, bool) or not isinstance(text, (str, int)):
        raise ValueError(f"expected {DURATION_HELP} (got {text!r})")
    if isinstance(text, int):
        raise ValueError(f"'{text}' has no unit; expected {DURATION_HELP}")
    s = text.strip().lower()
    pos, total, last_rank = 0, Fraction(0), -1
    order = list(_UNITS)
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            raise ValueError(f"'{text}' is not a duration; expected {DURATION_HELP}")
        rank = order.index(m.group(2))
        if rank <= last_rank:
            raise ValueError(
                f"'{text}' repeats or reorders units; write the largest unit first, e.g. 23h30m"
            )
        last_rank = rank
        total += Fraction(m.group(1)) * _UNITS[m.group(2)]  # exact: 4.1m is 246s, not 245.99..
        pos = m.end()
    if not s:
        raise ValueError(f"empty duration; expected {DURATION_HELP}")
    if total != int(total):
        raise ValueError(f"'{text}' is not a whole number of seconds")
    if total <= 0:
        raise ValueError(f"'{text}' must be longer than zero")
    return int(total)


def format_duration(seconds: int) -> str:
    """``84600`` -> ``"23h30m"``; the inverse of :func:`parse_duration` for whole units."""
    if seconds <= 0:
        return "0s"
    out = []
    for unit, size in _UNITS.items():
        if unit == "w" and seconds % size:
            continue
        n, seconds = divmod(seconds, size)
        if n:
            out.append(f"{n}{unit}")
    return "".join(out)


_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def parse_clock(text: object) -> time:
    if not isinstance(text, str) or not _CLOCK.match(text.strip()):
        raise ValueError(f"expected {TIME_HELP} (got {text!r})")
    h, m = text.strip().split(":")
    return time(int(h), int(m))


def parse_percent(value: object) -> float:
    """``10%``, ``"10"`` or ``10`` -> ``10.0``; must lie in [0, 100]."""
    if isinstance(value, bool):
        raise ValueError(f"expected a percentage such as 10% (got {value!r})")
    text = str(value).strip()
    if text.endswith("%"):
        text = text[:-1].strip()
    try:
        pct = float(text)
    except ValueError:
        raise ValueError(f"expected a percentage such as 10% (got {value!r})") from None
    if not 0 <= pct <= 100:
        raise ValueError(f"a percentage must lie between 0% and 100% (got {value!r})")
    return pct

"""Pausing Python's cyclic garbage collector around work that builds many long-lived objects
(a dry-run's timeline, the facts ``journey stats`` loads). Core: no I/O.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a dry-run or a statistics load builds its objects.

    A run allocates millions of objects that live to its end (timeline entries, runs, message
    contexts), and CPython's collector would scan each of them at least twice for nothing:
    the engine, the simulator and the templates make next to no reference cycles (plain
    dicts, tuples and frozen dataclasses: a 20,000-user run of cart_abandonment leaves a few
    dozen objects to collect), and reference counting frees everything else at once.

    So the collector is off during the run. Afterwards every tracked object, the run's
    millions included, is moved to the oldest generation (a ``gc.freeze()`` and
    ``gc.unfreeze()`` pair) rather than left in the youngest one for the next collection to
    scan all at once, and the collector is switched back on if it was on: a cycle made
    meanwhile waits for a later full collection. Only the outermost of overlapping runs
    (nested, or in threads) does this. If the caller has frozen objects itself, the
    generations are left alone (the unfreeze would release the caller's objects too).
    """
    global _gc_pause_depth
    with _gc_pause_lock:
        outermost = _gc_pause_depth == 0
        _gc_pause_depth += 1
        if outermost:
            was_enabled = gc.isenabled()
            gc.disable()
    try:
        yield
    finally:
        with _gc_pause_lock:
            _gc_pause_depth -= 1
            if outermost:
                if gc.get_freeze_count() == 0:
                    gc.freeze()
                    gc.unfreeze()
                if was_enabled:
                    gc.enable()


_gc_pause_lock = threading.Lock()
_gc_pause_depth = 0

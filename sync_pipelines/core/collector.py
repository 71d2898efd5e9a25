"""Pausing Python's cyclic garbage collector around work that makes millions of objects none of which can be in a
cycle (a parsed JSON page, the rows of a bulk read or load): each burst of them would otherwise trigger collections,
the eldest over every object of the process, that find nothing."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """The collector off for the block, then as it was: another thread may have paused it too, and only the
    outermost pause turns it back on."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()

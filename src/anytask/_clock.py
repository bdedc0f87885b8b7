"""Wall-clock time for records.

All *waiting* in anytask uses anyio's clock (``anyio.sleep``, deadlines), so a virtual
clock such as trio's ``MockClock`` drives it. Timestamps written to records come from one
injectable :class:`Clock`. :class:`SystemClock` is the default; :class:`LoopClock` derives
wall time from the event loop's clock, so under a virtual clock the timestamps advance with
it (an hour of backoff is an hour in the records, and passes instantly). A manager given no
clock uses a ``LoopClock`` of its own while it runs under trio's ``MockClock``
(:func:`loop_clock_is_virtual`).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from functools import partial

import anyio
import anyio.lowlevel

__all__ = ["Clock", "LoopClock", "SystemClock", "from_ts", "loop_clock_is_virtual", "to_ts"]


class Clock:
    """Source of wall-clock time as seconds since the epoch (UTC)."""

    def time(self) -> float:
        raise NotImplementedError

    def now(self) -> datetime:
        return from_ts(self.time())


class SystemClock(Clock):
    def time(self) -> float:
        return time.time()

    # the same as from_ts(time.time()), in one C call and without a Python frame around
    # it (a partial is not a descriptor: ``clock.now`` is this very object, not bound,
    # so it takes no argument: a subclass calls ``super().now()``, not
    # ``SystemClock.now(self)``). The runtime reads it two or three times per task.
    now = partial(datetime.now, UTC)


class LoopClock(Clock):
    """Wall time anchored once, then advanced by the running event loop's clock.

    Read outside the event loop thread, it returns the last time the loop thread read.
    Read in another event loop than the one it was anchored in (the next test, each with
    a loop and a ``MockClock`` of its own), it goes on from the last time it returned.
    """

    def __init__(self, start: float | None = None) -> None:
        self._start = time.time() if start is None else start
        self._anchor: float | None = None
        self._loop: object = None  # the event loop (its native token) anchored in
        self._last = self._start

    def time(self) -> float:
        try:
            loop_now = anyio.current_time()
            loop = anyio.lowlevel.current_token().native_token
        except Exception:  # not in the loop thread: the last time the loop saw
            return self._last
        if loop is not self._loop:
            # the first read, or a new event loop: its clock says nothing about the last
            # one's (each MockClock starts at 0, trio's own clock at a random offset), so
            # time would go back, or leap days ahead. It goes on from where it was.
            self._loop = loop
            self._anchor = loop_now
            self._start = self._last
        assert self._anchor is not None
        self._last = self._start + (loop_now - self._anchor)
        return self._last


def loop_clock_is_virtual() -> bool:
    """Whether the running event loop keeps virtual time: trio's ``MockClock``, whose
    time jumps ahead of the wall clock's (``autojump_threshold``) or stands still."""
    testing = sys.modules.get("trio.testing")
    if testing is None:  # (nobody made a MockClock without importing it)
        return False
    try:
        clock = sys.modules["trio"].lowlevel.current_clock()
    except Exception:  # not inside trio.run (asyncio)
        return False
    return isinstance(clock, testing.MockClock)


def to_ts(value: datetime) -> float:
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
    return value.timestamp()


def from_ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)

"""Fire times of interval and cron triggers: pure functions of a time (and a zone).

Every time here is an aware UTC ``datetime``; no function reads a clock.

Interval triggers count elapsed time in whole microseconds from an anchor (the Unix
epoch unless ``start_at`` is given), so fire times never drift and every process computes
the same ones.

Cron triggers match wall times in their zone with croniter, then map each wall time to
one UTC instant (the DST policy):

* a wall time inside a spring-forward gap (02:30 on the night clocks jump from 02:00 to
  03:00) fires at the first instant after the gap (03:00 local); several wall times in the
  same gap (and a match right after it) fire once;
* a wall time that occurs twice in a fall-back hour fires once, at its first occurrence
  (the earlier instant, still on summer time).

With that mapping, UTC fire times are non-decreasing in wall-time order, which is what
makes the forward and backward scans below correct.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from croniter import CroniterError, croniter  # type: ignore[import-untyped]

__all__ = ["CronTrigger", "IntervalTrigger", "Trigger", "from_us", "to_us"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
#: Scanning backwards starts this far past the wall time, to see a repeated (fall-back)
#: hour whose first pass maps before the given instant. No zone repeats more than 3 h.
_FOLD_MARGIN = timedelta(hours=3)
#: Upper bound on candidates looked at per call (a per-minute expression needs at most
#: ~200 around a fall-back hour); beyond it the trigger is treated as exhausted.
_SCAN_LIMIT = 20_000


def to_us(value: datetime) -> int:
    """Exact microseconds since the epoch of an aware datetime."""
    return (value - EPOCH) // _US


def from_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


class Trigger(ABC):
    @abstractmethod
    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after``, or None when there is none."""

    @abstractmethod
    def last_fires(self, at: datetime, n: int) -> list[datetime]:
        """Up to ``n`` of the latest fire times at or before ``at``, oldest first."""

    def fires_between(self, start: datetime, end: datetime) -> list[datetime]:
        """Every fire time in ``(start, end]``, oldest first."""
        out: list[datetime] = []
        fire = self.next_after(start)
        while fire is not None and fire <= end:
            out.append(fire)
            fire = self.next_after(fire)
        return out


class IntervalTrigger(Trigger):
    """Fires at ``anchor + k * every`` for every integer ``k`` (``k >= 0`` when the anchor
    is an explicit ``start_at``)."""

    def __init__(self, every_us: int, anchor: datetime | None = None) -> None:
        assert every_us > 0
        self.every_us = every_us
        self.start_us = None if anchor is None else to_us(anchor)
        self.anchor_us = 0 if anchor is None else to_us(anchor)

    def next_after(self, after: datetime) -> datetime | None:
        t = to_us(after)
        if self.start_us is not None and t < self.start_us:
            return from_us(self.start_us)
        k = (t - self.anchor_us) // self.every_us + 1
        return from_us(self.anchor_us + k * self.every_us)

    def last_fires(self, at: datetime, n: int) -> list[datetime]:
        k = (to_us(at) - self.anchor_us) // self.every_us
        first = k - n + 1
        if self.start_us is not None:
            first = max(first, 0)
        return [from_us(self.anchor_us + i * self.every_us) for i in range(first, k + 1)]

    def __repr__(self) -> str:
        return f"IntervalTrigger(every={self.every_us / 1e6:g}s)"


class CronTrigger(Trigger):
    """Wall-time cron expression in a zone, with the DST policy of this module."""

    def __init__(self, expr: str, zone: ZoneInfo, start_at: datetime | None = None) -> None:
        self.expr = expr
        self.zone = zone
        self.start_at = start_at
        # parsing is the costly part: parse once, reposition per call (under a lock)
        self._iter = croniter(expr, datetime(2000, 1, 1))  # raises when malformed
        self._lock = threading.Lock()

    @contextmanager
    def _at(self, wall: datetime) -> Iterator[Any]:
        with self._lock:
            self._iter.set_current(wall, force=True)
            yield self._iter

    def _wall(self, instant: datetime) -> datetime:
        return instant.astimezone(self.zone).replace(tzinfo=None)

    def to_utc(self, wall: datetime) -> datetime:
        """The instant a naive wall time fires at (see the DST policy above)."""
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        if self._wall(first) == wall:
            return first  # exists; fold=0 is the first occurrence of a repeated time
        # inside a gap: find the transition, the first instant whose wall time is past it
        lo = int(wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC).timestamp())
        hi = int(first.timestamp()) + 1
        if lo > hi:
            lo, hi = hi, lo
        while lo < hi:
            mid = (lo + hi) // 2
            if self._wall(datetime.fromtimestamp(mid, UTC)) >= wall:
                hi = mid
            else:
                lo = mid + 1
        return datetime.fromtimestamp(lo, UTC)

    def next_after(self, after: datetime) -> datetime | None:
        if self.start_at is not None and after < self.start_at:
            after = self.start_at - _US
        try:
            with self._at(self._wall(after)) as it:
                for _ in range(_SCAN_LIMIT):
                    fire = self.to_utc(it.get_next(datetime))
                    if fire > after:
                        return fire
        except (CroniterError, OverflowError, ValueError):
            return None  # no further match (croniter gives up, or past year 9999)
        return None

    def last_fires(self, at: datetime, n: int) -> list[datetime]:
        out: list[datetime] = []
        if n <= 0:
            return out
        try:
            with self._at(self._wall(at) + _FOLD_MARGIN) as it:
                for _ in range(_SCAN_LIMIT + n):
                    fire = self.to_utc(it.get_prev(datetime))
                    if self.start_at is not None and fire < self.start_at:
                        break
                    if fire <= at and (not out or fire < out[-1]):
                        out.append(fire)
                        if len(out) == n:
                            break
        except (CroniterError, OverflowError, ValueError):
            pass  # no earlier match
        out.reverse()
        return out

    def __repr__(self) -> str:
        return f"CronTrigger({self.expr!r}, {self.zone.key!r})"

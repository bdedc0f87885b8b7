"""Random task ids (uuid4 text), made in batches.

``str(uuid.uuid4())`` costs a system call and a ``UUID`` object per id, which is a large
share of what enqueueing a task costs. Here one ``os.urandom`` call yields 256 ids, each
with the version (4) and variant (``10xx``) bits of RFC 9562, so every id parses as a
``uuid.UUID`` of version 4.

Ids made before a ``fork`` are thrown away in the child: parent and child must never hand
out the same ids.
"""

from __future__ import annotations

import os

__all__ = ["new_task_id"]

_BATCH = 256
# the variant nibble: keep its two low bits, force the high bits to 10
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_pool: list[str] = []


def _refill() -> None:
    raw = os.urandom(16 * _BATCH).hex()
    variant = _VARIANT
    batch = [
        f"{raw[i : i + 8]}-{raw[i + 8 : i + 12]}-4{raw[i + 13 : i + 16]}-"
        f"{variant[raw[i + 16]]}{raw[i + 17 : i + 20]}-{raw[i + 20 : i + 32]}"
        for i in range(0, len(raw), 32)
    ]
    _pool.extend(batch)  # atomic under the GIL, like pop()


def new_task_id() -> str:
    """A new random uuid4 string (safe from any thread)."""
    while True:
        try:
            return _pool.pop()  # atomic under the GIL
        except IndexError:
            _refill()


def _forget_after_fork() -> None:
    _pool.clear()


os.register_at_fork(after_in_child=_forget_after_fork)

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
# byte 6 carries the version in its high nibble (4), byte 8 the variant in its two high
# bits (10); both fixed for a whole batch at once by translating every 16th byte
_VERSION = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))
_pool: list[str] = []


def _refill() -> None:
    raw = bytearray(os.urandom(16 * _BATCH))
    raw[6::16] = raw[6::16].translate(_VERSION)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    h = raw.hex()
    _pool.extend(  # atomic under the GIL, like pop()
        [
            f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-"
            f"{h[i + 16 : i + 20]}-{h[i + 20 : i + 32]}"
            for i in range(0, len(h), 32)
        ]
    )


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

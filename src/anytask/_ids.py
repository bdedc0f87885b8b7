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


# where each of the 36 characters of the text form comes from: a dash, or one of the 32
# hex digits of the 16 bytes
_DASHES = (8, 13, 18, 23)
_DIGIT_AT = [(j, j - sum(d < j for d in _DASHES)) for j in range(36) if j not in _DASHES]


def _refill() -> None:
    raw = bytearray(os.urandom(16 * _BATCH))
    raw[6::16] = raw[6::16].translate(_VERSION)
    raw[8::16] = raw[8::16].translate(_VARIANT)
    digits = raw.hex().encode("ascii")
    # The text of all the ids at once, 36 characters and a space each, filled column by
    # column with strided slices (C loops), then split: about a third of the cost of
    # formatting each id from slices of the hex string.
    text = bytearray(b"-" * (37 * _BATCH))
    for column, digit in _DIGIT_AT:
        text[column::37] = digits[digit::32]
    text[36::37] = b" " * _BATCH
    _pool.extend(text.decode("ascii").split())  # atomic under the GIL, like pop()


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

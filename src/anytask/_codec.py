"""JSON payload codec.

Arguments and results travel as JSON. A value that JSON would silently change (a tuple
becoming a list, an int dict key becoming a string, NaN, a set, bytes, an arbitrary object)
is rejected up front with a :class:`PayloadError` naming where it sits, so that what runs
after a restart is exactly what was enqueued. Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from ._errors import PayloadError

__all__ = ["check_json", "clean_text", "detached", "dumps", "json_size", "loads"]

_SCALARS = (bool, type(None))
#: Ints this far from zero may have more digits than ``str(int)`` converts (Python's
#: ``sys.get_int_max_str_digits()``, 4300 by default, which a program or the
#: PYTHONINTMAXSTRDIGITS variable may lower to 640): such an int is checked further.
#: Below it, no limit applies (``sys.int_info.str_digits_check_threshold``).
_BIG_INT = 10 ** (sys.int_info.str_digits_check_threshold - 1)
_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_decoder = json.JSONDecoder()


def _check_str(value: str, where: str) -> None:
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise PayloadError(
                f"{where} holds a lone surrogate ({value!r}), which UTF-8 cannot encode"
            ) from None


def clean_text(value: str) -> str:
    """``value`` with anything UTF-8 cannot encode (lone surrogates, as in the text of an
    OS error about a non-UTF-8 file name) replaced by backslash escapes."""
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def _walk(value: Any, where: str, depth: int) -> int:
    """Check ``value``; returns a bound on the bytes of its JSON (UTF-8): at least as
    many, found without encoding it (a character takes at most 6 bytes, as ``\\u001f``)."""
    kind = type(value)
    if kind is str:
        _check_str(value, where)
        return 6 * len(value) + 2
    if kind is int:
        bits: int = value.bit_length()  # (typed for mypy: int() here cost as much again)
        if -_BIG_INT < value < _BIG_INT:
            return bits // 3 + 2  # (a decimal digit holds over 3 bits)
        try:
            # JSON writes an int in decimal; past the interpreter's limit on digits that
            # raises ValueError, at the write (a writer's whole batch) instead of here
            int.__repr__(value)
        except ValueError:
            raise PayloadError(
                f"{where} is an int of about {value.bit_length() * 0.30103:.0f} digits, "
                "more than Python converts to or from text (sys.get_int_max_str_digits())"
            ) from None
        return bits // 3 + 2
    if kind in _SCALARS:
        return 5
    if kind is float:
        if not math.isfinite(value):
            raise PayloadError(f"{where} is {value!r}, which JSON cannot represent")
        return 24
    if depth > 64:
        raise PayloadError(f"{where} is nested more than 64 levels deep")
    size = 2
    if kind is list:
        for i, item in enumerate(value):
            size += _walk(item, f"{where}[{i}]", depth + 1) + 1
        return size
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise PayloadError(
                    f"{where} has the key {key!r} of type {type(key).__name__}; "
                    "JSON object keys must be str"
                )
            _check_str(key, f"a key of {where}")
            size += 6 * len(key) + 4 + _walk(item, f"{where}[{key!r}]", depth + 1)
        return size
    raise PayloadError(
        f"{where} is of type {kind.__name__}, which is not plain JSON "
        "(use str, int, float, bool, None, list and dict with str keys)"
    )


def check_json(value: Any, where: str) -> int:
    """Raise :class:`PayloadError` unless ``value`` survives a JSON round trip unchanged.
    Returns a bound on the size of its JSON in bytes (see :func:`json_size`)."""
    return _walk(value, where, 0)


def json_size(value: Any) -> int:
    """The size in bytes (UTF-8) of ``value``'s JSON, a value :func:`check_json` accepted."""
    text = _encoder.encode(value)
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def dumps(value: Any) -> str:
    """Encode a value already accepted by :func:`check_json`."""
    return _encoder.encode(value)


def loads(text: str) -> Any:
    return _decoder.decode(text)


_PLAIN = (str, int, float, bool, type(None))


def detached(value: Any) -> Any:
    """``value`` (a list or dict of JSON) as it is when it holds only scalars, else a deep
    copy: what a task may change without touching the payload it came from."""
    items = value.values() if type(value) is dict else value
    for v in items:
        if type(v) not in _PLAIN:
            return loads(dumps(value))
    return value


def cloned(value: Any) -> Any:
    """A copy of ``value`` (a list or dict of JSON, or a tuple standing in for a list, as
    records the runtime builds hold) that shares no list or dict with it; a tuple comes
    back as a list."""
    private = detached(value)
    if private is not value:
        return private
    return list(value) if type(value) is tuple else value.copy()

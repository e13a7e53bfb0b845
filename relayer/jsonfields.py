"""Strict readers for the JSON shapes Passerelle accepts (proof files, config, RPC results).

A proof file is untrusted input typed by a person or produced by another tool, so every
field is checked for presence, type and size before any verifier sees it. A problem here is a
*usage* error (the file is unusable, exit 2), never a verdict about the proof (exit 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Bounds that keep a hostile file from costing more than a real proof could: the largest
# real proof we know (a 100 KB Substrate read proof) is far below both.
MAX_HEX_CHARS = 8 * 1024 * 1024
MAX_LIST_ITEMS = 100_000


class FieldError(Exception):
    """A required field is missing or malformed; ``str()`` names the field and the problem."""


def require(obj: Mapping[str, Any], name: str) -> Any:
    """Return ``obj[name]``, or raise FieldError if it is missing or null."""
    if name not in obj or obj[name] is None:
        raise FieldError(f"missing field {name!r}")
    return obj[name]


def as_object(value: Any, name: str) -> Mapping[str, Any]:
    """Check that ``value`` is a JSON object."""
    if not isinstance(value, Mapping):
        raise FieldError(f"field {name!r} must be an object, got {type_name(value)}")
    return value


def as_int(value: Any, name: str, *, lo: int = 0, hi: int = 2**256 - 1) -> int:
    """Check that ``value`` is a JSON integer (not a bool, float or string) in ``[lo, hi]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise FieldError(f"field {name!r} must be an integer, got {type_name(value)}")
    if not lo <= value <= hi:
        raise FieldError(f"field {name!r} out of range: {value} not in [{lo}, {hi}]")
    return value


def as_hex(value: Any, name: str, *, size: int | None = None) -> bytes:
    """Decode a ``0x``-prefixed, even-length hex string, optionally of exactly ``size`` bytes."""
    if not isinstance(value, str):
        raise FieldError(f"field {name!r} must be a 0x-prefixed hex string, got {type_name(value)}")
    if len(value) > MAX_HEX_CHARS:
        raise FieldError(f"field {name!r} is too large ({len(value)} characters)")
    if not value.startswith(("0x", "0X")):
        raise FieldError(f"field {name!r} must start with 0x")
    digits = value[2:]
    if len(digits) % 2:
        raise FieldError(f"field {name!r} has an odd number of hex digits")
    try:
        data = bytes.fromhex(digits)
    except ValueError:
        raise FieldError(f"field {name!r} is not hex") from None
    if size is not None and len(data) != size:
        raise FieldError(f"field {name!r} must be {size} bytes, got {len(data)}")
    return data


def as_list(value: Any, name: str) -> Sequence[Any]:
    """Check that ``value`` is a JSON array of bounded length."""
    if not isinstance(value, list):
        raise FieldError(f"field {name!r} must be an array, got {type_name(value)}")
    if len(value) > MAX_LIST_ITEMS:
        raise FieldError(f"field {name!r} has too many items ({len(value)})")
    return value


def as_hex_list(value: Any, name: str, *, size: int | None = None) -> list[bytes]:
    """Decode an array of hex strings (each of ``size`` bytes when given)."""
    return [as_hex(item, f"{name}[{i}]", size=size) for i, item in enumerate(as_list(value, name))]


def type_name(value: Any) -> str:
    """The JSON name of a Python value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__

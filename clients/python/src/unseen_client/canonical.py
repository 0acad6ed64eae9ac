"""JSON exactly as the service reads and writes it.

Release signatures and ledger hashes cover bytes the service produced with
its JSON library: compact, object keys sorted by their UTF-8 bytes, floats
in their shortest round-trip form (``1.0``, ``0.00001``, ``1e-6``,
``1.5e+16``), integers as integers. Verifying offline means producing the
same bytes from a parsed document, so this module parses numbers the way the
service does (integers stay integers, ``-0`` is a float, integers beyond 64
bits become floats) and writes them back in the service's notation.
"""

from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Tuple

__all__ = ["JsonError", "loads", "canonical_bytes", "format_float", "same_value"]

_U64_MAX = (1 << 64) - 1
_I64_MIN = -(1 << 63)


class JsonError(ValueError):
    """The text is not JSON the service would accept."""


class _Object(Dict[str, Any]):
    """A JSON object that remembers whether a key appeared twice (the
    service refuses that in its own structures, and keeps the last value
    elsewhere)."""

    duplicate_keys: Tuple[str, ...] = ()


def _object(pairs: List[Tuple[str, Any]]) -> _Object:
    obj = _Object()
    dupes = []
    for key, value in pairs:
        if key in obj:
            dupes.append(key)
        obj[key] = value
    if dupes:
        obj.duplicate_keys = tuple(dupes)
    return obj


def _parse_int(text: str) -> Any:
    value = int(text)
    if value == 0 and text.startswith("-"):
        # The service's parser reads `-0` as the float -0.0.
        return -0.0
    if _I64_MIN <= value <= _U64_MAX:
        return value
    return _finite(float(value))


def _parse_float(text: str) -> float:
    return _finite(float(text))


def _finite(value: float) -> float:
    if math.isinf(value) or math.isnan(value):
        raise JsonError("number out of range")
    return value


def _reject_constant(name: str) -> Any:
    raise JsonError(f"`{name}` is not JSON")


def loads(text: str | bytes) -> Any:
    """Parses JSON with the service's number semantics. Objects are dicts
    (a subclass that records duplicate keys)."""
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JsonError(f"not UTF-8: {e}") from None
    try:
        return json.loads(
            text,
            object_pairs_hook=_object,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_reject_constant,
        )
    except JsonError:
        raise
    except ValueError as e:
        raise JsonError(str(e)) from None


def format_float(value: float) -> str:
    """A float in the service's notation: the shortest digits that read back
    as the same double, fixed-point for decimal exponents -5 to 15 (always
    with a fraction, ``3.0``), otherwise ``d.ddde+X`` / ``d.ddde-X``."""
    if math.isnan(value) or math.isinf(value):
        raise JsonError("NaN and infinity have no JSON form")
    if value == 0.0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    text = repr(value)
    sign = ""
    if text.startswith("-"):
        sign, text = "-", text[1:]
    mantissa, _, exponent = text.partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    # Position of the decimal point counted from the first digit.
    point = len(whole) + (int(exponent) if exponent else 0)
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0") or "0"
    exp10 = point - 1
    n = len(digits)
    if -5 <= exp10 <= 15:
        if n - 1 <= exp10:
            body = digits + "0" * (exp10 - n + 1) + ".0"
        elif exp10 >= 0:
            body = digits[: exp10 + 1] + "." + digits[exp10 + 1 :]
        else:
            body = "0." + "0" * (-exp10 - 1) + digits
    else:
        body = digits[0] + ("." + digits[1:] if n > 1 else "")
        body += ("e+" if exp10 >= 0 else "e-") + str(abs(exp10))
    return sign + body


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _string(s: str, out: List[str]) -> None:
    out.append('"')
    for ch in s:
        esc = _ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " ":
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')


def _write(value: Any, out: List[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(format_float(value))
    elif isinstance(value, str):
        _string(value, out)
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif isinstance(value, dict):
        out.append("{")
        # Sorting by UTF-8 bytes is sorting by code point.
        for i, key in enumerate(sorted(value)):
            if not isinstance(key, str):
                raise JsonError("object keys must be strings")
            if i:
                out.append(",")
            _string(key, out)
            out.append(":")
            _write(value[key], out)
        out.append("}")
    else:
        raise JsonError(f"{type(value).__name__} has no JSON form")


def canonical_bytes(value: Any) -> bytes:
    """Compact JSON with sorted keys, as the service signs and hashes it."""
    out: List[str] = []
    _write(value, out)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as e:
        raise JsonError(f"a string is not valid Unicode: {e}") from None


def same_value(a: Any, b: Any) -> bool:
    """Equality as the service compares JSON values: an integer never equals
    a float, a boolean never equals a number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int) or isinstance(b, int):
        return type(a) is type(b) and a == b
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, float) and isinstance(b, float) and a == b
    if isinstance(a, dict) or isinstance(b, dict):
        if not (isinstance(a, dict) and isinstance(b, dict)) or a.keys() != b.keys():
            return False
        return all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list) or isinstance(b, list):
        if not (isinstance(a, list) and isinstance(b, list)) or len(a) != len(b):
            return False
        return all(same_value(x, y) for x, y in zip(a, b))
    return bool(a == b) and type(a) is type(b)

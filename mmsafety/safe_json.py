"""JSON decoding for data that may come from someone else: task files, samples.jsonl on resume,
records read by the leaderboard. Every way a document can fail to decode becomes a reason
(one line) instead of an exception, so a caller skips the line or file and goes on.

`json.loads` alone raises more than ValueError on hostile input: RecursionError on a deeply
nested `[[[[...]]]]`, ValueError on an integer of more than 4300 digits, MemoryError on a huge
document. NaN and Infinity stay accepted: our own records hold them (the PSNR of an unchanged
image is inf).
"""

from __future__ import annotations

import json
from typing import Any

# Deeper than any record or task line we write (records nest ~6 levels) and far below what
# the C decoder can take without exhausting the stack.
MAX_DEPTH = 64


class JSONRejected(ValueError):
    """A document that could not be decoded; the message is the reason, on one line, phrased to
    follow "is" ("not valid JSON (...)", "nested deeper than 64 levels")."""


def _max_depth(text: str) -> int:
    """Bracket nesting depth, counting outside strings only; fast path for shallow documents."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def loads(data: str | bytes) -> Any:
    """Decode one JSON document, or raise JSONRejected with a one-line reason."""
    if isinstance(data, (bytes, bytearray)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError as e:
            raise JSONRejected(f"not UTF-8 (byte {e.start})") from None
    else:
        text = data
    if _max_depth(text) > MAX_DEPTH:
        raise JSONRejected(f"nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text)
    except RecursionError:  # a deep structure the bracket count missed (it cannot, but the stack is not ours)
        raise JSONRejected(f"nested deeper than {MAX_DEPTH} levels") from None
    except MemoryError:
        raise JSONRejected("too large to decode") from None
    except json.JSONDecodeError as e:
        raise JSONRejected(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    except ValueError as e:  # an integer longer than Python's int_max_str_digits (4300)
        if "digits" in str(e):
            raise JSONRejected("not readable (a number of over 4300 digits)") from None
        raise JSONRejected(f"not valid JSON ({str(e).splitlines()[0][:120]})") from None


def loads_object(data: str | bytes) -> dict:
    """`loads`, and the document must be an object."""
    value = loads(data)
    if not isinstance(value, dict):
        raise JSONRejected(f"a JSON {type(value).__name__}, not an object")
    return value

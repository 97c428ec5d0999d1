"""When an offline value and a served value are the same value: the one rule the round trip and the
consistency check compare with.

Python's `==` gets two cases wrong for features: NaN is not equal to itself (a NaN float feature made every
good version look different), and a timezone-naive datetime never equals an aware one (Delta holds naive
`Datetime` features; the codec stores them as UTC microseconds and the client returns them UTC-aware).
Null is a value of its own: it equals only null, never NaN.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any


def same_value(offline: Any, served: Any) -> bool:
    if offline is None or served is None:
        return offline is None and served is None
    if isinstance(offline, float) and isinstance(served, float):
        return offline == served or (math.isnan(offline) and math.isnan(served))
    if isinstance(offline, datetime) and isinstance(served, datetime):
        return _utc(offline) == _utc(served)
    if isinstance(offline, list | tuple) and isinstance(served, list | tuple):
        return len(offline) == len(served) and all(same_value(a, b) for a, b in zip(offline, served, strict=True))
    return offline == served


def _utc(value: datetime) -> datetime:
    """A naive datetime is UTC, as the codec encodes it."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value

"""Numbers as the store keeps them: float64 values (integers exactly, up to 2**53) and int64 steps.

Python ints are unbounded and numpy scalars are their own types; both are checked here, so a value
that cannot be stored as given raises a ValidationError naming its field instead of an
OverflowError deep in Arrow, or a silent rounding."""

from __future__ import annotations

import numbers
from typing import Any

from artstore.errors import ValidationError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def as_float(field: str, value: Any) -> float:
    """`value` (a real number: int, float, numpy scalar; not a bool) as a float64, exactly: an int
    that float64 cannot hold exactly (beyond 2**53 and not a multiple of the spacing there) or at
    all (beyond ~1.8e308) is refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValidationError(field, f"must be a number, got {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        exact = int(value)
        try:
            converted = float(exact)
        except OverflowError:
            raise ValidationError(field, f"a {len(str(abs(exact)))}-digit int is too large for a float64") from None
        if int(converted) != exact:
            raise ValidationError(field, f"{exact} is not exactly representable as a float64 (beyond 2**53); "
                                         "pass a float if rounding is fine")
        return converted
    return float(value)


def as_int64(field: str, value: Any, minimum: int = INT64_MIN) -> int:
    """`value` (an int or numpy integer; not a bool) if it fits an int64 and is >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValidationError(field, f"must be an int, got {value!r}")
    value = int(value)
    if not minimum <= value <= INT64_MAX:
        raise ValidationError(field, f"must be an int from {minimum} to 2**63 - 1, got {value}")
    return value

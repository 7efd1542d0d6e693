"""Server-side checks of what clients send: numbers must be finite and in range, texts short, whatever the widget
allowed (the HTTP API skips the widgets)."""

from __future__ import annotations

import math

from clipforget.core.errors import DataError


def number(value: object, name: str, low: float, high: float) -> float:
    """``value`` as a float in ``[low, high]``; NaN, infinities, non-numbers and values out of range are refused."""
    if isinstance(value, bool):
        raise DataError(f"{name} must be a number")
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a number") from None
    if not math.isfinite(x):
        raise DataError(f"{name} must be a finite number between {low:g} and {high:g}")
    if not low <= x <= high:
        raise DataError(f"{name} must be between {low:g} and {high:g} (got {x:g})")
    return x


def alpha(value: object) -> float:
    return number(value, "α", 0.0, 1.0)


def short_text(value: object, name: str, limit: int = 200) -> str:
    """``value`` stripped; refuses non-strings and texts over ``limit`` characters."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(f"{name} must be text")
    value = value.strip()
    if len(value) > limit:
        raise DataError(f"{name} is too long ({len(value)} characters, {limit} at most)")
    return value

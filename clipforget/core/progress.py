"""Progress reporting and cancellation, shared by every long-running step."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .errors import RunCancelled

# progress(stage, fraction in [0, 1], message)
ProgressFn = Callable[[str, float, str], None]


def no_progress(stage: str, fraction: float, message: str) -> None:
    """A progress callback that ignores everything."""


def duration(seconds: float) -> str:
    """``125`` -> ``2 min 5 s``; ``3725`` -> ``1 h 2 min``: a time as people say it."""
    s = max(0, round(float(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


def time_left(elapsed: float, fraction: float) -> str:
    """``about 1 min left`` from the time a step took so far and how far it is (empty until it can tell)."""
    if fraction <= 0.01 or fraction >= 1 or elapsed < 2:
        return ""
    left = elapsed * (1 - fraction) / fraction
    return f"about {round(left / 60)} min left" if left >= 90 else f"about {duration(left)} left"


def check_cancelled(cancel: threading.Event | None, what: str = "run") -> None:
    """Raise :class:`RunCancelled` once ``cancel`` is set (``None``: never)."""
    if cancel is not None and cancel.is_set():
        raise RunCancelled(f"{what} cancelled")

"""Progress reporting and cancellation, shared by every long-running step."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .errors import RunCancelled

# progress(stage, fraction in [0, 1], message)
ProgressFn = Callable[[str, float, str], None]


def no_progress(stage: str, fraction: float, message: str) -> None:
    """A progress callback that ignores everything."""


def check_cancelled(cancel: threading.Event | None, what: str = "run") -> None:
    """Raise :class:`RunCancelled` once ``cancel`` is set (``None``: never)."""
    if cancel is not None and cancel.is_set():
        raise RunCancelled(f"{what} cancelled")

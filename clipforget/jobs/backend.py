"""The interface between whoever asks for runs (app, CLI) and whatever executes them (a thread, worker processes,
a Ray cluster). Everything crosses it as data: a :class:`~clipforget.jobs.spec.RunSpec` in, snapshots out.

A snapshot is a JSON-able dict: ``id``, ``title``, ``owner``, ``state`` (queued / running / done / failed /
cancelled / interrupted), ``stages`` (stage -> fraction), ``message``, ``elapsed``, ``error``, ``model``, ``profile``,
``created``, ``backend``, ``device``, ``worker``, ``queue_position`` (0 when running). The run folder is the contract
underneath: ``job.json`` (the spec) is written before anything runs and ``progress.json`` mirrors the snapshot, so a
restarted app can list runs -- and re-attach to those still running -- from disk alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from clipforget.pipeline.folder import STATES_ACTIVE

from .spec import RunSpec

Snapshot = dict[str, Any]


class Backend(Protocol):
    """Runs specs somewhere and reports on them; every method returns at once except :meth:`wait`."""

    name: str

    def submit(self, spec: RunSpec, run_dir: Path) -> Snapshot:
        """Write ``spec`` into ``run_dir`` and queue it; returns the first snapshot (``queued``)."""

    def snapshot(self, run_id: str) -> Snapshot | None:
        """The run's latest snapshot, or ``None`` if this backend does not know it."""

    def active(self, owner: str) -> list[Snapshot]:
        """The owner's queued and running runs, oldest first."""

    def cancel(self, run_id: str) -> bool:
        """Ask a queued or running run to stop; ``False`` when it is not active."""

    def warm_up(self, spec: RunSpec) -> None:
        """Prepare, while nothing runs, what the first run like ``spec`` pays once (model, gallery index, data and
        class-text caches); a backend whose runs share nothing with the next does nothing."""

    def wait(self, run_id: str, timeout: float | None = None) -> Snapshot:
        """Block until the run is no longer active (scripts and tests); ``TimeoutError`` after ``timeout`` s."""

    def close(self) -> None:
        """Stop accepting runs and release workers (running runs are cancelled)."""


def wait_until(snapshot: Callable[[], Snapshot | None], run_id: str, timeout: float | None, poll: float,
               settled: Callable[[Snapshot], bool] = lambda snap: snap.get("state") not in STATES_ACTIVE) -> Snapshot:
    """The backends' :meth:`Backend.wait`: poll ``snapshot()`` until ``settled`` (default: no longer active);
    ``KeyError`` when the backend does not know the run, ``TimeoutError`` after ``timeout`` s."""
    deadline = None if timeout is None else time.time() + timeout
    while True:
        snap = snapshot()
        if snap is None:
            raise KeyError(f"run {run_id} is not known to this backend")
        if settled(snap):
            return snap
        if deadline is not None and time.time() > deadline:
            raise TimeoutError(f"run {run_id} still {snap.get('state')} after {timeout} s")
        time.sleep(poll)

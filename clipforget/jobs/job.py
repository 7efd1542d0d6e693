"""One run being executed, wherever that is: :class:`Job` holds its state and progress and mirrors both into the run
folder (``progress.json``), so any backend -- a thread, a worker process, a Ray actor -- and any reader see the same.

:meth:`Job.run` is the worker side's state machine (running -> done / failed / cancelled) around
:func:`~clipforget.jobs.execute.execute`; every backend calls it, so a run behaves the same on each.
A run is cancelled through ``job.cancel`` (an Event the stages check between steps); in another process the backend
asks for it with a file in the run folder (:data:`CANCEL_FILE`) that :class:`CancelWatch` turns into that Event.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipforget.core.errors import ClipforgetError, RunCancelled
from clipforget.pipeline.folder import RunFolder

from .backend import Snapshot
from .execute import Deferred, execute
from .model_cache import ModelCache
from .spec import RunSpec

STAGES = ("prepare", "forget", "remind", "restore", "evaluate", "curves")
# steps reported under their own name that a stage bar shows: step -> (stage, bar at the step's start, at its end).
# The prefix cache encodes every image once before the method starts: minutes on a CPU, within "prepare"
STEP_BARS = {"prefix": ("prepare", 0.5, 1.0)}
CANCEL_FILE = "cancel.request"  # written into a run folder to ask the process running it to stop


@dataclass
class Job:
    """A run in a queue or on a worker; :meth:`snapshot` is what the UI shows."""

    spec: RunSpec
    run_dir: Path
    state: str = "queued"
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    message: str = "waiting for the worker"
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    data: dict[str, Any] = field(default_factory=dict)  # what the task was made of (filled by the worker)
    device: str = "cpu"
    backend: str = "thread"
    worker: str = "in-process"
    queue_position: int = 0
    record_every: float = 1.0  # seconds between progress.json writes while running
    _written: float = 0.0

    @property
    def id(self) -> str:
        return self.spec.run_id

    @property
    def owner(self) -> str:
        return self.spec.owner

    def progress(self, stage: str, fraction: float, message: str) -> None:
        if stage in STEP_BARS:
            bar, start, end = STEP_BARS[stage]
            self.stages[bar] = start + (end - start) * max(0.0, min(1.0, float(fraction)))
        elif stage in self.stages:
            self.stages[stage] = max(0.0, min(1.0, float(fraction)))
            # stages run in order (a skipped one counts as done) -- but the method's first "evaluate 0.0" (the
            # original model) comes early
            if fraction > 0 or STAGES.index(stage) < STAGES.index("evaluate"):
                for earlier in STAGES[: STAGES.index(stage)]:
                    self.stages[earlier] = 1.0
        self.message = f"{stage}: {message}"
        if time.time() - self._written > self.record_every:
            self.record()

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.time()) - self.started

    def snapshot(self) -> Snapshot:
        return {"id": self.id, "title": self.spec.title, "owner": self.owner, "state": self.state,
                "stages": dict(self.stages), "message": self.message, "elapsed": round(self.elapsed(), 1),
                "error": self.error, "model": self.spec.model, "profile": self.spec.profile,
                "created": self.spec.created, "backend": self.backend, "device": self.device, "worker": self.worker,
                "queue_position": self.queue_position, "data": self.data}

    def record(self) -> None:
        """Mirror the snapshot into the run folder's ``progress.json``."""
        self._written = time.time()
        RunFolder(self.run_dir).write_progress({**self.snapshot(), "started": self.started, "ended": self.ended})

    def run(self, models: ModelCache, cache_root: Path | None = None, deferred: list[Deferred] | None = None
            ) -> Snapshot:
        """Execute the spec here and now; never raises for a failing run (its error goes into the snapshot).
        ``deferred``: see :func:`~clipforget.jobs.execute.execute`."""
        try:
            if self.cancel.is_set():
                self.state, self.message = "cancelled", "cancelled before it started"
                return self.snapshot()
            self.state, self.started, self.queue_position = "running", time.time(), 0
            self.message = f"started on {self.worker} ({self.device})"
            self.record()
            self.data = execute(self.spec, self.run_dir, models, self.progress, self.cancel, cache_root, deferred)
            self.state, self.message = "done", "finished"
        except RunCancelled:
            self.state, self.message = "cancelled", "cancelled by the user"
        except ClipforgetError as err:
            self.state, self.error, self.message = "failed", str(err), "failed"
        except BaseException as err:  # shown in the UI, not as a traceback; the worker survives any run
            self.state, self.error, self.message = "failed", f"{type(err).__name__}: {err}", "failed"
            if not isinstance(err, Exception):  # KeyboardInterrupt / SystemExit: recorded below, then it goes on
                raise
        finally:
            self.ended = self.ended or time.time()
            self.record()
        return self.snapshot()


class CancelWatch:
    """Sets ``event`` once ``run_dir/cancel.request`` exists (checked every ``interval`` s) -- how a backend in
    another process cancels a run; use as a context manager around :meth:`Job.run`."""

    def __init__(self, run_dir: Path, event: threading.Event, interval: float = 0.25):
        self.path = Path(run_dir) / CANCEL_FILE
        self.event = event
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="clipforget-cancel-watch", daemon=True)

    def __enter__(self) -> CancelWatch:
        if self.path.exists():
            self.event.set()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.path.exists():
                self.event.set()
                return


def request_cancel(run_dir: Path) -> None:
    """Ask whatever process runs ``run_dir`` to stop (see :class:`CancelWatch`)."""
    path = Path(run_dir) / CANCEL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{time.time()}\n", encoding="utf-8")


def cancel_queued(run_dir: Path) -> None:
    """Record that a run was cancelled while it waited in a queue (nothing had started it)."""
    folder = RunFolder(run_dir)
    folder.write_progress({**folder.progress(), "state": "cancelled", "message": "cancelled before it started",
                           "ended": time.time(), "queue_position": 0})


def mark_dead(run_dir: Path, reason: str, state: str = "interrupted") -> None:
    """Record that the process running ``run_dir`` died: ``progress.json`` and (unless the method had finished)
    ``status.json`` say ``state`` (``interrupted``: it was stopped from outside and can be started again; ``failed``
    for a run that cannot run) with ``reason``. Used by supervisors that outlive their workers."""
    folder = RunFolder(run_dir)
    now = time.time()
    progress = folder.progress()
    if progress.get("state") in ("done", "failed", "cancelled"):
        return  # it got to record its own end
    message = "interrupted before it finished; start it again" if state == "interrupted" else state
    progress.update(state=state, error=reason, message=message, ended=now, queue_position=0)
    if progress.get("started"):
        progress["elapsed"] = round(now - float(progress["started"]), 1)
    folder.write_progress(progress)
    status = folder.status()
    if status.get("state") in ("running", "interrupted", "missing"):  # missing: it died before the method began
        folder.write_status(state, error=reason, started=status.get("started"), ended=now,
                            method=status.get("method"))

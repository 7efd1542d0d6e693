"""The in-process backend: :class:`Job` (one run and its progress) and :class:`ThreadBackend` (one worker thread).

One training run at a time -- a second browser's run queues and says how many are ahead. A job is cancelled through
its ``cancel`` event, which the stages check between steps; the worker survives any failure of a run and reports it
as the job's error. Progress is mirrored into the run folder (``progress.json``) so any reader sees it.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipforget.core.errors import ClipforgetError, RunCancelled
from clipforget.pipeline.folder import STATES_ACTIVE, RunFolder

from .backend import Snapshot
from .execute import execute
from .models import ModelCache
from .spec import RunSpec

STAGES = ("prepare", "forget", "remind", "restore", "evaluate", "curves")


@dataclass
class Job:
    """A run in the queue or on the worker; :meth:`snapshot` is what the UI shows."""

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
    queue_position: int = 0
    _written: float = 0.0

    @property
    def id(self) -> str:
        return self.spec.run_id

    @property
    def owner(self) -> str:
        return self.spec.owner

    def progress(self, stage: str, fraction: float, message: str) -> None:
        if stage in self.stages:
            self.stages[stage] = max(0.0, min(1.0, float(fraction)))
            for earlier in STAGES[: STAGES.index(stage)]:
                self.stages[earlier] = 1.0  # stages run in order (a skipped one counts as done)
        self.message = f"{stage}: {message}"
        if time.time() - self._written > 1.0:
            self.record()

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.time()) - self.started

    def snapshot(self) -> Snapshot:
        return {"id": self.id, "title": self.spec.title, "owner": self.owner, "state": self.state,
                "stages": dict(self.stages), "message": self.message, "elapsed": round(self.elapsed(), 1),
                "error": self.error, "model": self.spec.model, "profile": self.spec.profile,
                "created": self.spec.created, "backend": "thread", "device": self.device, "worker": "in-process",
                "queue_position": self.queue_position, "data": self.data}

    def record(self) -> None:
        """Mirror the snapshot into the run folder's ``progress.json``."""
        self._written = time.time()
        RunFolder(self.run_dir).write_progress({**self.snapshot(), "started": self.started, "ended": self.ended})


class ThreadBackend:
    """A :class:`~clipforget.jobs.backend.Backend` with one worker thread in this process, running jobs in order."""

    name = "thread"

    def __init__(self, models: ModelCache, cache_root: Path | None = None):
        self.models = models
        self.cache_root = cache_root
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job] = queue.Queue()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._loop, name="clipforget-runs", daemon=True)
        self._worker.start()

    def submit(self, spec: RunSpec, run_dir: Path) -> Snapshot:
        run_dir.mkdir(parents=True, exist_ok=True)
        spec.write(run_dir)
        job = Job(spec, run_dir, device=self.models.device)
        with self._lock:
            self.jobs[job.id] = job
            ahead = sum(1 for j in self.jobs.values() if j.state in STATES_ACTIVE and j is not job)
        job.queue_position = ahead
        if ahead:
            job.message = f"queued: {ahead} run(s) ahead of this one (one training run at a time)"
        job.record()
        self._queue.put(job)
        return job.snapshot()

    def snapshot(self, run_id: str) -> Snapshot | None:
        job = self.jobs.get(run_id)
        return job.snapshot() if job else None

    def active(self, owner: str) -> list[Snapshot]:
        with self._lock:
            jobs = [j for j in self.jobs.values() if j.owner == owner and j.state in STATES_ACTIVE]
        return [j.snapshot() for j in sorted(jobs, key=lambda j: j.spec.created)]

    def cancel(self, run_id: str) -> bool:
        job = self.jobs.get(run_id)
        if job is None or job.state not in STATES_ACTIVE:
            return False
        job.cancel.set()
        if job.state == "queued":
            job.message = "cancelled before it started"
        return True

    def wait(self, run_id: str, timeout: float | None = None) -> Snapshot:
        """Block until the job leaves the queue/worker (for scripts and tests)."""
        job = self.jobs[run_id]
        deadline = None if timeout is None else time.time() + timeout
        while job.state in STATES_ACTIVE:
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"run {run_id} still {job.state} after {timeout} s")
            time.sleep(0.05)
        return job.snapshot()

    def close(self) -> None:
        for job in list(self.jobs.values()):
            if job.state in STATES_ACTIVE:
                job.cancel.set()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                self._run(job)
            except BaseException as err:  # the worker must survive any run
                job.state, job.error = "failed", f"{type(err).__name__}: {err}"
            finally:
                job.ended = time.time()
                job.record()

    def _run(self, job: Job) -> None:
        if job.cancel.is_set():
            job.state = "cancelled"
            return
        job.state, job.started = "running", time.time()
        job.record()
        with self._lock:
            for other in self.jobs.values():
                if other.state == "queued":
                    ahead = sum(1 for j in self.jobs.values()
                                if j.state in STATES_ACTIVE and j.spec.created < other.spec.created)
                    other.queue_position = ahead
                    other.message = f"queued: {ahead} run(s) ahead of this one (one training run at a time)"
        try:
            job.data = execute(job.spec, job.run_dir, self.models, job.progress, job.cancel, self.cache_root)
            job.state, job.message = "done", "finished"
        except RunCancelled:
            job.state, job.message = "cancelled", "cancelled by the user"
        except ClipforgetError as err:
            job.state, job.error, job.message = "failed", str(err), "failed"
        except Exception as err:  # shown in the UI, not as a traceback
            job.state, job.error, job.message = "failed", f"{type(err).__name__}: {err}", "failed"

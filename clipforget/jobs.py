"""The app's run queue: :class:`Job` (one run and its progress) and :class:`RunManager` (one worker thread).

One training run at a time -- a second browser's run queues and says how many are ahead. A job is cancelled through
its ``cancel`` event, which the pipeline checks between steps; the worker survives any failure of a run and reports
it as the job's error instead of a traceback.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .data import DataError
from .models import ModelLoadError
from .task import RunCancelled

STAGES = ("prepare", "forget", "remind", "restore", "evaluate", "curves")
STATES_ACTIVE = ("queued", "running")


@dataclass
class Job:
    """A run in the queue or on the worker; :meth:`snapshot` is what the UI shows."""

    id: str
    owner: str
    title: str
    run_dir: Path
    model: str
    profile: str
    builder: Callable[..., Any] = field(repr=False)  # clipforget.service.TaskBuilder
    gallery: str | None = None
    state: str = "queued"
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    message: str = "waiting for the worker"
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    source: dict[str, Any] = field(default_factory=dict)  # preset / upload that defined the task
    data: dict[str, Any] = field(default_factory=dict)  # what the task was made of (filled by the worker)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def progress(self, stage: str, fraction: float, message: str) -> None:
        if stage in self.stages:
            self.stages[stage] = max(0.0, min(1.0, float(fraction)))
            for earlier in STAGES[: STAGES.index(stage)]:
                self.stages[earlier] = 1.0  # stages run in order (a skipped one counts as done)
        self.message = f"{stage}: {message}"

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.time()) - self.started

    def snapshot(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "state": self.state, "stages": dict(self.stages),
                "message": self.message, "elapsed": round(self.elapsed(), 1), "error": self.error,
                "model": self.model, "profile": self.profile}


class RunManager:
    """One worker thread that runs jobs in order; a job is cancelled through its ``cancel`` event.

    ``execute(job)`` does the work (raising :class:`~clipforget.task.RunCancelled` when cancelled); ``record(job)``
    is called whenever the job's state changes, e.g. to persist it next to the run.
    """

    def __init__(self, execute: Callable[[Job], None], record: Callable[[Job], None]):
        self._execute = execute
        self._record = record
        self.jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job] = queue.Queue()
        self._lock = threading.Lock()
        self._worker = threading.Thread(target=self._loop, name="clipforget-runs", daemon=True)
        self._worker.start()

    def submit(self, job: Job) -> Job:
        with self._lock:
            self.jobs[job.id] = job
            ahead = sum(1 for j in self.jobs.values() if j.state in STATES_ACTIVE and j is not job)
        if ahead:
            job.message = f"queued: {ahead} run(s) ahead of this one (one training run at a time)"
        self._queue.put(job)
        return job

    def active(self, owner: str) -> Job | None:
        with self._lock:
            jobs = [j for j in self.jobs.values() if j.owner == owner and j.state in STATES_ACTIVE]
        return jobs[-1] if jobs else None

    def latest(self, owner: str) -> Job | None:
        with self._lock:
            jobs = [j for j in self.jobs.values() if j.owner == owner]
        return max(jobs, key=lambda j: j.created) if jobs else None

    def cancel(self, job_id: str, owner: str) -> bool:
        job = self.jobs.get(job_id)
        if job is None or job.owner != owner or job.state not in STATES_ACTIVE:
            return False
        job.cancel.set()
        if job.state == "queued":
            job.message = "cancelled before it started"
        return True

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job leaves the queue/worker (for scripts and tests)."""
        job = self.jobs[job_id]
        deadline = None if timeout is None else time.time() + timeout
        while job.state in STATES_ACTIVE:
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"run {job_id} still {job.state} after {timeout} s")
            time.sleep(0.05)
        return job

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            try:
                self._run(job)
            except BaseException as err:  # the worker must survive any run
                job.state, job.error = "failed", f"{type(err).__name__}: {err}"
            finally:
                job.ended = time.time()
                self._record(job)

    def _run(self, job: Job) -> None:
        if job.cancel.is_set():
            job.state = "cancelled"
            return
        job.state, job.started = "running", time.time()
        self._record(job)
        with self._lock:
            for other in self.jobs.values():
                if other.state == "queued":
                    ahead = sum(1 for j in self.jobs.values() if j.state in STATES_ACTIVE and j.created < other.created)
                    other.message = f"queued: {ahead} run(s) ahead of this one (one training run at a time)"
        try:
            self._execute(job)
            job.state, job.message = "done", "finished"
        except RunCancelled:
            job.state, job.message = "cancelled", "cancelled by the user"
        except (DataError, ModelLoadError) as err:
            job.state, job.error, job.message = "failed", str(err), "failed"
        except Exception as err:  # shown in the UI, not as a traceback
            job.state, job.error, job.message = "failed", f"{type(err).__name__}: {err}", "failed"

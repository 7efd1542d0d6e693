"""The in-process backend: :class:`ThreadBackend` runs jobs one at a time on a thread of this process.

Kept for tests that patch the process (a fake setting) and for ``--backend thread``; the app's default is the
``local`` backend (:mod:`clipforget.jobs.local`), whose runs cannot take the web process down with them.
A second run queues and says how many are ahead; a job is cancelled through its ``cancel`` event.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from pathlib import Path

from clipforget.pipeline.folder import STATES_ACTIVE

from .backend import Snapshot, wait_until
from .job import STAGES, Job
from .model_cache import ModelCache
from .spec import RunSpec

__all__ = ["STAGES", "Job", "ThreadBackend"]


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

    def warm_up(self, spec: RunSpec) -> None:
        """Nothing ahead: runs share this process's caches and start at once (tests, single-user scripts)."""

    def wait(self, run_id: str, timeout: float | None = None) -> Snapshot:
        """Block until the job leaves the queue/worker (for scripts and tests)."""
        return wait_until(lambda: self.snapshot(run_id), run_id, timeout, 0.05)

    def close(self) -> None:
        for job in list(self.jobs.values()):
            if job.state in STATES_ACTIVE:
                job.cancel.set()

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if not job.cancel.is_set():
                self._requeue_messages(job)
            with contextlib.suppress(BaseException):  # recorded as the job's error; this thread must survive any run
                job.run(self.models, self.cache_root)

    def _requeue_messages(self, starting: Job) -> None:
        with self._lock:
            for other in self.jobs.values():
                if other.state == "queued" and other is not starting:
                    ahead = sum(1 for j in self.jobs.values() if j.state in STATES_ACTIVE and j is not other
                                and (j is starting or j.spec.created < other.spec.created))
                    other.queue_position = ahead
                    other.message = f"queued: {ahead} run(s) ahead of this one (one training run at a time)"

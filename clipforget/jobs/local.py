"""The ``local`` backend (the app's default): runs leave the web process for worker processes (docs/backends.md).

``submit`` writes the spec and a ``queued`` progress into the run folder, then a ticket into the queue folder
(:mod:`clipforget.jobs.workqueue`); a worker claims it and writes progress into the run folder, where
:meth:`LocalBackend.snapshot` reads it. Nothing about a run lives only in this process, so a restarted app re-attaches
by reading the same folders. Workers: a :class:`~clipforget.jobs.pool.WorkerPool` started here (``workers=0``: none)
and/or any ``python -m clipforget worker`` on the same queue folder.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import Any

from clipforget.core.atomic import read_json
from clipforget.pipeline.folder import STATES_ACTIVE, RunFolder

from .backend import Snapshot, wait_until
from .job import Job, cancel_queued, request_cancel
from .pool import WorkerPool, plan_slots
from .spec import RunSpec
from .workqueue import Ticket, WorkQueue


class LocalBackend:
    """A :class:`~clipforget.jobs.backend.Backend` over a queue folder and worker processes (module docstring)."""

    name = "local"

    def __init__(self, queue_dir: str | os.PathLike, workers: int | None = None, device: str | None = None,
                 cache_dir: str | os.PathLike | None = None, plugins: list[str] | None = None, poll: float = 0.5,
                 heartbeat_timeout: float = 60.0):
        self.queue = WorkQueue(queue_dir)
        self.poll = poll
        self.heartbeat_timeout = heartbeat_timeout
        slots = plan_slots(device, workers) if workers != 0 else []
        self.pool = WorkerPool(self.queue, slots, cache_dir, plugins, poll, heartbeat_timeout) if slots else None
        self._lock = threading.RLock()
        self._tickets: tuple[float, list[Ticket], list[Ticket]] = (0.0, [], [])
        self._dirs: dict[str, Path] = {}  # run folders of the runs this backend has seen
        self._stop = threading.Event()
        if self.pool is not None:
            self.pool.check()
        self._thread = threading.Thread(target=self._loop, name="clipforget-local-backend", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll):
            with contextlib.suppress(OSError):  # a shared folder hiccup must not end supervision
                if self.pool is not None:
                    self.pool.check()
                else:
                    self.queue.reap(self.heartbeat_timeout)

    # the protocol --------------------------------------------------------------------------------------------------
    def submit(self, spec: RunSpec, run_dir: Path) -> Snapshot:
        run_dir = Path(run_dir)
        spec.write(run_dir)
        Job(spec, run_dir, backend=self.name, device="next free worker", worker="-",
            message="queued").record()  # progress first: a worker's "running" must never be overwritten by it
        with self._lock:
            self.queue.put(spec, run_dir)
            self._dirs[spec.run_id] = run_dir
            self._tickets = (0.0, [], [])
        return self.snapshot(spec.run_id) or {}

    def snapshot(self, run_id: str) -> Snapshot | None:
        """Queued / running: from its ticket and run folder; else the final progress of a run this backend saw."""
        snap = self._lookup(run_id)
        if snap is not None:
            return snap
        run_dir = self._dirs.get(run_id)
        if run_dir is None:
            return None
        if read_json(run_dir / RunFolder.PROGRESS).get("state") in STATES_ACTIVE:
            snap = self._lookup(run_id, fresh=True)  # it may have moved between two listings
        return snap or self._final(run_dir)

    def _lookup(self, run_id: str, fresh: bool = False) -> Snapshot | None:
        pending, claimed = self._scan(fresh)
        for i, ticket in enumerate(pending):
            if ticket.run_id == run_id:
                return self._queued(ticket, i, len(claimed))
        for ticket in claimed:
            if ticket.run_id == run_id:
                return self._running(ticket)
        return None

    def active(self, owner: str) -> list[Snapshot]:
        pending, claimed = self._scan()
        snaps = [self._queued(t, i, len(claimed)) for i, t in enumerate(pending) if t.owner == owner]
        snaps += [self._running(t) for t in claimed if t.owner == owner]
        snaps = [s for s in snaps if s.get("state") in STATES_ACTIVE]  # a finished run releases its ticket last
        return sorted(snaps, key=lambda s: s.get("created") or 0)

    def cancel(self, run_id: str) -> bool:
        with self._lock:
            pending, claimed = self._scan(fresh=True)
            ticket = next((t for t in pending if t.run_id == run_id), None)
            if ticket is not None and self.queue.withdraw(run_id):
                cancel_queued(ticket.run_dir)
                self._tickets = (0.0, [], [])
                return True
            ticket = next((t for t in claimed if t.run_id == run_id), None)
            if ticket is None:  # claimed between the scan and the withdrawal?
                ticket = next((t for t in self._scan(fresh=True)[1] if t.run_id == run_id), None)
            if ticket is None:
                return False
            request_cancel(ticket.run_dir)
            return True

    def warm_up(self, spec: RunSpec) -> None:
        self.queue.set_warm_up(spec)  # the workers (any on this queue) take it when idle

    def wait(self, run_id: str, timeout: float | None = None) -> Snapshot:
        return wait_until(lambda: self.snapshot(run_id), run_id, timeout, 0.1)

    def close(self) -> None:
        """Stop supervising; the pool's workers cancel their runs and exit. Queued runs stay in the queue folder."""
        self._stop.set()
        self._thread.join(timeout=5)
        if self.pool is not None:
            self.pool.stop()

    # reading the queue ---------------------------------------------------------------------------------------------
    def _scan(self, fresh: bool = False) -> tuple[list[Ticket], list[Ticket]]:
        """Pending and claimed tickets (cached for a fraction of a second: the UI polls per browser). Pending is
        listed first: a ticket claimed in between then shows in both lists, never in neither."""
        with self._lock:
            at, pending, claimed = self._tickets
            if fresh or time.time() - at > 0.2:
                pending, claimed = self.queue.pending_tickets(), self.queue.claimed_tickets()
                self._tickets = (time.time(), pending, claimed)
                for ticket in pending + claimed:
                    self._dirs[ticket.run_id] = ticket.run_dir
            return pending, claimed

    def _queued(self, ticket: Ticket, position: int, running: int) -> Snapshot:
        snap = read_json(ticket.run_dir / RunFolder.PROGRESS)
        busy, live = self.pool.busy() if self.pool is not None else (running, running)
        ahead = "next in line" if position == 0 else f"{position} run(s) ahead in the queue"
        doing = self._idle_work() if busy == 0 or busy < live else []
        warm_up = None
        if doing:  # no run on the worker, but work it does while idle: it stops that for this run
            said = str(doing[0].get("message", ""))
            message = f"queued: {ahead}; the worker is {said}, and stops it for this run within seconds"
            warm_up = {"title": said.partition(": ")[0], "fraction": float(doing[0].get("fraction") or 0),
                       "message": said}
        elif live:
            message = f"queued: {ahead}; {busy} of {live} worker(s) busy"
        elif self.pool is not None and self.pool.worker_pids():
            message = f"queued: {ahead}; worker(s) starting"
        else:
            message = f"queued: {ahead}; no worker is running (start one: python -m clipforget worker)"
        if self.pool is not None and self.pool.problem:
            message += f" (last worker problem: {self.pool.problem})"
        return {**snap, "id": ticket.run_id, "state": "queued", "queue_position": position + 1, "message": message,
                "elapsed": 0.0, "run_dir": str(ticket.run_dir), "warm_up": warm_up}

    def _idle_work(self) -> list[dict[str, Any]]:
        """What live workers without a run are doing (their heartbeats' ``activity``: step, fraction, message, e.g.
        "preparing the demo gallery (first start only): 3,200 / 21,531 images, about 1 min left")."""
        return [b["activity"] for b in self.queue.heartbeats()
                if not b.get("run") and isinstance(b.get("activity"), dict)
                and self.queue.is_alive(b, self.heartbeat_timeout)]

    def _running(self, ticket: Ticket) -> Snapshot:
        snap = read_json(ticket.run_dir / RunFolder.PROGRESS)
        snap.update(id=ticket.run_id, queue_position=0, run_dir=str(ticket.run_dir))
        if snap.get("state") == "queued":
            snap.update(state="running", message=f"starting on worker {ticket.worker}", elapsed=0.0)
        elif snap.get("state") == "running" and snap.get("started"):
            snap["elapsed"] = round(time.time() - float(snap["started"]), 1)
        return snap

    @staticmethod
    def _final(run_dir: Path) -> Snapshot | None:
        """A seen run that left the queue: its recorded end (``interrupted`` if it recorded none)."""
        snap = read_json(run_dir / RunFolder.PROGRESS)
        if snap.get("state") in STATES_ACTIVE:
            snap.update(state="interrupted",
                        error=snap.get("error") or "the run left the queue without recording its end")
        return snap or None

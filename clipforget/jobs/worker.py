"""A worker process: claims runs from a queue folder (:mod:`clipforget.jobs.workqueue`) and executes them, one at a
time, with models it loads itself (docs/backends.md, "Workers"). SIGTERM / SIGINT cancel the current run and stop it.

With ``parent_pid`` (the supervisor) the worker *drains* once its supervisor is gone: it finishes the run it has and
exits instead of taking another; work left for later stops at once, so that no orphan keeps the CPU busy. Work left
for later (the alpha grid's other points, :func:`~clipforget.jobs.execute.execute`, and the app's warm-up) runs when
no run is waiting, stops as soon as one is queued, and is taken up again afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipforget.core.atomic import write_json
from clipforget.core.devices import configure_threads, describe_device, resolve_device
from clipforget.core.errors import RunCancelled
from clipforget.core.paths import cache_dir

from .execute import Deferred, warm_up
from .job import CancelWatch, Job, mark_dead
from .model_cache import ModelCache
from .spec import RunSpec
from .workqueue import HEARTBEAT_FILE, Ticket, WorkQueue, host_name, process_alive, worker_id


@dataclass
class WorkerConfig:
    queue: Path
    device: str | None = None  # None / auto: cuda when visible, else cpu
    slot: str = "w0"  # the supervisor's name for this worker's place (e.g. gpu1, cpu0)
    device_label: str | None = None  # what the UI shows, e.g. cuda:1 when CUDA_VISIBLE_DEVICES=1 maps it to cuda:0
    parent_pid: int | None = None  # drain and exit once this process is gone
    threads: int | None = None  # torch CPU threads
    cache_dir: str | None = None
    poll: float = 0.5
    heartbeat: float = 2.0
    max_runs: int | None = None  # exit after this many runs
    idle_exit: float | None = None  # exit after this many seconds without work
    plugins: list[str] = field(default_factory=list)  # modules / .py files to import (custom settings, methods)
    nice: int = 0  # added to the process's niceness: the web app keeps the CPU when both want it


def load_plugins(plugins: list[str]) -> None:
    """Import each plugin: a module name, or a path to a ``.py`` file (registers settings / methods)."""
    for plugin in plugins:
        if plugin.endswith(".py"):
            name = f"clipforget_plugin_{Path(plugin).stem}"
            spec = importlib.util.spec_from_file_location(name, plugin)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load plugin {plugin}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(plugin)


class Worker:
    """One worker (see the module docstring); :meth:`serve` runs until stopped, drained or done."""

    def __init__(self, config: WorkerConfig):
        self.config = config
        self.queue = WorkQueue(config.queue)
        self.id = worker_id()
        self.dir = self.queue.worker_dir(self.id)
        self.device = resolve_device(config.device)
        self.label = f"{config.slot}@{host_name()} (pid {os.getpid()})"
        self.device_label = describe_device(config.device_label or self.device)
        self.current: Job | None = None
        self.runs = 0
        self.started = time.time()
        self.stop_reason: str | None = None
        self._stop = threading.Event()
        self.deferred: list[tuple[str, Deferred]] = []  # (run id, work) left by finished runs, oldest first
        self._warmed: set[int] = set()  # warm-up asks taken (their stamps)
        # what the worker does while no run is on it (warm-up, a run's alpha grid), in its heartbeat for the app
        self.activity: dict[str, Any] | None = None
        self._activity_beat = 0.0

    # lifecycle -----------------------------------------------------------------------------------------------------
    def stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason
        self._stop.set()
        job = self.current
        if job is not None:
            job.cancel.set()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stop(f"the worker was stopped ({signal.Signals(signum).name})")

    def serve(self) -> int:
        cfg = self.config
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        if cfg.nice:
            with contextlib.suppress(OSError):
                os.nice(cfg.nice)
        configure_threads(cfg.threads)
        load_plugins(cfg.plugins)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._beat()
        beats = threading.Thread(target=self._beat_loop, name="clipforget-heartbeat", daemon=True)
        beats.start()
        models = ModelCache(self.device, cfg.cache_dir)
        cache_root = cache_dir(cfg.cache_dir)
        idle_since = time.time()
        print(f"worker {self.label}: {self.device_label}, queue {self.queue.root}", flush=True)
        try:
            while not self._stop.is_set():
                if self._orphaned():
                    print(f"worker {self.label}: supervisor {cfg.parent_pid} is gone; exiting", flush=True)
                    break
                if cfg.max_runs is not None and self.runs >= cfg.max_runs:
                    self._finish_deferred()
                    break
                ticket = self.queue.claim(self.dir)
                if ticket is None:
                    self._add_warm_up(models, cache_root)
                    if self.deferred:
                        self._finish_deferred()
                        idle_since = time.time()
                        continue
                    if cfg.idle_exit is not None and time.time() - idle_since > cfg.idle_exit:
                        break
                    self._stop.wait(cfg.poll)
                    continue
                self._run(ticket, models, cache_root)
                idle_since = time.time()
        finally:
            self._stop.set()
            beats.join(timeout=5)
            for path in self.dir.glob("*.json"):  # a claimed ticket left (stopped before it ran): back in line
                if path.name != HEARTBEAT_FILE:
                    os.replace(path, self.queue.pending / path.name)
            (self.dir / HEARTBEAT_FILE).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.dir.rmdir()
        return 0

    def _orphaned(self) -> bool:
        """The supervisor this worker was started for is gone."""
        return bool(self.config.parent_pid) and not process_alive(self.config.parent_pid)

    def _run(self, ticket: Ticket, models: ModelCache, cache_root: Path) -> None:
        spec = RunSpec.read(ticket.run_dir)
        if spec is None:
            mark_dead(ticket.run_dir, f"the run folder {ticket.run_dir} has no readable job.json", "failed")
            ticket.path.unlink(missing_ok=True)
            return
        job = Job(spec, ticket.run_dir, device=self.device_label, backend="local", worker=self.label,
                  record_every=0.5)
        self.current = job
        self._beat()
        try:
            with CancelWatch(ticket.run_dir, job.cancel):
                if self._stop.is_set():
                    job.cancel.set()
                left: list[Deferred] = []
                job.run(models, cache_root, left)
                if job.state == "done":
                    self.deferred += [(job.id, work) for work in left]
            if job.state == "cancelled" and self.stop_reason:
                job.message = f"cancelled: {self.stop_reason}"
                job.record()
        finally:
            self.current = None
            self.runs += 1
            ticket.path.unlink(missing_ok=True)
            self._beat()

    def _add_warm_up(self, models: ModelCache, cache_root: Path) -> None:
        """Queue the warm-up the app asked for (once per ask) as deferred work: it runs while no run waits."""
        asked = self.queue.warm_up(taken=self._warmed)
        if asked is None:
            return
        stamp, spec = asked
        self._warmed.add(stamp)

        def work(stop: threading.Event) -> None:
            started = time.time()
            seconds = warm_up(spec, models, cache_root, stop, self._report_activity)
            self.queue.warm_up_done(stamp, {"worker": self.label, "started": started, "seconds": seconds,
                                            "total": round(time.time() - started, 1)})

        self.deferred.append(("warm-up", work))

    def _finish_deferred(self) -> None:
        """Do the oldest deferred work until it is done, a run is queued or the worker stops (then it stays)."""
        if not self.deferred:
            return
        run_id, work = self.deferred[0]
        if run_id != "warm-up":
            # shown to whoever's run waits: no run id (it carries its owner's title)
            self._report_activity("alpha_grid", 0.0, "finishing a run's alpha grid")
        stop = threading.Event()
        watching = threading.Event()

        def watch() -> None:
            while not watching.wait(self.config.poll):
                if self._stop.is_set() or self.queue.pending_tickets() or self._orphaned():
                    stop.set()
                    return

        watcher = threading.Thread(target=watch, name="clipforget-deferred-watch", daemon=True)
        watcher.start()
        try:
            work(stop)
            self.deferred.pop(0)
        except RunCancelled:  # stopped for a queued run or the worker stopping: taken up again when the queue is empty
            if not stop.is_set():  # else its run is gone
                self.deferred.pop(0)
        except Exception as err:  # the run is done; its grid stays partial and says so
            self.deferred.pop(0)
            print(f"worker {self.label}: could not finish the alpha grid of run {run_id}: {err}", flush=True)
        finally:
            watching.set()
            watcher.join(timeout=5)
            self.activity = None
            self._beat()

    def _report_activity(self, step: str, fraction: float, message: str) -> None:
        """Progress of work done while idle: kept for the heartbeat, written at most once a second."""
        self.activity = {"step": step, "fraction": round(float(fraction), 4), "message": message,
                         "updated": time.time()}
        if time.time() - self._activity_beat >= 1.0:
            self._activity_beat = time.time()
            with contextlib.suppress(OSError):
                self._beat()

    # heartbeat -----------------------------------------------------------------------------------------------------
    def _beat(self) -> None:
        job = self.current
        write_json(self.dir / HEARTBEAT_FILE, {
            "id": self.id, "slot": self.config.slot, "label": self.label, "host": host_name(), "pid": os.getpid(),
            "device": self.device_label, "parent_pid": self.config.parent_pid,
            "supervised": self.config.parent_pid is not None, "started": self.started,
            "updated": time.time(), "run": job.id if job else None, "runs": self.runs,
            "activity": None if job else self.activity,
        })

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.config.heartbeat):
            with contextlib.suppress(OSError):
                self._beat()

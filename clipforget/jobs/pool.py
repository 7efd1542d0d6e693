"""Supervised worker processes (docs/backends.md, "Supervision"): :class:`WorkerPool` starts one ``python -m
clipforget worker --one`` per slot and replaces one that dies, marking the run it held as failed with the reason
(``worker gpu0@host (pid 123) killed by signal 9 (SIGKILL)``). Workers run in their own session and outlive a crashed
supervisor; a new one fills their slot only once they have exited (never two workers in one slot).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from clipforget.core.devices import worker_devices

from .workqueue import WorkQueue, host_name, worker_id

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding clipforget/ (put on the workers' path)


@dataclass
class Slot:
    """A place for one worker: a name (``gpu1``, ``cpu0``) and the device it uses as the machine names it."""

    name: str
    device: str  # cpu / cuda:N (physical index)
    threads: int | None = None


def plan_slots(device: str | None = None, workers: int | None = None) -> list[Slot]:
    """One slot per worker device (:func:`clipforget.core.devices.worker_devices`); CPU workers share the cores."""
    devices = worker_devices(device, workers)
    cpus = os.cpu_count() or 1
    n_cpu = sum(d == "cpu" for d in devices)
    slots, counts = [], {}
    for d in devices:
        base = "cpu" if d == "cpu" else "gpu" + d.split(":")[1]
        i = counts[base] = counts.get(base, -1) + 1
        name = f"cpu{i}" if base == "cpu" else (base if i == 0 else f"{base}-{i}")
        threads = max(1, cpus // n_cpu) if d == "cpu" else max(1, min(4, cpus // len(devices)))
        slots.append(Slot(name, d, threads))
    return slots


def describe_exit(code: int) -> str:
    """``killed by signal 9 (SIGKILL)`` / ``exited with code 1`` (a Popen return code)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        hint = " -- out of memory?" if -code == signal.SIGKILL else ""
        return f"killed by signal {-code} ({name}){hint}"
    return f"exited with code {code}"


class WorkerPool:
    """Starts and supervises the workers of :func:`plan_slots` on one queue (see the module docstring)."""

    def __init__(self, queue: WorkQueue, slots: list[Slot], cache_dir: str | os.PathLike | None = None,
                 plugins: list[str] | None = None, poll: float = 0.5, heartbeat_timeout: float = 60.0,
                 python: str = sys.executable, nice: int = 10):
        self.queue = queue
        self.slots = slots
        self.cache_dir = str(cache_dir) if cache_dir else None
        self.plugins = list(plugins or [])
        self.poll = poll
        self.heartbeat_timeout = heartbeat_timeout
        self.python = python
        self.nice = nice  # workers yield the CPU to the web app (docs/decisions.md, backends)
        self.procs: dict[str, subprocess.Popen] = {}
        self.problem: str | None = None  # the last worker death / failed start, for queued runs' messages
        self._failures: dict[str, tuple[int, float]] = {}  # slot -> (quick deaths in a row, not before)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # control -------------------------------------------------------------------------------------------------------
    def start(self) -> WorkerPool:
        """Start the workers and a thread that supervises them."""
        self.check()
        self._thread = threading.Thread(target=self._loop, name="clipforget-worker-pool", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Supervise in this thread until :meth:`stop` (``python -m clipforget worker``)."""
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.poll)

    def request_stop(self) -> None:
        """Make :meth:`serve_forever` return (from a signal handler); then call :meth:`stop`."""
        self._stop.set()

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the workers: SIGTERM (each cancels its run and exits), SIGKILL after ``timeout`` s."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        with self._lock:
            procs = dict(self.procs)
        for proc in procs.values():
            if proc.poll() is None:
                proc.terminate()
        deadline = time.time() + timeout
        for slot, proc in procs.items():
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self._retire(slot, proc)

    def busy(self) -> tuple[int, int]:
        """(workers running a run, live workers) over the whole queue, this pool's and others'."""
        beats = [b for b in self.queue.heartbeats() if self.queue.is_alive(b, self.heartbeat_timeout)]
        return sum(1 for b in beats if b.get("run")), len(beats)

    def worker_pids(self) -> dict[str, int]:
        with self._lock:
            return {slot: proc.pid for slot, proc in self.procs.items() if proc.poll() is None}

    # supervision ---------------------------------------------------------------------------------------------------
    def check(self) -> None:
        """One round: retire dead children (with their exit status) and dead foreign workers, refill free slots."""
        with self._lock:
            for slot, proc in list(self.procs.items()):
                if proc.poll() is not None:
                    self._retire(slot, proc)
            own = {worker_id(p.pid) for p in self.procs.values()}
            self.queue.reap(self.heartbeat_timeout, skip=own)
            if self._stop.is_set():
                return
            occupied = self._occupied_by_others()
            for slot in self.slots:
                if slot.name in self.procs or slot.name in occupied:
                    continue
                not_before = self._failures.get(slot.name, (0, 0.0))[1]
                if time.time() >= not_before:
                    self.procs[slot.name] = self._spawn(slot)

    def _occupied_by_others(self) -> set[str]:
        """Slots held by live workers on this host that this pool did not start (a previous supervisor's, draining)."""
        mine = {p.pid for p in self.procs.values()}
        return {b.get("slot") for b in self.queue.heartbeats()
                if b.get("host") == host_name() and b.get("pid") not in mine
                and b.get("supervised") and self.queue.is_alive(b, self.heartbeat_timeout)}

    def _spawn(self, slot: Slot) -> subprocess.Popen:
        cmd = [self.python, "-m", "clipforget", "worker", "--one", "--queue", str(self.queue.root),
               "--slot", slot.name, "--parent-pid", str(os.getpid()), "--device-label", slot.device,
               "--threads", str(slot.threads or 0), "--nice", str(self.nice)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), *filter(None, [env.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        if slot.device.startswith("cuda"):
            env["CUDA_VISIBLE_DEVICES"] = slot.device.split(":")[1]
            cmd += ["--device", "cuda:0"]
        else:
            cmd += ["--device", "cpu"]
            env["OMP_NUM_THREADS"] = str(slot.threads or 1)
        if self.cache_dir:
            cmd += ["--cache-dir", self.cache_dir]
        for plugin in self.plugins:
            cmd += ["--plugin", plugin]
        log = open(self.queue.logs / f"{slot.name}.log", "ab")  # handed to the child
        try:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        finally:
            log.close()
        proc.started = time.time()  # type: ignore[attr-defined]
        return proc

    def _retire(self, slot: str, proc: subprocess.Popen) -> None:
        """Child ``proc`` of ``slot`` has exited: fail its run (if any) with the exit status; back off quick deaths."""
        if self.procs.get(slot) is proc:
            del self.procs[slot]
        code = proc.returncode if proc.returncode is not None else proc.poll()
        if code is None:
            return
        wid = worker_id(proc.pid)
        label = f"{slot}@{host_name()} (pid {proc.pid})"
        reason = f"worker {label} {describe_exit(code)}"
        failed = self.queue.retire(wid, f"{reason} while running this run")
        if code != 0 or failed:
            self.problem = reason + (f"; its log: {self.queue.logs / (slot + '.log')}" if not failed else "")
        lived = time.time() - getattr(proc, "started", 0.0)
        deaths = self._failures.get(slot, (0, 0.0))[0] + 1 if (code != 0 and lived < 30 and not failed) else 0
        self._failures[slot] = (deaths, time.time() + min(60.0, 2.0 ** deaths) if deaths else 0.0)

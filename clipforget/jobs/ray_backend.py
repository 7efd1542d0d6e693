"""The ``ray`` backend: each run is a Ray actor asking for one GPU (one CPU where the cluster has no GPU); Ray
schedules, queues and places them (docs/backends.md, "The ray backend").

The actor is named (``run-<run id>`` in namespace ``clipforget``) and detached, so a restarted app finds running
actors by name and re-attaches. It writes the run folder as any worker does, so **the cache folder must be on storage
that the app and every Ray node mount at the same path**. Cancelling a waiting run kills its actor; a running one is
asked through ``cancel.request``. An actor that dies fails its run with Ray's reason.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clipforget.core.atomic import read_json
from clipforget.pipeline.folder import STATES_ACTIVE, RunFolder

from .backend import Snapshot, wait_until
from .job import CancelWatch, Job, cancel_queued, mark_dead, request_cancel
from .pool import PACKAGE_ROOT
from .spec import RunSpec

NAMESPACE = "clipforget"
ACTOR_PREFIX = "run-"


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to (``auto``, ``ray://host:port``, ``host:port``) or start (``None`` / ``local``) a Ray cluster in
    namespace ``clipforget``; returns whether this call started it (``False`` when already connected)."""
    import ray

    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in ("CLIPFORGET_DATA", "CLIPFORGET_CACHE") if os.environ.get(k)}
    kwargs: dict[str, Any] = {"namespace": NAMESPACE, "runtime_env": {"env_vars": env}, "log_to_driver": False,
                              "include_dashboard": False}
    if address in (None, "", "local"):  # the local cluster's workers import this checkout
        env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        kwargs["num_cpus"] = num_cpus
    else:
        kwargs["address"] = address
    ray.init(**kwargs)
    return True


class RunActor:
    """One run on a Ray worker (wrapped by ``ray.remote`` in :class:`RayBackend`; threaded, so :meth:`result` answers
    while :meth:`run` works)."""

    def __init__(self, run_dir: str, plugins: list[str] | None = None):
        from .worker import load_plugins

        self.run_dir = Path(run_dir)
        self.done = threading.Event()
        self.final: Snapshot | None = None
        load_plugins(list(plugins or []))

    def result(self) -> Snapshot | None:
        self.done.wait()
        return self.final

    def run(self, spec: dict[str, Any], cache_dir: str | None, cpus: float = 1.0) -> Snapshot:
        import ray

        from clipforget.core.devices import configure_threads, describe_device
        from clipforget.core.paths import cache_dir as resolve_cache

        from .model_cache import ModelCache

        try:
            gpu_ids = [str(g) for g in ray.get_gpu_ids()]
            device = "cuda:0" if gpu_ids else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the GPU it gave us
            configure_threads(max(1, int(cpus)))
            label = describe_device(f"cuda:{gpu_ids[0]}" if gpu_ids else "cpu", device)
            node = ray.get_runtime_context().get_node_id()[:8]
            worker = f"ray actor {ACTOR_PREFIX}{spec['run_id'][-8:]} on node {node} (pid {os.getpid()})"
            job = Job(RunSpec(**spec), self.run_dir, device=label, backend="ray", worker=worker, record_every=0.5)
            with CancelWatch(self.run_dir, job.cancel):
                self.final = job.run(ModelCache(device, cache_dir), resolve_cache(cache_dir))
            return self.final
        finally:
            self.done.set()


@dataclass
class _Run:
    run_id: str
    run_dir: Path
    owner: str
    created: float
    actor: Any
    ref: Any  # ObjectRef of actor.run / actor.result
    finished: bool = False


class RayBackend:
    """A :class:`~clipforget.jobs.backend.Backend` on a Ray cluster (module docstring)."""

    name = "ray"

    def __init__(self, address: str | None = None, runs_dir: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, gpus_per_run: float | None = None,
                 cpus_per_run: float = 1.0, num_cpus: int | None = None, plugins: list[str] | None = None,
                 poll: float = 0.5):
        import ray

        self.started_cluster = init_ray(address, num_cpus)
        resources = ray.cluster_resources()
        self.gpus_per_run = (1.0 if resources.get("GPU", 0) > 0 else 0.0) if gpus_per_run is None else gpus_per_run
        self.cpus_per_run = cpus_per_run
        self.runs_dir = Path(runs_dir) if runs_dir else None
        self.cache_dir = str(cache_dir) if cache_dir else None
        self.plugins = list(plugins or [])
        self.poll = poll
        self._actor_cls = ray.remote(RunActor)
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reattach()
        self._thread = threading.Thread(target=self._loop, name="clipforget-ray-backend", daemon=True)
        self._thread.start()

    # the protocol --------------------------------------------------------------------------------------------------
    def submit(self, spec: RunSpec, run_dir: Path) -> Snapshot:
        run_dir = Path(run_dir).resolve()
        spec.write(run_dir)
        where = "a free GPU" if self.gpus_per_run else "a free CPU"
        Job(spec, run_dir, backend=self.name, device=f"next {where.split()[-1]} in the cluster", worker="-",
            message=f"queued: waiting for {where} in the Ray cluster").record()
        actor = self._actor_cls.options(
            name=ACTOR_PREFIX + spec.run_id, namespace=NAMESPACE, lifetime="detached", num_gpus=self.gpus_per_run,
            num_cpus=self.cpus_per_run, max_restarts=0, max_concurrency=4,
        ).remote(str(run_dir), self.plugins)
        ref = actor.run.remote(asdict(spec), self.cache_dir, self.cpus_per_run)
        with self._lock:
            self._runs[spec.run_id] = _Run(spec.run_id, run_dir, spec.owner, spec.created, actor, ref)
        return self.snapshot(spec.run_id) or {}

    def snapshot(self, run_id: str) -> Snapshot | None:
        run = self._runs.get(run_id)
        if run is None:
            return None
        snap = read_json(run.run_dir / RunFolder.PROGRESS)
        snap["id"] = run_id
        if snap.get("state") == "queued":
            ahead, where = self._waiting_ahead(run), "GPU" if self.gpus_per_run else "CPU"
            snap.update(queue_position=ahead + 1,
                        message=f"queued: waiting for a free {where} in the Ray cluster ({ahead} run(s) ahead)")
        elif snap.get("state") == "running":
            snap["queue_position"] = 0
            if snap.get("started"):
                snap["elapsed"] = round(time.time() - float(snap["started"]), 1)
        if run.finished and snap.get("state") in STATES_ACTIVE:
            snap.update(state="interrupted", error=snap.get("error") or "the Ray actor ended without recording it")
        return snap

    def active(self, owner: str) -> list[Snapshot]:
        with self._lock:
            runs = [r for r in self._runs.values() if r.owner == owner and not r.finished]
        snaps = [s for s in (self.snapshot(r.run_id) for r in runs) if s and s.get("state") in STATES_ACTIVE]
        return sorted(snaps, key=lambda s: s.get("created") or 0)

    def cancel(self, run_id: str) -> bool:
        import ray

        run = self._runs.get(run_id)
        if run is None or run.finished:
            return False
        state = read_json(run.run_dir / RunFolder.PROGRESS).get("state")
        if state == "queued":  # its actor has not started: nothing to stop gracefully
            cancel_queued(run.run_dir)
            ray.kill(run.actor, no_restart=True)
            return True
        if state in STATES_ACTIVE:
            request_cancel(run.run_dir)
            return True
        return False

    def warm_up(self, spec: RunSpec) -> None:
        """Nothing ahead: each run is an actor of its own, possibly on another node."""

    def wait(self, run_id: str, timeout: float | None = None) -> Snapshot:
        def settled(snap: Snapshot) -> bool:
            return snap.get("state") not in STATES_ACTIVE and (self._runs[run_id].finished
                                                               or snap.get("state") == "cancelled")

        return wait_until(lambda: self.snapshot(run_id), run_id, timeout, 0.1, settled)

    def close(self) -> None:
        """Cancel active runs, end their actors, stop following; shuts down a cluster this backend started."""
        import ray

        for run_id in list(self._runs):
            self.cancel(run_id)  # False for a finished run
        deadline = time.time() + 30
        while any(not r.finished for r in self._runs.values()) and time.time() < deadline:
            time.sleep(0.2)
        self._stop.set()
        self._thread.join(timeout=5)
        for run in self._runs.values():
            _kill(run.actor)
        if self.started_cluster:
            ray.shutdown()

    # following -----------------------------------------------------------------------------------------------------
    def _waiting_ahead(self, run: _Run) -> int:
        with self._lock:
            others = [r for r in self._runs.values() if not r.finished and r.created < run.created]
        return sum(1 for r in others if read_json(r.run_dir / RunFolder.PROGRESS).get("state") == "queued")

    def _loop(self) -> None:
        import ray

        while not self._stop.is_set():
            with self._lock:
                live = {r.ref: r for r in self._runs.values() if not r.finished}
            if not live:
                self._stop.wait(self.poll)
                continue
            ready, _ = ray.wait(list(live), num_returns=len(live), timeout=self.poll)
            for ref in ready:
                self._finish(live[ref], ref)

    def _finish(self, run: _Run, ref: Any) -> None:
        import ray

        try:
            ray.get(ref)
        except ray.exceptions.RayActorError as err:
            mark_dead(run.run_dir, f"the Ray actor running this run died: {_first_line(err)}")
        except ray.exceptions.RayError as err:
            mark_dead(run.run_dir, f"Ray could not run this run: {_first_line(err)}", "failed")
        run.finished = True
        _kill(run.actor)

    def _reattach(self) -> None:
        """Follow the ``run-*`` actors a previous app left running (found by name; detached)."""
        import ray

        if self.runs_dir is None:
            return
        for name in ray.util.list_named_actors():
            if not name.startswith(ACTOR_PREFIX):
                continue
            run_id = name[len(ACTOR_PREFIX):]
            spec = RunSpec.read(self.runs_dir / run_id)
            if spec is None:
                continue
            try:
                actor = ray.get_actor(name, namespace=NAMESPACE)
            except ValueError:
                continue
            self._runs[run_id] = _Run(run_id, (self.runs_dir / run_id).resolve(), spec.owner, spec.created, actor,
                                      actor.result.remote())


def _kill(actor: Any) -> None:
    import ray

    with contextlib.suppress(Exception):  # already gone
        ray.kill(actor, no_restart=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__

"""Run backends: the queue folder, worker processes (two at once, one killed, a restarted app re-attaching), the
worker CLI, the CUDA-path choices that can be checked on a CPU (autocast dtype, faiss-gpu selection)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from test_service import model_spec

from clipforget.app.config import AppConfig
from clipforget.app.service import AppServices
from clipforget.cli.main import main as cli
from clipforget.core import devices
from clipforget.core.paths import data_root
from clipforget.jobs.job import CANCEL_FILE, CancelWatch
from clipforget.jobs.local import LocalBackend
from clipforget.jobs.pool import describe_exit, plan_slots
from clipforget.jobs.spec import RunSpec
from clipforget.jobs.workqueue import HEARTBEAT_FILE, WorkQueue, host_name, process_alive
from clipforget.pipeline.folder import RunFolder
from clipforget.retrieval import gpu as faiss_gpu

PLUGIN = str(Path(__file__).with_name("backend_plugin.py"))
REPO = Path(__file__).resolve().parents[1]


def tiny_folders(root: Path) -> dict[str, Path]:
    """Forget: 8 CIFAR airplanes; retain: 4 automobiles, ships, cats; gallery: 6 of each of the four classes."""
    cifar = data_root() / "cifar10" / "test"
    if not cifar.is_dir():
        pytest.skip(f"CIFAR-10 not found under {data_root()}")
    plan = [("airplane", 8, 0, root / "forget")]
    plan += [(c, 4, 0, root / "retain" / c) for c in ("automobile", "ship", "cat")]
    plan += [(c, 6, 100, root / "gallery" / c) for c in ("airplane", "automobile", "ship", "cat")]
    for cls, n, offset, dst in plan:
        dst.mkdir(parents=True, exist_ok=True)
        for p in sorted((cifar / cls).glob("*.jpg"))[offset : offset + n]:
            shutil.copy(p, dst / p.name)
    return {"forget": root / "forget", "retain": root / "retain", "gallery": root / "gallery"}


def local_config(cache: Path, gallery: Path, workers: int) -> AppConfig:
    return AppConfig(model=model_spec(), cache_dir=str(cache), galleries={"tiny": str(gallery)},
                     default_gallery="tiny", top_k=5, backend="local", workers=workers, device="cpu",
                     worker_plugins=[PLUGIN])


def gated_options(folders: dict[str, Path], gate: Path) -> dict[str, str]:
    return {"gate": str(gate), "forget_dir": str(folders["forget"]), "retain_dir": str(folders["retain"]),
            "label": "airplane"}


def wait_for(predicate, timeout: float, what: str, poll: float = 0.2):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def worker_pid(snap: dict) -> int:
    return int(snap["worker"].rsplit("pid ", 1)[1].rstrip(")"))


# --- fast: the pieces --------------------------------------------------------------------------------------------
def test_slots_one_worker_per_gpu_else_one_on_the_cpu(monkeypatch):
    monkeypatch.setattr(devices, "visible_gpus", lambda: 0)
    assert [(s.name, s.device) for s in plan_slots()] == [("cpu0", "cpu")]
    assert [s.name for s in plan_slots("cpu", 2)] == ["cpu0", "cpu1"]
    monkeypatch.setattr(devices, "visible_gpus", lambda: 2)
    assert [(s.name, s.device) for s in plan_slots()] == [("gpu0", "cuda:0"), ("gpu1", "cuda:1")]
    assert [s.name for s in plan_slots(None, 3)] == ["gpu0", "gpu1", "gpu0-1"]
    assert [s.device for s in plan_slots("cuda:1", 2)] == ["cuda:1", "cuda:1"]
    assert [s.device for s in plan_slots("cuda")] == ["cuda:0", "cuda:1"]


def test_exit_codes_become_reasons():
    assert describe_exit(-9).startswith("killed by signal 9 (SIGKILL)")
    assert describe_exit(-11) == "killed by signal 11 (SIGSEGV)"
    assert describe_exit(3) == "exited with code 3"


def _spec(owner: str = "o", title: str = "t") -> RunSpec:
    return RunSpec(RunSpec.new_id(title), owner, title, "m", "cifar10", profile="quick")


def test_each_ticket_is_claimed_by_exactly_one_worker(tmp_path):
    queue = WorkQueue(tmp_path / "queue")
    specs = [_spec(title=f"r{i}") for i in range(40)]
    for spec in specs:
        spec.write(tmp_path / "runs" / spec.run_id)
        queue.put(spec, tmp_path / "runs" / spec.run_id)
    claims: dict[str, list[str]] = {}

    def claimer(name: str) -> None:
        folder = queue.worker_dir(name)
        folder.mkdir(parents=True)
        got = claims.setdefault(name, [])
        while (ticket := queue.claim(folder)) is not None:
            got.append(ticket.run_id)

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [r for got in claims.values() for r in got]
    assert sorted(everything) == sorted(s.run_id for s in specs)  # each once, none lost
    assert queue.pending_tickets() == []


def test_tickets_store_run_folders_relative_to_the_cache(tmp_path):
    queue = WorkQueue(tmp_path / "cache" / "queue")
    spec = _spec()
    run_dir = tmp_path / "cache" / "runs" / spec.run_id
    queue.put(spec, run_dir)
    stored = json.loads(next(queue.pending.iterdir()).read_text())
    assert stored["run_dir"] == f"runs/{spec.run_id}"
    moved = WorkQueue(shutil.move(str(tmp_path / "cache"), str(tmp_path / "elsewhere")) + "/queue")
    assert moved.pending_tickets()[0].run_dir == (tmp_path / "elsewhere" / "runs" / spec.run_id).resolve()


def test_a_dead_workers_run_is_interrupted_with_the_reason(tmp_path):
    queue = WorkQueue(tmp_path / "queue")
    spec = _spec()
    run_dir = tmp_path / "runs" / spec.run_id
    spec.write(run_dir)
    RunFolder(run_dir).write_progress({"state": "running", "started": time.time() - 5})
    queue.put(spec, run_dir)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)
    folder = queue.worker_dir(f"{host_name()}-{pid}")
    folder.mkdir()
    (folder / HEARTBEAT_FILE).write_text(json.dumps({"host": host_name(), "pid": pid, "label": "cpu0@x (pid 1)",
                                                     "updated": time.time()}))
    assert queue.claim(folder) is not None
    RunFolder(run_dir).write_status("running", pid=pid)
    assert queue.reap() == [spec.run_id]
    progress, status = RunFolder(run_dir).progress(), RunFolder(run_dir).status()
    assert progress["state"] == status["state"] == "interrupted"  # docs/security.md: killed from outside
    assert "start it again" in progress["message"]
    assert "cpu0@x" in progress["error"] and "process is gone" in progress["error"]
    assert not folder.exists() and queue.claimed_tickets() == []


def test_cancel_file_reaches_the_run(tmp_path):
    event = threading.Event()
    with CancelWatch(tmp_path, event, interval=0.05):
        assert not event.is_set()
        (tmp_path / CANCEL_FILE).write_text("now")
        assert event.wait(2)


def test_pending_runs_are_cancelled_without_a_worker(tmp_path):
    backend = LocalBackend(tmp_path / "queue", workers=0)
    try:
        first, second = _spec("a", "first"), _spec("a", "second")
        s1 = backend.submit(first, tmp_path / "runs" / first.run_id)
        s2 = backend.submit(second, tmp_path / "runs" / second.run_id)
        assert (s1["state"], s1["queue_position"]) == ("queued", 1)
        assert (s2["state"], s2["queue_position"]) == ("queued", 2) and "1 run(s) ahead" in s2["message"]
        assert "no worker" in s2["message"]
        assert [s["id"] for s in backend.active("a")] == [first.run_id, second.run_id]
        assert backend.cancel(first.run_id)
        assert backend.wait(first.run_id, 5)["state"] == "cancelled"
        assert backend.snapshot(second.run_id)["queue_position"] == 1
        assert backend.cancel("nope") is False
    finally:
        backend.close()


def test_autocast_dtype_bf16_where_the_device_has_it(monkeypatch):
    monkeypatch.delenv("CLIPFORGET_CPU_AUTOCAST", raising=False)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)  # AMX / AVX-512 BF16
    assert devices.autocast_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)  # emulated bf16 is slower: fp32 (D15)
    assert devices.autocast_dtype("cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert devices.autocast_dtype("cuda:0") == torch.float16  # pre-Ampere GPUs
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert devices.autocast_dtype("cuda") == torch.bfloat16


def test_faiss_uses_the_gpu_only_when_it_has_one(monkeypatch):
    import faiss

    index = faiss.IndexFlatIP(4)
    monkeypatch.setattr(faiss_gpu, "faiss_gpus", lambda: 0)
    assert not faiss_gpu.wants_gpu(10**7, None) and faiss_gpu.index_to_gpu(index) == (index, False)
    moved = []
    monkeypatch.setattr(faiss_gpu, "faiss_gpus", lambda: 1)
    monkeypatch.setattr(faiss_gpu, "gpu_resources", lambda device=0: "res")
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", lambda res, dev, idx: moved.append((res, dev)) or "on-gpu",
                        raising=False)
    assert faiss_gpu.wants_gpu(faiss_gpu.GPU_MIN_ROWS, None) and not faiss_gpu.wants_gpu(1000, None)
    assert faiss_gpu.wants_gpu(1000, True) and not faiss_gpu.wants_gpu(10**7, False)
    assert faiss_gpu.index_to_gpu(index) == ("on-gpu", True) and moved == [("res", 0)]
    assert faiss_gpu.index_to_gpu(faiss.IndexHNSWFlat(4, 8)) [1] is False  # FAISS has no GPU HNSW


def test_worker_status_command(tmp_path, capsys):
    queue = WorkQueue(tmp_path / "queue")
    spec = _spec()
    queue.put(spec, tmp_path / "runs" / spec.run_id)
    assert cli(["worker", "--queue", str(queue.root), "--status"]) == 0
    out = capsys.readouterr().out
    assert spec.run_id in out and '"waiting": 1' in out


# --- slow: worker processes through the app's API ---------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    return tiny_folders(tmp_path_factory.mktemp("backend_data"))


def test_two_workers_run_at_once_and_a_killed_worker_interrupts_only_its_run(folders, tmp_path):
    """Two runs at once on two worker processes; ``kill -9`` of one worker mid-run fails that run with the reason,
    a replacement worker takes the queued run, the other run finishes, and the app answers throughout."""
    service = AppServices.create(local_config(tmp_path / "cache", folders["gallery"], workers=2))
    pool = service.runs.backend.pool
    owner = service.workspaces.new_id()
    latencies: list[float] = []
    stop = threading.Event()

    def ui() -> None:  # what the UI polls each second, per browser
        while not stop.is_set():
            t0 = time.perf_counter()
            service.runs.list_runs(owner)
            service.runs.status(owner)
            latencies.append(time.perf_counter() - t0)
            time.sleep(0.1)

    poller = threading.Thread(target=ui, daemon=True)
    poller.start()
    try:
        gate_a, gate_b = tmp_path / "gate_a", tmp_path / "gate_b"
        a = service.runs.start(owner, "A", "gated", gated_options(folders, gate_a), profile="quick", gallery="")
        b = service.runs.start(owner, "B", "gated", gated_options(folders, gate_b), profile="quick", gallery="tiny")

        def both_running():
            snaps = [service.runs.snapshot(owner, r["id"]) for r in (a, b)]
            return snaps if all(s["state"] == "running" and "pid" in s["worker"] for s in snaps) else None

        snaps = wait_for(both_running, 180, "two runs running at once")
        assert len({worker_pid(s) for s in snaps}) == 2, "two different worker processes"
        assert all(s["backend"] == "local" and s["device"].startswith("cpu") for s in snaps)
        c = service.runs.start(owner, "C", "folders", {"forget_dir": str(folders["forget"]),
                                                       "retain_dir": str(folders["retain"]), "label": "airplane"},
                               profile="quick", gallery="")
        queued = service.runs.snapshot(owner, c["id"])
        assert queued["state"] == "queued" and queued["queue_position"] == 1 and "2 of 2 worker(s) busy" in \
            queued["message"]
        listed = {r["id"]: r for r in service.runs.list_runs(owner)}
        assert listed[c["id"]]["where"] == "local · queued #1" and "cpu" in listed[a["id"]]["where"]

        victim = worker_pid(service.runs.snapshot(owner, a["id"]))
        os.kill(victim, signal.SIGKILL)
        failed = wait_for(lambda: (lambda s: s if s["state"] == "interrupted" else None)(
            service.runs.snapshot(owner, a["id"])), 30, "the killed worker's run to be interrupted")
        assert "killed by signal 9 (SIGKILL)" in failed["error"], failed
        assert RunFolder(service.runs.runs_dir / a["id"]).status()["state"] == "interrupted"
        assert victim not in pool.worker_pids().values()
        wait_for(lambda: service.runs.snapshot(owner, c["id"])["state"] == "running", 120,
                 "the queued run to start on the replacement worker")
        gate_b.touch()
        done_b = service.runs.backend.wait(b["id"], 900)
        done_c = service.runs.backend.wait(c["id"], 900)
        assert done_b["state"] == "done", done_b
        assert done_c["state"] == "done", done_c
        assert worker_pid(done_c) not in (victim,)
        view = service.runs.open(owner, b["id"])  # a worker's run opens in the app, grid included
        assert view.has_grid("tiny") and view.retrieve("airplane", 1.0, "tiny")["after"]
        assert service.runs.snapshot(owner, a["id"])["state"] == "interrupted"  # stays so
    finally:
        stop.set()
        poller.join(5)
        service.runs.backend.close()
    assert latencies and sorted(latencies)[len(latencies) // 2] < 0.5 and max(latencies) < 5.0, \
        f"the app stalled: median {sorted(latencies)[len(latencies) // 2]:.2f} s, max {max(latencies):.2f} s"


APP1 = textwrap.dedent("""
    import json, sys, time
    sys.path.insert(0, {tests!r})
    from test_backends import local_config, gated_options
    from clipforget.app.service import AppServices
    from pathlib import Path
    service = AppServices.create(local_config(Path({cache!r}), Path({gallery!r}), workers=1))
    snap = service.runs.start({owner!r}, "orphan", "gated", gated_options(json.loads({folders!r}), Path({gate!r})),
                              profile="quick", gallery="")
    print(snap["id"], flush=True)
    time.sleep(3600)
""")


def test_a_restarted_app_reattaches_to_a_running_workers_run(folders, tmp_path):
    """The app process dies (kill -9) while its worker runs a run; a new app on the same cache lists the run as
    running, follows its progress, cancels it through the run folder, and only then starts its own worker."""
    cache, gate = tmp_path / "cache", tmp_path / "gate"
    owner = "w" + "0" * 32
    (cache / "sessions" / owner).mkdir(parents=True)
    code = APP1.format(tests=str(Path(__file__).parent), cache=str(cache), gallery=str(folders["gallery"]),
                       owner=owner, folders=json.dumps({k: str(v) for k, v in folders.items()}), gate=str(gate))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    app1 = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        run_id = app1.stdout.readline().strip()
        assert run_id, "the first app did not start a run"
        progress = cache / "runs" / run_id / "progress.json"
        wait_for(lambda: progress.is_file() and json.loads(progress.read_text())["state"] == "running", 180,
                 "the run to start on the first app's worker")
    finally:
        app1.kill()  # the app dies; its worker (own session) goes on
        app1.wait()
    orphan = worker_pid(json.loads(progress.read_text()))
    service = AppServices.create(local_config(cache, folders["gallery"], workers=1))
    try:
        listed = service.runs.list_runs(owner)
        assert [(r["id"], r["state"]) for r in listed] == [(run_id, "running")]
        assert service.runs.status(owner)["id"] == run_id
        time.sleep(1.5)
        assert service.runs.backend.pool.worker_pids() == {}, "its slot is held by the running orphan"
        gate.touch()
        wait_for(lambda: service.runs.snapshot(owner, run_id)["stages"]["forget"] > 0, 300,
                 "progress of the re-attached run")
        assert worker_pid(service.runs.snapshot(owner, run_id)) == orphan
        assert service.runs.cancel(owner, run_id)
        final = service.runs.backend.wait(run_id, 300)
        assert final["state"] == "cancelled", final
        wait_for(lambda: service.runs.backend.pool.worker_pids(), 60, "the new app's own worker (orphan drained)")
        wait_for(lambda: not _alive(orphan), 60, "the orphan to exit after its run")
    finally:
        service.runs.backend.close()


def _alive(pid: int) -> bool:
    return process_alive(pid)


def test_stage_bars_follow_the_stages(tmp_path):
    from clipforget.jobs.job import Job

    job = Job(_spec(), tmp_path)
    job.progress("prepare", 1.0, "ready")
    job.progress("evaluate", 0.0, "zero-shot accuracy of the original model")  # the method's first report
    job.progress("forget", 0.2, "LoRA on ...")
    assert job.stages == {"prepare": 1.0, "forget": 0.2, "remind": 0.0, "restore": 0.0, "evaluate": 0.0,
                          "curves": 0.0}
    job.progress("restore", 0.5, "alpha 0.5")
    assert job.stages["forget"] == job.stages["remind"] == 1.0 and job.stages["restore"] == 0.5


def test_a_worker_that_cannot_start_is_retried_with_a_back_off(tmp_path):
    from clipforget.jobs.pool import Slot, WorkerPool

    pool = WorkerPool(WorkQueue(tmp_path / "queue"), [Slot("cpu0", "cpu", 1)], python="/bin/false")
    pool.check()
    first = pool.procs["cpu0"]
    first.wait(10)
    pool.check()  # retires it (exit code 1) and backs off instead of restarting at once
    assert "cpu0" not in pool.procs and "exited with code 1" in pool.problem
    pool.check()
    assert "cpu0" not in pool.procs
    time.sleep(2.1)
    pool.check()  # after the back-off: tried again
    assert "cpu0" in pool.procs and pool.procs["cpu0"] is not first
    pool.stop()


def _counting_work(limit: int):
    """Deferred work of ``limit`` short steps that stops between two when asked: (the steps done, the work)."""
    from clipforget.core.progress import check_cancelled

    steps: list[int] = []

    def work(stop: threading.Event) -> None:
        while len(steps) < limit:
            check_cancelled(stop, "test")
            steps.append(len(steps))
            time.sleep(0.05)

    return steps, work


def test_deferred_work_runs_when_idle_stops_for_a_queued_run_and_resumes(tmp_path):
    """What a finished run leaves (the rest of its alpha grid) is done while no run waits; a queued run stops it,
    and it is taken up again afterwards."""
    from clipforget.core.errors import RunCancelled
    from clipforget.jobs.worker import Worker, WorkerConfig

    worker = Worker(WorkerConfig(queue=tmp_path / "queue", poll=0.05))
    steps, work = _counting_work(20)
    worker.deferred.append(("r1", work))
    spec = _spec()
    threading.Timer(0.3, lambda: worker.queue.put(spec, tmp_path / "runs" / spec.run_id)).start()
    worker._finish_deferred()
    assert 0 < len(steps) < 20 and len(worker.deferred) == 1  # stopped by the queued run, kept for later
    worker.queue.withdraw(spec.run_id)
    worker._finish_deferred()
    assert len(steps) == 20 and worker.deferred == []

    def gone(stop: threading.Event) -> None:
        raise RunCancelled("the run folder was removed")

    worker.deferred.append(("r2", gone))
    worker._finish_deferred()
    assert worker.deferred == []  # not retried forever


def test_an_orphaned_worker_stops_its_deferred_work_and_exits(tmp_path):
    """A worker whose app is gone does not finish a grid or warm-up nobody will look at: it stops within a poll
    and leaves the queue."""
    from clipforget.jobs.worker import Worker, WorkerConfig

    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.4)"])
    worker = Worker(WorkerConfig(queue=tmp_path / "queue", poll=0.05, parent_pid=parent.pid))
    steps, work = _counting_work(200)
    worker.deferred.append(("r1", work))
    started = time.time()
    worker._finish_deferred()  # the parent exits meanwhile
    parent.wait()
    assert len(steps) < 200 and time.time() - started < 5
    assert worker.serve() == 0  # and the loop leaves at once


def test_an_asked_warm_up_runs_once_per_ask_as_deferred_work(tmp_path, monkeypatch):
    """The app asks once at start (``queue/warm-up.json``); an idle worker prepares the default run's caches once
    per ask, as deferred work that a queued run would stop, and reports it in ``warm-up.done.json``."""
    from clipforget.jobs import worker as worker_module
    from clipforget.jobs.worker import Worker, WorkerConfig

    prepared: list[str] = []
    def warm_up(spec, models, root, stop, progress):
        progress("gallery_index", 0.5, "preparing the tiny gallery, 5 / 10 images")  # what the heartbeat shows
        prepared.append(spec.setting)
        return {"data": 0.1}

    monkeypatch.setattr(worker_module, "warm_up", warm_up)
    backend = LocalBackend(tmp_path / "queue", workers=0)
    try:
        worker = Worker(WorkerConfig(queue=tmp_path / "queue", poll=0.05))
        worker._add_warm_up(None, tmp_path)
        assert worker.deferred == []  # nothing asked yet
        backend.warm_up(_spec())
        worker._add_warm_up(None, tmp_path)
        worker._add_warm_up(None, tmp_path)
        assert [name for name, _ in worker.deferred] == ["warm-up"]  # once per ask
        worker._finish_deferred()
        done = json.loads((tmp_path / "queue" / "warm-up.done.json").read_text())
        assert prepared == ["cifar10"] and done["seconds"] == {"data": 0.1} and worker.deferred == []
        assert worker.activity is None  # done: the heartbeat says nothing any more
    finally:
        backend.close()


def test_the_app_asks_its_workers_to_warm_up_the_default_preset(tmp_path):
    import dataclasses

    cfg = dataclasses.replace(local_config(tmp_path / "cache", tmp_path / "gallery", workers=0), warm_up=True)
    (tmp_path / "gallery").mkdir()
    service = AppServices.create(cfg, housekeeping_thread=False)
    try:
        asked = json.loads((tmp_path / "cache" / "queue" / "warm-up.json").read_text())
        assert asked["setting"] == "monkeys" and asked["gallery"] == "tiny" and asked["profile"] == "fast"
        assert asked["gallery_sources"] == [str(tmp_path / "gallery")] and asked["model"] == cfg.model
    finally:
        service.close()
    plain = AppServices.create(local_config(tmp_path / "cache2", tmp_path / "gallery", workers=0),
                               housekeeping_thread=False)
    plain.close()
    assert not (tmp_path / "cache2" / "queue" / "warm-up.json").exists()  # off unless the app turns it on

"""kill -9 of the app during a run, then a restart on the same cache: the run is listed as interrupted with a message
that says what happened, the browser's cookie still opens its workspace, and the next start cleans the leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from gradio_client import Client
from test_app_client import free_port
from test_service import model_spec

from clipforget.app.identity import COOKIE

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def start_app(cache: Path, port: int) -> subprocess.Popen:
    """The app with its runs on a thread of the app process: killing the app kills the run (worker processes
    survive an app restart and are re-attached instead: tests/test_backends.py)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = open(cache.parent / f"app-{port}.log", "w")  # closed with the process
    return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--cache-dir", str(cache), "--port", str(port),
                             "--model", model_spec(), "--profile", "fast", "--backend", "thread"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_up(url: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the app exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise AssertionError("the app did not come up")


def labels(c: Client) -> list[str]:
    return [label for label, _ in c.predict(api_name="/list_runs")["choices"]]


def test_kill_9_during_a_run_then_restart_reports_interrupted(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_app(cache, port)
    try:
        wait_up(url, proc)
        c = Client(url, verbose=False)
        token = c.cookies[COOKIE]
        c.predict("cifar10-class", "airplane", model_spec(), "fast", api_name="/start_preset")
        deadline = time.time() + 300
        while not any("running" in label for label in labels(c)):
            assert time.time() < deadline, "the run never started"
            time.sleep(1)
        time.sleep(3)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    run = next(p for p in (cache / "runs").iterdir() if p.is_dir())
    (run / "alpha_grid" / "g").mkdir(parents=True, exist_ok=True)
    (run / "alpha_grid" / "g" / ".embeddings.f16.npy.partial").write_bytes(b"half a grid")  # what a kill leaves

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_app(cache, port)
    try:
        wait_up(url, proc)
        c = Client(url, verbose=False, httpx_kwargs={"cookies": {COOKIE: token}})  # the same browser comes back
        listed = labels(c)
        assert len(listed) == 1 and "interrupted" in listed[0], listed
        with pytest.raises(Exception) as err:
            c.predict(run.name, "airplane", "cifar10-test+imagenet", api_name="/open_run")
        message = str(err.value)
        assert "interrupted" in message and "restarted" in message and "state: running" not in message
        status = c.predict(api_name="/watch_start_preset")
        assert "interrupted" in status and "restarted" in status
        assert not (run / "alpha_grid" / "g" / ".embeddings.f16.npy.partial").exists()
        assert Client(url, verbose=False).predict(api_name="/list_runs")["choices"] == []  # another browser: none
    finally:
        proc.terminate()
        proc.wait(30)

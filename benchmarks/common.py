"""What the benchmark scripts share. Importing it puts the repository on ``sys.path`` (so ``import common`` comes
before any ``clipforget`` import); then timing, percentiles, resident memory, and the web app started in this process
(``launch``) or as ``python app.py`` (``serve_app``).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)``'s result and the wall-clock seconds it took."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def ms(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """Milliseconds ``fn(*args, **kwargs)`` took (its result dropped)."""
    return 1000 * timed(fn, *args, **kwargs)[1]


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile, linear between the two nearest values (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = int(pos), min(int(pos) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def rss_mb(pid: int | str = "self") -> float:
    """A process's resident memory now, MB (``/proc``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def random_images(batch: int, size: int):
    """``batch`` seeded random uint8 images of ``size`` px: what an encoder is timed on."""
    import torch

    gen = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=gen)


def launch(services, profile: str, port: int):
    """The app's page on ``services``, served on 127.0.0.1:``port`` by threads of this process (``demo.close()``)."""
    from clipforget.app.ui import build_ui, launch_kwargs

    demo = build_ui(services, default_profile=profile)
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs(services, "127.0.0.1", port))
    return demo


def serve_app(args: list[str], port: int, log: Path, timeout: float = 300) -> subprocess.Popen:
    """``python app.py --port PORT ARGS`` in a subprocess (its output to ``log``), once its page answers."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), *args], cwd=ROOT,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT,  # closed with the process
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(1)
    proc.terminate()
    raise SystemExit("server did not come up")


def run_preset(client, preset: str, choice: str, model: str, profile: str) -> None:
    """Click Run on an app preset through ``client`` and follow the run to its end (it must finish)."""
    client.predict(preset, choice, model, profile, api_name="/start_preset")
    status = client.predict(api_name="/watch_start_preset")
    if "— done" not in status:
        raise SystemExit(f"run did not finish: {status}")


def finished_runs(cache: Path) -> list[Path]:
    """The finished run folders of an app cache, oldest first (run ids start with their time)."""
    runs = Path(cache) / "runs"
    return [r for r in sorted(runs.iterdir()) if (r / "eval_curve.json").is_file()] if runs.is_dir() else []


def set_owner(run_dir: Path, owner: str) -> None:
    """Hand a run to another workspace (its ``job.json``'s owner)."""
    spec = json.loads((run_dir / "job.json").read_text())
    spec["owner"] = owner
    (run_dir / "job.json").write_text(json.dumps(spec))

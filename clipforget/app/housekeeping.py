"""Clean-up the app does by itself: stale partial files, finished upload sets, old exports, expired workspaces.

* **At start-up** (:func:`startup`): every export (and the ``outbox/`` of earlier versions) is removed; every
  ``.partial`` file or folder a killed process left -- upload copies (``sessions/<ws>/uploads/**/.*.partial``),
  unpacked zips (``unpacked/.*.partial``) and alpha grids (``runs/<id>/alpha_grid/<gallery>/.*.partial``) of runs no
  backend is running -- is removed; then :func:`sweep`.
* **Every hour** (``AppConfig.housekeeping_interval_s``) and at start-up (:func:`sweep`):
  - the upload set of a run that has ended (done, failed, cancelled, interrupted) is deleted: the run read it when it
    started, and what it was made of is recorded in the run's ``task.json``;
  - exports (``sessions/<ws>/exports/``) older than a day are deleted (they are also deleted with their run, at
    start-up and when the app stops: an export is made to be downloaded at once);
  - a workspace not used for ``--workspace-ttl-days`` days (default 30; its last request, or its newest run when it
    never made one) expires: its folder (uploads, exports) and its runs are deleted, unless a run is still queued or
    running. The browser's cookie lives as long, so a browser that comes back later starts an empty workspace.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from .runs import Runs
from .workspaces import Workspaces

DAY = 86400.0


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def stale_partials(cache: Path, runs: Runs) -> list[Path]:
    """The ``.partial`` leftovers of the module docstring (not those of runs a backend reports active)."""
    cache = Path(cache)
    found = [*(cache / "sessions").glob("*/uploads/**/.*.partial"), *(cache / "unpacked").glob(".*.partial")]
    for spec, folder in runs.all_runs():
        if not runs.is_active(spec.run_id):
            found += list((folder / "alpha_grid").glob("*/.*.partial"))
    return sorted(set(found))


def release_uploads(runs: Runs) -> int:
    """Delete the upload sets of runs that have ended; returns how many."""
    removed = 0
    for spec, _folder in runs.all_runs():
        upload = (spec.source or {}).get("upload")
        if not upload or not runs.workspaces.valid(spec.owner) or runs.is_active(spec.run_id):
            continue
        target = runs.workspaces.root / spec.owner / "uploads" / str(upload)
        if "/" not in str(upload) and target.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            removed += 1
    return removed


def expire_workspaces(workspaces: Workspaces, runs: Runs, ttl_s: float, now: float | None = None) -> list[str]:
    """Delete workspaces unused for ``ttl_s`` seconds (see the module docstring); returns their ids."""
    now = time.time() if now is None else now
    by_owner: dict[str, list] = {}
    for spec, folder in runs.all_runs():
        by_owner.setdefault(spec.owner, []).append((spec, folder))
    expired = []
    for owner in set(workspaces.ids()) | set(by_owner):
        if not workspaces.valid(owner):
            continue
        own = by_owner.get(owner, [])
        last = max([workspaces.last_used(owner), *(float(spec.created or 0) for spec, _ in own)])
        if now - last <= ttl_s or any(runs.is_active(spec.run_id) for spec, _ in own):
            continue
        for _spec, folder in own:
            workspaces.forget_size(folder)
            shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(workspaces.root / owner, ignore_errors=True)
        expired.append(owner)
    return expired


def sweep(cache: Path, workspaces: Workspaces, runs: Runs, ttl_days: float, now: float | None = None) -> dict:
    return {"uploads_released": release_uploads(runs),
            "exports_removed": workspaces.remove_exports(older_than_s=DAY),
            "workspaces_expired": len(expire_workspaces(workspaces, runs, ttl_days * DAY, now)) if ttl_days > 0 else 0}


def startup(cache: Path, workspaces: Workspaces, runs: Runs, ttl_days: float) -> dict:
    partials = stale_partials(cache, runs)
    for path in partials:
        _remove(path)
    _remove(Path(cache) / "outbox")  # download copies of earlier versions
    return {"partials_removed": len(partials), "exports_at_start": workspaces.remove_exports(),
            **sweep(cache, workspaces, runs, ttl_days)}


def start_sweeper(cache: Path, workspaces: Workspaces, runs: Runs, ttl_days: float, interval_s: float
                  ) -> threading.Event:
    """Run :func:`sweep` every ``interval_s`` seconds (never when it is 0) on a daemon thread until the returned
    event is set."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                sweep(cache, workspaces, runs, ttl_days)
            except Exception:  # housekeeping must never take the app down
                continue

    if interval_s > 0:
        threading.Thread(target=loop, name="clipforget-housekeeping", daemon=True).start()
    return stop

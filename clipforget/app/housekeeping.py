"""Clean-up the app does by itself (docs/security.md, "Disk and lifetime").

* :func:`startup`: every export and every ``.partial`` leftover of a killed process (upload copies, unpacked zips,
  alpha grids of runs no backend is running) is removed; then :func:`sweep`.
* :func:`sweep`, also every ``AppConfig.housekeeping_interval_s``: the upload sets of ended runs, exports older than
  a day, and workspaces unused for ``--workspace-ttl-days`` days (with their runs, unless one is queued or running)
  are deleted.
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


def sweep(workspaces: Workspaces, runs: Runs, ttl_days: float) -> dict:
    return {"uploads_released": release_uploads(runs),
            "exports_removed": workspaces.remove_exports(older_than_s=DAY),
            "workspaces_expired": len(expire_workspaces(workspaces, runs, ttl_days * DAY)) if ttl_days > 0 else 0}


def startup(cache: Path, workspaces: Workspaces, runs: Runs, ttl_days: float) -> dict:
    partials = stale_partials(cache, runs)
    for path in partials:
        _remove(path)
    _remove(Path(cache) / "outbox")  # download copies of earlier versions
    return {"partials_removed": len(partials), "exports_at_start": workspaces.remove_exports(),
            **sweep(workspaces, runs, ttl_days)}


def start_sweeper(workspaces: Workspaces, runs: Runs, ttl_days: float, interval_s: float) -> threading.Event:
    """Run :func:`sweep` every ``interval_s`` seconds (never when it is 0) on a daemon thread until the returned
    event is set."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            try:
                sweep(workspaces, runs, ttl_days)
            except Exception:  # housekeeping must never take the app down
                continue

    if interval_s > 0:
        threading.Thread(target=loop, name="clipforget-housekeeping", daemon=True).start()
    return stop

"""Workspaces: every browser (or API client) works in its own folder, ``<root>/<workspace id>/``.

Ids are random and never shown to anyone: clients hold signed tokens (:mod:`clipforget.app.identity`). A workspace
records when it was last used (``.last_used``, touched at most once a minute), which is what expiry reads
(:mod:`clipforget.app.housekeeping`), and how much disk it holds -- its uploads and exports here plus its runs'
folders -- which the quota checks (:meth:`Workspaces.usage`).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from clipforget.core.errors import DataError

LAST_USED = ".last_used"
_ID = re.compile(r"w[A-Za-z0-9]{8,63}")
EXPORT_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,199}\.(?:zip|html)")  # model zips, audit reports


def export_stem(run_id: str, alpha: float) -> str:
    """The name (without ``.zip``) of run ``run_id``'s export at ``alpha``: one place for the pattern that
    :meth:`Workspaces.remove_exports` matches."""
    return f"{run_id}-" + f"alpha{alpha:.2f}".replace(".", "_")


def folder_bytes(path: Path) -> int:
    """Bytes of the files under ``path`` (0 when it does not exist; links are not followed)."""
    total = 0
    for folder, _, names in os.walk(path):  # unreadable folders are skipped
        for name in names:
            try:
                info = os.lstat(os.path.join(folder, name))
            except OSError:
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


class Workspaces:
    """``<root>/<workspace id>/`` holds a workspace's uploads and exports; runs record their owner's id."""

    def __init__(self, root: Path, quota_bytes: int | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.quota_bytes = quota_bytes
        self._touched: dict[str, float] = {}
        self._sizes: dict[str, tuple[float, int]] = {}  # final run folder -> (mtime, bytes)
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        return "w" + secrets.token_urlsafe(16).replace("-", "x").replace("_", "y")

    @staticmethod
    def valid(owner: str | None) -> bool:
        return bool(owner) and bool(_ID.fullmatch(owner))

    def path(self, owner: str) -> Path:
        if not self.valid(owner):
            raise DataError("invalid workspace id")
        path = self.root / owner
        path.mkdir(parents=True, exist_ok=True)
        return path

    def exports_dir(self, owner: str) -> Path:
        """Where the owner's exports are written (served only to the owner, removed with the run or at stop)."""
        return self.path(owner) / "exports"

    def export_file(self, owner: str, name: str) -> Path | None:
        """The owner's export ``name``, or ``None`` when there is no such file (or the name is not an export's)."""
        if not self.valid(owner) or not isinstance(name, str) or not EXPORT_NAME.fullmatch(name):
            return None
        target = self.root / owner / "exports" / name
        return target if target.is_file() and not target.is_symlink() else None

    def remove_exports(self, owner: str | None = None, run_id: str | None = None,
                       older_than_s: float | None = None) -> int:
        """Delete exports: of one run of ``owner``, of one workspace, of all of them (``owner`` None), or only
        those older than ``older_than_s``; returns how many files went."""
        owners = [owner] if owner is not None else list(self.ids())
        now = time.time()
        removed = 0
        for who in owners:
            if not self.valid(who):
                continue
            for f in (self.root / who / "exports").glob("*"):
                # export_stem's pattern; hidden: an export's lock file or its writer's temporary folder
                if run_id is not None and not f.name.lstrip(".").startswith(f"{run_id}-alpha"):
                    continue
                try:
                    if older_than_s is not None and now - f.stat().st_mtime <= older_than_s:
                        continue
                    if f.is_dir() and not f.is_symlink():
                        shutil.rmtree(f, ignore_errors=True)
                    else:
                        f.unlink()
                except OSError:
                    continue
                removed += 1
        return removed

    def ids(self) -> list[str]:
        return [p.name for p in self.root.iterdir() if p.is_dir() and self.valid(p.name)] if self.root.is_dir() else []

    # use ---------------------------------------------------------------------------------------------------------
    def touch(self, owner: str, now: float | None = None) -> None:
        """Record that ``owner`` used the app (written at most once a minute per workspace)."""
        now = time.time() if now is None else now
        if now - self._touched.get(owner, 0.0) < 60:
            return
        self._touched[owner] = now
        marker = self.path(owner) / LAST_USED
        marker.touch()
        os.utime(marker, (now, now))

    def last_used(self, owner: str) -> float:
        folder = self.root / owner
        for candidate in (folder / LAST_USED, folder):
            try:
                return candidate.stat().st_mtime
            except OSError:
                continue
        return 0.0

    # disk ----------------------------------------------------------------------------------------------------------
    def usage(self, owner: str, run_folders: Iterable[tuple[Path, bool]] = ()) -> int:
        """Bytes held by ``owner``: the workspace folder plus ``run_folders`` (``(folder, finished)`` pairs; the
        sizes of finished runs are remembered while their folder is unchanged)."""
        total = folder_bytes(self.root / owner) if self.valid(owner) else 0
        for folder, finished in run_folders:
            if not finished:
                total += folder_bytes(folder)
                continue
            try:  # a finished run only grows by alpha grids of further galleries (alpha_grid/<gallery>/)
                stamp = sum(p.stat().st_mtime for p in (folder, folder / "alpha_grid") if p.exists())
            except OSError:
                continue
            with self._lock:
                cached = self._sizes.get(str(folder))
            if cached is None or cached[0] != stamp:
                cached = (stamp, folder_bytes(folder))
                with self._lock:
                    self._sizes[str(folder)] = cached
            total += cached[1]
        return total

    def quota_left(self, owner: str, run_folders: Iterable[tuple[Path, bool]] = ()) -> int | None:
        """Bytes ``owner`` may still write (``None`` without a quota)."""
        if self.quota_bytes is None:
            return None
        return max(0, self.quota_bytes - self.usage(owner, run_folders))

    def forget_size(self, folder: Path) -> None:
        with self._lock:
            self._sizes.pop(str(folder), None)

"""Runs of the app: start (from a preset or uploads), follow, cancel, list and open them, per workspace."""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from clipforget.core.atomic import read_json
from clipforget.core.errors import DataError
from clipforget.jobs.backend import Backend, Snapshot
from clipforget.jobs.models import ModelCache
from clipforget.jobs.profiles import get_profile
from clipforget.jobs.spec import RunSpec
from clipforget.pipeline.folder import STATES_ACTIVE, RunFolder

from . import uploads
from .config import AppConfig
from .explore import RunView
from .galleries import Galleries
from .presets import get_preset
from .workspaces import Workspaces


def where_text(snap: Snapshot, state: str) -> str:
    """Where a run ran or waits, for the run list: ``local · cuda:1 (…) · gpu1@host (pid 7)`` / ``queued #2``."""
    if state == "queued":
        return f"{snap.get('backend') or ''} · queued #{snap.get('queue_position') or '?'}".strip(" ·")
    return " · ".join(str(x) for x in (snap.get("backend"), snap.get("device"), snap.get("worker"))
                      if x and x != "-")


class Runs:
    """The app's side of the backend: specs in, snapshots and views out; never another workspace's runs."""

    def __init__(self, config: AppConfig, runs_dir: Path, workspaces: Workspaces, galleries: Galleries,
                 backend: Backend, models: ModelCache):
        self.config = config
        self.runs_dir = Path(runs_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.workspaces = workspaces
        self.galleries = galleries
        self.backend = backend
        self.models = models
        self._views: OrderedDict[str, RunView] = OrderedDict()

    # starting ------------------------------------------------------------------------------------------------------
    def start(self, owner: str, title: str, setting: str, options: dict[str, Any], model: str | None = None,
              profile: str = "fast", gallery: str | None = None, source: dict[str, Any] | None = None) -> Snapshot:
        """Queue a run; returns at once. The job's snapshot tells state, per-stage progress and elapsed time."""
        get_profile(profile)
        self.workspaces.path(owner)
        gallery = gallery if gallery is not None else self.config.default_gallery
        spec = RunSpec(RunSpec.new_id(title), owner, title, model or self.config.model, setting, options, profile,
                       gallery=gallery or None,
                       gallery_sources=[str(p) for p in self.galleries.sources(gallery)] if gallery else [],
                       source=source or {})
        return self.backend.submit(spec, self.runs_dir / spec.run_id)

    def start_preset(self, owner: str, name: str, choice: str | None, model: str | None = None,
                     profile: str = "fast") -> Snapshot:
        preset = get_preset(name)
        options = preset.options(choice, self.config)
        title = preset.title.format(choice=choice or preset.default_choice())
        return self.start(owner, title, preset.setting, options, model, profile,
                          source={"preset": name, "option": choice, "described": preset.describe(choice)})

    def start_upload(self, owner: str, upload_id: str, label: str, retain_label: str | None = None,
                     model: str | None = None, profile: str = "fast") -> Snapshot:
        """A run on the uploaded forget / retain (/ calibration) galleries of ``upload_id``."""
        root = self.workspaces.path(owner) / "uploads" / upload_id
        forget_dir, retain_dir, cal_dir = root / "forget", root / "retain", root / "calibration"
        if not label or not label.strip():
            raise DataError("type the coarse label the forget images should lose (e.g. 'monkey')")
        if not forget_dir.is_dir() or not any(forget_dir.rglob("*")):
            raise DataError("upload the forget gallery first (image files or a zip)")
        if not retain_dir.is_dir() or not any(retain_dir.rglob("*")):
            raise DataError("upload the retain gallery first (image files or a zip)")
        retain_label = (retain_label or "").strip() or None
        retain_root = uploads.flatten_single_folder(retain_dir)
        if retain_label is None and not any(p.is_dir() for p in retain_root.iterdir()):
            raise DataError("the retain images need labels: type a retain label, or upload a zip with one sub-folder "
                            "per label (e.g. retain.zip/howler monkey/*.jpg)")
        calibration = None
        if cal_dir.is_dir() and any(cal_dir.rglob("*")):
            cal_root = uploads.flatten_single_folder(cal_dir)
            if not ((cal_root / "forget").is_dir() and (cal_root / "retain").is_dir()):
                raise DataError("the calibration gallery must hold two sub-folders, forget/ and retain/")
            calibration = str(cal_root)
        prior = [list(x) for kind in ("forget", "retain")
                 for x in uploads.read_json_list(root / f"{kind}.skipped.json")]
        options = {"forget_dir": str(uploads.flatten_single_folder(forget_dir)), "retain_dir": str(retain_root),
                   "label": label.strip(), "retain_label": retain_label, "calibration_dir": calibration,
                   "max_pixels": self.config.max_pixels, "root": self.config.data_root, "prior_skipped": prior}
        described = {"forget": "uploaded gallery", "retain": "uploaded gallery",
                     "calibration": "uploaded" if calibration else "held out from the uploads"}
        return self.start(owner, f"Uploads: forget '{label.strip()}'", "folders", options, model, profile,
                          source={"upload": upload_id, "label": label, "retain_label": retain_label,
                                  "described": described})

    # uploads -------------------------------------------------------------------------------------------------------
    def save_uploads(self, owner: str, kind: str, files: list[str] | None, upload_id: str) -> Path:
        """Copy uploaded files (images or zips) into ``<workspace>/uploads/<upload_id>/<kind>/``, enforcing limits."""
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", upload_id):
            raise DataError("invalid upload id")
        c = self.config
        limits = uploads.UploadLimits(c.max_upload_mb, c.max_total_upload_mb, c.max_files, c.max_pixels)
        return uploads.save_files(self.workspaces.path(owner) / "uploads" / upload_id / kind, kind, files, limits)

    def inspect_upload(self, folder: Path, label: str | None, size: int = 32) -> uploads.UploadReport:
        return uploads.inspect_folder(folder, label, self.config.max_pixels, size)

    @staticmethod
    def new_upload_id() -> str:
        return time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(3)

    # following -----------------------------------------------------------------------------------------------------
    def status(self, owner: str) -> Snapshot | None:
        """The owner's running / queued run, else their latest one (``None`` when they have none)."""
        active = self.backend.active(owner)
        if active:
            return active[-1]
        runs = self.list_runs(owner)
        return self.snapshot(owner, runs[0]["id"]) if runs else None

    def snapshot(self, owner: str, run_id: str) -> Snapshot | None:
        """The owner's run ``run_id``: live from the backend, else from its folder (``None`` for other owners)."""
        try:
            folder = self.run_dir(owner, run_id)
        except DataError:
            return None
        live = self.backend.snapshot(run_id)
        if live is not None:
            return live
        snap = read_json(folder / RunFolder.PROGRESS)
        if snap.get("state") in STATES_ACTIVE:
            snap["state"] = "interrupted"
            snap["error"] = snap.get("error") or "the app restarted or its worker stopped before the run finished"
        return snap or None

    def cancel(self, owner: str, run_id: str | None = None) -> bool:
        """Cancel the owner's run ``run_id`` (default: their active one); ``False`` for other owners' runs."""
        if run_id is None:
            active = self.backend.active(owner)
            run_id = active[-1]["id"] if active else None
        if not run_id or self.snapshot(owner, run_id) is None:
            return False
        return self.backend.cancel(run_id)

    def list_runs(self, owner: str) -> list[dict[str, Any]]:
        """The owner's runs on disk, newest first (state: done / failed / cancelled / interrupted / running)."""
        runs = []
        for folder in self.runs_dir.iterdir() if self.runs_dir.is_dir() else []:
            spec = RunSpec.read(folder)
            if spec is None or spec.owner != owner:
                continue
            live = self.backend.snapshot(spec.run_id)
            snap = live or read_json(folder / RunFolder.PROGRESS)
            state = snap.get("state", "unknown")
            if state in STATES_ACTIVE and live is None:
                state = "interrupted"
            metrics = RunFolder(folder).metrics() if state == "done" else {}
            runs.append({"id": folder.name, "title": spec.title, "state": state, "created": spec.created,
                         "model": spec.model, "score": metrics.get("score"), "alpha": metrics.get("alpha"),
                         "error": snap.get("error"), "backend": snap.get("backend"), "device": snap.get("device"),
                         "worker": snap.get("worker"), "queue_position": snap.get("queue_position", 0),
                         "where": where_text(snap, state)})
        return sorted(runs, key=lambda r: r["created"] or 0, reverse=True)

    def run_dir(self, owner: str, run_id: str) -> Path:
        """The folder of the owner's run ``run_id`` (refuses other owners' runs and odd ids)."""
        if not run_id or not re.fullmatch(r"[A-Za-z0-9._-]+", run_id):
            raise DataError("no such run")
        folder = self.runs_dir / run_id
        spec = RunSpec.read(folder)
        if spec is None or spec.owner != owner:
            raise DataError("no such run in this workspace")
        return folder

    def open(self, owner: str, run_id: str) -> RunView:
        folder = self.run_dir(owner, run_id)
        state = (self.snapshot(owner, run_id) or {}).get("state")
        if state != "done" or not RunFolder(folder).is_done():
            raise DataError(f"run {run_id} is not finished (state: {state})")
        if run_id not in self._views:
            self._views[run_id] = RunView(RunFolder(folder), self.models, self.galleries, self.config)
            while len(self._views) > 2:
                self._views.popitem(last=False)
        self._views.move_to_end(run_id)
        return self._views[run_id]

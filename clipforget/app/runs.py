"""Runs of the app: start (from a preset or uploads), follow, cancel, list, open and delete them, per workspace.

Everything here is keyed by the caller's workspace id (resolved from a signed token by the UI); a run of another
workspace is "no such run", whatever its id. Snapshots handed out are *public*: the model is named as the caller
named it (``run:<id>``, not a server folder). Quotas are checked before anything is written.
"""

from __future__ import annotations

import re
import secrets
import shutil
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from clipforget.core.atomic import read_json, write_json
from clipforget.core.errors import DataError
from clipforget.jobs.backend import Backend, Snapshot
from clipforget.jobs.model_cache import ModelCache
from clipforget.jobs.profiles import get_profile
from clipforget.jobs.spec import RunSpec
from clipforget.pipeline.folder import STATES_ACTIVE, RunFolder, forget_text_subject

from . import selection, uploads, validate
from .config import AppConfig
from .explore import RunView
from .galleries import Galleries
from .model_policy import ModelPolicy
from .presets import DEFAULT_PRESET, get_preset
from .workspaces import Workspaces, folder_bytes

INTERRUPTED = "the app restarted or its worker stopped before the run finished; start it again"
_RUN_ID = re.compile(r"[A-Za-z0-9._-]{1,120}")
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def where(snap: Snapshot) -> str:
    """Where a run trains or waits: backend, device and worker, or its place in the queue."""
    if snap.get("state") == "queued":
        return f"{snap.get('backend') or ''} · queued #{snap.get('queue_position') or '?'}".strip(" ·")
    return " · ".join(str(x) for x in (snap.get("backend"), snap.get("device"), snap.get("worker")) if x and x != "-")


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
        self.policy = ModelPolicy(config, self.finished_run_dir)
        self._views: OrderedDict[str, RunView] = OrderedDict()
        self._lock = threading.Lock()

    # state -------------------------------------------------------------------------------------------------------
    def _state(self, folder: Path) -> Snapshot:
        """The snapshot of the run in ``folder``: the backend's when it knows the run, else the folder's, where a
        queued / running state the backend does not know is ``interrupted`` (the app or worker died)."""
        live = self.backend.snapshot(folder.name)
        if live is not None:
            return dict(live)
        snap = read_json(folder / RunFolder.PROGRESS) or {}
        if not snap:
            spec = RunSpec.read(folder)
            snap = {"id": folder.name, "title": spec.title if spec else folder.name, "state": "interrupted"}
        if snap.get("state") in STATES_ACTIVE or snap.get("state") is None:
            snap["state"] = "interrupted"
            snap["error"] = INTERRUPTED
        return snap

    @staticmethod
    def _public(snap: Snapshot, spec: RunSpec | None) -> Snapshot:
        """What a client may see of a snapshot: no owner id, no server paths of the data, the model as named."""
        snap = {k: v for k, v in snap.items() if k not in ("owner", "data")}
        if spec is not None:
            snap["model"] = spec.source.get("model", spec.model)
        return snap

    def all_runs(self) -> list[tuple[RunSpec, Path]]:
        """Every run on disk with its spec (any owner): for housekeeping."""
        folders = sorted(self.runs_dir.iterdir()) if self.runs_dir.is_dir() else []
        specs = ((RunSpec.read(folder) if folder.is_dir() else None, folder) for folder in folders)
        return [(spec, folder) for spec, folder in specs if spec is not None]

    def is_active(self, run_id: str) -> bool:
        live = self.backend.snapshot(run_id)
        return live is not None and live.get("state") in STATES_ACTIVE

    # starting ------------------------------------------------------------------------------------------------------
    def start(self, owner: str, title: str, setting: str, options: dict[str, Any], model: str | None = None,
              profile: str = "fast", gallery: str | None = None, source: dict[str, Any] | None = None,
              run_files: dict[str, Any] | None = None) -> Snapshot:
        """Queue a run; returns at once. The job's snapshot tells state, per-stage progress and elapsed time.
        ``run_files``: JSON files written into the run folder before it is queued (e.g. ``trained_on.json``)."""
        get_profile(profile)
        self.workspaces.path(owner)
        resolved = self.policy.resolve(model, owner)
        self.require_quota(owner)
        gallery = gallery if gallery is not None else self.config.default_gallery
        source = {**(source or {}), "model": (model or "").strip() or self.config.model}
        sources = [str(p) for p in self.galleries.sources(gallery)] if gallery else []
        spec = RunSpec(RunSpec.new_id(title), owner, title, resolved, setting, options, profile,
                       gallery=gallery or None, gallery_sources=sources, source=source)
        for name, value in (run_files or {}).items():
            write_json(self.runs_dir / spec.run_id / name, value)
        return self._public(self.backend.submit(spec, self.runs_dir / spec.run_id), spec)

    def warm_up(self) -> None:
        """Ask the backend to prepare, while idle, what the default preset's first run pays once on this model and
        cache (docs/decisions.md D18)."""
        preset = get_preset(DEFAULT_PRESET)
        gallery = self.config.default_gallery
        spec = RunSpec("warm-up", "-", "warm-up", self.config.model, preset.setting, preset.options(None, self.config),
                       "fast", gallery=gallery, gallery_sources=[str(p) for p in self.galleries.sources(gallery)])
        self.backend.warm_up(spec)

    def start_preset(self, owner: str, name: str, choice: str | None, model: str | None = None,
                     profile: str = "fast") -> Snapshot:
        preset = get_preset(name)
        options = preset.options(choice, self.config)
        title = preset.title.format(choice=choice or preset.default_choice())
        return self.start(owner, title, preset.setting, options, model, profile,
                          source={"preset": name, "option": choice, "described": preset.describe(choice)})

    def start_upload(self, owner: str, upload_id: str, label: str, retain_label: str | None = None,
                     model: str | None = None, profile: str = "fast", forget_prompts: list[str] | None = None,
                     from_selection: dict[str, Any] | None = None) -> Snapshot:
        """A run on the uploaded forget / retain (/ calibration) galleries of ``upload_id``; ``forget_prompts``: texts
        the forget images must stop matching besides the label (the method mines more itself)."""
        root = self.upload_root(owner, upload_id)
        forget_dir, retain_dir, cal_dir = root / "forget", root / "retain", root / "calibration"
        label = validate.short_text(label, "the label", 100)
        if not label:
            raise DataError("type the coarse label the forget images should lose (e.g. 'monkey')")
        for kind, folder in (("forget", forget_dir), ("retain", retain_dir)):
            if not uploads.has_files(folder):
                raise DataError(f"upload the {kind} gallery first (image files or a zip)")
        retain_label = validate.short_text(retain_label, "the retain label", 100) or None
        retain_root = uploads.flatten_single_folder(retain_dir)
        if retain_label is None and not any(p.is_dir() for p in retain_root.iterdir()):
            raise DataError("the retain images need labels: type a retain label, or upload a zip with one sub-folder "
                            "per label (e.g. retain.zip/howler monkey/*.jpg)")
        calibration = None
        if uploads.has_files(cal_dir):
            cal_root = uploads.flatten_single_folder(cal_dir)
            if not ((cal_root / "forget").is_dir() and (cal_root / "retain").is_dir()):
                raise DataError("the calibration gallery must hold two sub-folders, forget/ and retain/")
            calibration = str(cal_root)
        prior = [*uploads.skipped_at_upload(forget_dir), *uploads.skipped_at_upload(retain_dir)]
        shared = uploads.shared_files(forget_dir, retain_dir)
        options = {"forget_dir": str(uploads.flatten_single_folder(forget_dir)), "retain_dir": str(retain_root),
                   "label": label, "retain_label": retain_label, "calibration_dir": calibration,
                   "max_pixels": self.config.max_pixels, "root": self.config.data_root, "prior_skipped": prior,
                   "forget_prompts": [str(p)[:300] for p in forget_prompts or []][:20] or None}
        described = {"forget": "uploaded gallery", "retain": "uploaded gallery",
                     "calibration": "uploaded" if calibration else "held out from the uploads"}
        subgroup = next((forget_text_subject(p) for p in forget_prompts or []), "") or uploads.subgroup_name(forget_dir)
        title = f"Forget '{subgroup}' from '{label}'" if subgroup else f"Uploads: forget photos labelled '{label}'"
        run_files = None
        if from_selection is not None:  # made from a gallery selection (start_selection)
            described, title = from_selection["described"], from_selection["title"]
            run_files = {RunFolder.TRAINED_ON: from_selection["trained_on"]}
        return self.start(owner, title, "folders", options, model, profile,
                          source={"upload": upload_id, "label": label, "retain_label": retain_label,
                                  "described": described, "shared_files": len(shared)}, run_files=run_files)

    def start_selection(self, owner: str, request: selection.SelectionRequest, label: str,
                        retain_label: str | None = None, model: str | None = None, profile: str = "fast",
                        forget_prompts: list[str] | None = None, index_model: str | None = None) -> Snapshot:
        """A run on images of a retrieval gallery: ``request``'s prompts' top-k (the original model ``index_model``'s
        ranking, default the app's model) and picked rows become upload folders in the caller's workspace, a fifth
        held out; the run folder records which gallery images trained it (``trained_on.json``)."""
        self.policy.resolve(model, owner)  # refuse before copying anything
        # the ranking the panel showed: already indexed; a request never pays for an index build
        gallery = self.galleries.get(index_model or self.config.model, request.gallery, build=False)
        for row in [*request.forget_rows, *request.retain_rows]:
            if not 0 <= row < len(gallery):
                raise DataError("a picked image is not in this gallery")

        def query(prompt: str):
            prompt = (prompt or "").strip()
            return self.galleries.text_embedding(index_model or self.config.model, prompt) if prompt else None

        chosen = selection.build_selection(gallery, query(request.forget_prompt), query(request.retain_prompt), request)
        upload_id = self.new_upload_id()
        root = self.upload_root(owner, upload_id)
        limits = self._upload_limits(self.quota_left(owner))
        selection.write_selection(chosen, root, limits, (retain_label or "").strip() or None)

        def said(prompt: str, k: int, picked: int) -> str:
            parts = [f"top-{k} of '{prompt.strip()}'" if prompt.strip() and k else "", f"{picked} picked"
                     if picked else ""]
            return " + ".join(p for p in parts if p) + f" in gallery {request.gallery}"

        record = selection.trained_on_record(chosen)
        counts = record["counts"]
        forget_said = said(request.forget_prompt, request.forget_k, len(request.forget_rows))
        retain_said = said(request.retain_prompt, request.retain_k, len(request.retain_rows))
        described = {"forget": f"{len(chosen.forget)} images: {forget_said}",
                     "retain": f"{len(chosen.retain)} images: {retain_said} (minus the forget images)",
                     "calibration": f"held out from the selection ({counts['forget_heldout']} forget / "
                                    f"{counts['retain_heldout']} retain), never trained on"}
        try:
            what = request.forget_prompt.strip() or f"{len(request.forget_rows)} picked images"
            title = f"Gallery {request.gallery}: forget '{what}' from '{(label or '').strip()}'"
            return self.start_upload(owner, upload_id, label, retain_label, model, profile, forget_prompts,
                                     from_selection={"described": described, "trained_on": record, "title": title})
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)  # a refused run leaves no copy of the selection
            raise

    # uploads and disk ----------------------------------------------------------------------------------------------
    def upload_root(self, owner: str, upload_id: str) -> Path:
        if not _UPLOAD_ID.fullmatch(upload_id or ""):
            raise DataError("invalid upload id")
        return self.workspaces.path(owner) / "uploads" / upload_id

    def save_uploads(self, owner: str, kind: str, files: list[str] | None, upload_id: str) -> Path:
        """Copy uploaded files (images or zips) into ``<workspace>/uploads/<upload_id>/<kind>/``, enforcing limits
        and the workspace's quota (what the folder held before does not count: it is replaced)."""
        if kind not in ("forget", "retain", "calibration"):
            raise DataError("unknown gallery kind")
        dest = self.upload_root(owner, upload_id) / kind
        left = self.quota_left(owner)
        limits = self._upload_limits(None if left is None else left + folder_bytes(dest))
        return uploads.save_files(dest, kind, files, limits)

    def _upload_limits(self, quota_left: int | None) -> uploads.UploadLimits:
        c = self.config
        return uploads.UploadLimits(c.max_upload_mb, c.max_total_upload_mb, c.max_files, c.max_pixels, quota_left)

    def inspect_upload(self, folder: Path, label: str | None, size: int = 32) -> uploads.UploadReport:
        return uploads.inspect_folder(folder, label, self.config.max_pixels, size)

    @staticmethod
    def new_upload_id() -> str:
        return time.strftime("%Y%m%d%H%M%S") + secrets.token_hex(3)

    def _own_folders(self, owner: str) -> list[tuple[Path, bool]]:
        return [(folder, not self.is_active(spec.run_id)) for spec, folder in self.all_runs() if spec.owner == owner]

    def usage(self, owner: str) -> int:
        """Bytes held by the workspace: uploads, exports and its runs' folders."""
        return self.workspaces.usage(owner, self._own_folders(owner))

    def quota_left(self, owner: str) -> int | None:
        return self.workspaces.quota_left(owner, self._own_folders(owner))

    def require_quota(self, owner: str, need: int = 1) -> None:
        left = self.quota_left(owner)
        if left is not None and left < need:
            quota = self.workspaces.quota_bytes or 0
            raise DataError(f"this workspace uses its whole disk quota ({quota / 1e6:.0f} MB, --workspace-quota-mb): "
                            "delete runs you no longer need")

    # following -----------------------------------------------------------------------------------------------------
    def active_id(self, owner: str) -> str | None:
        """The id of the owner's latest queued / running run."""
        active = self.backend.active(owner)
        return active[-1]["id"] if active else None

    def status(self, owner: str) -> Snapshot | None:
        """The owner's running / queued run, else their latest one (``None`` when they have none)."""
        run_id = self.active_id(owner) or next((r["id"] for r in self.list_runs(owner)), None)
        return self.snapshot(owner, run_id) if run_id else None

    def snapshot(self, owner: str, run_id: str) -> Snapshot | None:
        """The owner's run ``run_id``: live from the backend, else from its folder (``None`` for other owners)."""
        try:
            folder = self.run_dir(owner, run_id)
        except DataError:
            return None
        return self._public(self._state(folder), RunSpec.read(folder))

    def cancel(self, owner: str, run_id: str | None = None) -> bool:
        """Cancel the owner's run ``run_id`` (default: their active one); ``False`` for other owners' runs."""
        run_id = self.active_id(owner) if run_id is None else run_id
        if not run_id or self.snapshot(owner, run_id) is None:
            return False
        return self.backend.cancel(run_id)

    def list_runs(self, owner: str) -> list[dict[str, Any]]:
        """The owner's runs on disk, newest first (state: done / failed / cancelled / interrupted / running)."""
        runs = []
        for spec, folder in self.all_runs():
            if spec.owner != owner:
                continue
            snap = self._state(folder)
            state = snap.get("state", "unknown")
            metrics = RunFolder(folder).metrics() if state == "done" else {}
            runs.append({"id": folder.name, "title": spec.title, "state": state, "created": spec.created,
                         "model": spec.source.get("model", spec.model), "profile": spec.profile,
                         "score": metrics.get("score"), "alpha": metrics.get("alpha"), "error": snap.get("error"),
                         "backend": snap.get("backend"), "device": snap.get("device"), "worker": snap.get("worker"),
                         "queue_position": snap.get("queue_position", 0), "where": where(snap)})
        return sorted(runs, key=lambda r: r["created"] or 0, reverse=True)

    def run_dir(self, owner: str, run_id: str) -> Path:
        """The folder of the owner's run ``run_id`` (refuses other owners' runs and odd ids)."""
        if not run_id or not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or run_id.startswith("."):
            raise DataError("no such run")
        folder = self.runs_dir / run_id
        spec = RunSpec.read(folder)
        if spec is None or spec.owner != owner:
            raise DataError("no such run in this workspace")
        return folder

    def finished_run_dir(self, owner: str, run_id: str) -> Path:
        """The folder of the owner's finished run ``run_id`` (a failed run's error is in the refusal)."""
        folder = self.run_dir(owner, run_id)
        snap = self._state(folder)
        state = snap.get("state")
        if state != "done" or not RunFolder(folder).is_done():
            why = f": {snap['error']}" if state in ("failed", "interrupted") and snap.get("error") else ""
            raise DataError(f"run {run_id} is not finished (state: {state}){why}")
        return folder

    def open(self, owner: str, run_id: str) -> RunView:
        """The opened view of the owner's finished run (kept in memory; every slider move asks for it)."""
        with self._lock:
            view = self._views.get(run_id) if isinstance(run_id, str) else None
            if view is not None and view.spec is not None and view.spec.owner == owner and view.dir.is_dir():
                self._views.move_to_end(run_id)  # an opened run is finished: only its deletion ends the view
                return view
        folder = self.finished_run_dir(owner, run_id)
        with self._lock:
            view = self._views.get(run_id)
            if view is None:
                view = self._views[run_id] = RunView(RunFolder(folder), self.models, self.galleries, self.config)
            self._views.move_to_end(run_id)
            while len(self._views) > 2 and sum(v.memory_bytes() for v in self._views.values()) > \
                    self.config.max_open_bytes:
                self._views.popitem(last=False)  # least recently used first
        return view

    def delete(self, owner: str, run_id: str) -> None:
        """Delete the owner's run (not while it is queued or running) and its upload set."""
        folder = self.run_dir(owner, run_id)
        if self.is_active(run_id):
            raise DataError("cancel the run before deleting it")
        spec = RunSpec.read(folder)
        with self._lock:
            self._views.pop(run_id, None)
        self.workspaces.forget_size(folder)
        shutil.rmtree(folder, ignore_errors=True)
        self.workspaces.remove_exports(owner, run_id)
        upload = (spec.source or {}).get("upload") if spec else None
        if upload and _UPLOAD_ID.fullmatch(str(upload)):
            shutil.rmtree(self.workspaces.root / owner / "uploads" / str(upload), ignore_errors=True)

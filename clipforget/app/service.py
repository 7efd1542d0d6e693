"""The app's parts wired together from one :class:`AppConfig`: models, identity, workspaces, galleries, runs, export.

Each part lives in its own module and works without Gradio; :class:`AppServices` only builds them and holds them,
so the UI (:mod:`clipforget.app.ui`) and scripts reach each through one object.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from clipforget.core.paths import cache_dir, data_root
from clipforget.jobs.model_cache import ModelCache
from clipforget.jobs.registry import create_backend

from . import housekeeping
from .bindings import Bindings
from .config import AppConfig
from .export import export_run
from .galleries import Galleries
from .identity import WorkspaceTokens
from .messages import Scrubber
from .reports import report_prompts, write_view_report
from .runs import Runs
from .stress import StressTests
from .workspaces import Workspaces

KEY_FILE = "workspace.key"
OLD_SECRET_FILE = "app_secret.txt"  # the BrowserState secret of earlier versions: public, so no longer used


@dataclass
class AppServices:
    """What the UI talks to (see the module docstring)."""

    config: AppConfig
    cache: Path
    models: ModelCache
    workspaces: Workspaces
    galleries: Galleries
    runs: Runs
    tokens: WorkspaceTokens
    scrub: Scrubber
    stress: StressTests  # the stress tests of opened runs (one at a time on the server)
    bindings: Bindings = field(default_factory=Bindings)  # Gradio's handles -> workspaces (the middleware's)
    startup_report: dict = field(default_factory=dict)
    _sweeper: threading.Event | None = None  # set: the housekeeping thread stops

    @classmethod
    def create(cls, config: AppConfig | None = None, housekeeping_thread: bool = True) -> AppServices:
        config = config or AppConfig()
        cache = cache_dir(config.cache_dir)
        models = ModelCache(config.device, config.cache_dir)
        workspaces = Workspaces(cache / "sessions", config.quota_bytes)
        galleries = Galleries(config, models, cache)
        backend = create_backend(config.backend, models, cache, config.workers, config.device, config.ray_address,
                                 config.worker_plugins)
        runs = Runs(config, cache / "runs", workspaces, galleries, backend, models)
        tokens = WorkspaceTokens.from_file(cache / KEY_FILE)
        (cache / OLD_SECRET_FILE).unlink(missing_ok=True)
        roots = [("<cache>", cache), ("<data>", data_root(config.data_root)), ("<imagenet>", config.imagenet_root),
                 *((f"<gallery {name}>", p) for name, paths in config.galleries.items()
                   for p in paths.split(os.pathsep)), ("<app>", Path(__file__).resolve().parents[2])]
        services = cls(config, cache, models, workspaces, galleries, runs, tokens, Scrubber(roots),
                       StressTests(runs, galleries))
        services.startup_report = housekeeping.startup(cache, workspaces, runs, config.workspace_ttl_days)
        if config.warm_up:
            runs.warm_up()
        if housekeeping_thread:
            services._sweeper = housekeeping.start_sweeper(workspaces, runs, config.workspace_ttl_days,
                                                           config.housekeeping_interval_s)
        return services

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.set()
        self.runs.backend.close()
        self.workspaces.remove_exports()  # an export lives as long as the server that made it

    def export(self, owner: str, run_id: str, alpha: float | None = None) -> Path:
        """Zip theta(alpha) of the owner's run (default: the calibrated alpha) with a model card."""
        self.runs.require_quota(owner)
        return export_run(self.runs.open(owner, run_id), self.workspaces.exports_dir(owner), alpha)

    def report(self, owner: str, run_id: str, alpha: float, prompt: str, gallery: str) -> Path:
        """Write the owner's run's audit report (one self-contained HTML file) into the workspace's exports."""
        self.runs.require_quota(owner)
        view = self.runs.open(owner, run_id)
        return write_view_report(view, self.workspaces.exports_dir(owner), alpha, report_prompts(view, prompt), gallery)

    def download_path(self, owner: str, name: str) -> Path | None:
        """The owner's export ``name`` for the download route, or ``None`` (another workspace's, or gone)."""
        return self.workspaces.export_file(owner, name)

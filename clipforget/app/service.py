"""The app's parts wired together from one :class:`AppConfig`: models, workspaces, galleries, runs and export.

Each part lives in its own module and works without Gradio; :class:`AppServices` only builds them and holds them,
so the UI (:mod:`clipforget.app.ui`) and scripts reach each through one object.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipforget.core.paths import cache_dir
from clipforget.jobs.backends import create_backend
from clipforget.jobs.models import ModelCache
from clipforget.models.factory import ClipBundle, bundled_models

from .config import CURATED_OPEN_CLIP, AppConfig
from .export import export_run
from .galleries import Galleries
from .runs import Runs
from .workspaces import Workspaces


@dataclass
class AppServices:
    """What the UI talks to (see the module docstring)."""

    config: AppConfig
    cache: Path
    models: ModelCache
    workspaces: Workspaces
    galleries: Galleries
    runs: Runs

    @classmethod
    def create(cls, config: AppConfig | None = None) -> AppServices:
        config = config or AppConfig()
        cache = cache_dir(config.cache_dir)
        models = ModelCache(config.device, config.cache_dir)
        workspaces = Workspaces(cache / "sessions")
        galleries = Galleries(config, models, cache)
        backend = create_backend(config.backend, models, cache, config.workers, config.device, config.ray_address,
                                 config.worker_plugins)
        runs = Runs(config, cache / "runs", workspaces, galleries, backend, models)
        return cls(config, cache, models, workspaces, galleries, runs)

    def bundle(self, spec: str | None = None) -> ClipBundle:
        return self.models.get(spec or self.config.model)

    @staticmethod
    def available_models() -> list[str]:
        """The bundled models first, then open_clip architectures with pretrained tags (weights may be missing)."""
        names = [*bundled_models(), *CURATED_OPEN_CLIP]
        try:
            import open_clip

            names += [f"{a}:{t}" for a, t in open_clip.list_pretrained()]
        except ImportError:
            pass
        return list(dict.fromkeys(names))

    def export(self, owner: str, run_id: str, alpha: float | None = None) -> Path:
        """Zip theta(alpha) of the owner's run (default: the calibrated alpha) with a model card."""
        return export_run(self.runs.open(owner, run_id), self.workspaces.path(owner) / "exports", alpha)

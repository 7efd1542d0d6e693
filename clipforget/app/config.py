"""What the app may touch and how much: folders, models, upload limits, quotas and expiry (flags or environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from clipforget.models.factory import DEFAULT_MODEL

# Built-in retrieval galleries: name -> folders under the data root. "demo" is what the paper's retrieval figures
# need: the monkeys (marmosets among them), 202 ImageNet classes at 64 px, CIFAR-10 test, the ImageNet samples, COCO.
BUILTIN_GALLERIES: dict[str, tuple[str, ...]] = {
    "demo": ("monkeys10/val", "tiny-imagenet/val", "cifar10/test", "imagenet-samples", "coco-mini/images"),
    "cifar10-test+imagenet": ("cifar10/test", "imagenet-samples"),
}
DEFAULT_GALLERY = "demo"
EXAMPLE_PROMPTS = ("monkey", "marmoset", "lesser panda", "a photo of a car")


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass
class AppConfig:
    """The app's settings (flags of ``app.py`` or environment variables)."""

    model: str = DEFAULT_MODEL
    data_root: str | None = None
    cache_dir: str | None = None
    imagenet_root: str | None = None  # ImageFolder (<wnid>/*.JPEG) for the LIVING-17 preset
    device: str | None = None  # default: cuda when available
    max_upload_mb: float = field(default_factory=lambda: _env_float("CLIPFORGET_MAX_UPLOAD_MB", 20.0))  # per file
    max_total_upload_mb: float = field(default_factory=lambda: _env_float("CLIPFORGET_MAX_TOTAL_UPLOAD_MB", 500.0))
    max_pixels: int = field(default_factory=lambda: int(_env_float("CLIPFORGET_MAX_PIXELS", 40_000_000)))
    max_files: int = 20_000  # per upload set, zip members included
    galleries: dict[str, str] = field(default_factory=dict)  # extra retrieval galleries: name -> image folders
    default_gallery: str = DEFAULT_GALLERY
    top_k: int = 12
    max_grid_bytes: int = 600_000_000  # an opened run's alpha grid is held as float32 up to this size
    max_open_bytes: int = 1_500_000_000  # opened runs stay in memory while they hold this much (2 at least)
    # models a client may ask for besides the bundled ones and ``model`` (docs/security.md)
    allowed_models: list[str] = field(default_factory=list)
    allow_any_model: bool = False  # any spec, paths included: only for a trusted, single-user server
    # other origins (scheme://host[:port]) whose pages may call the app with the user's cookie: none by default
    allowed_origins: list[str] = field(default_factory=list)
    # per workspace: disk held by its uploads, exports and runs; expiry after this many days without use
    workspace_quota_mb: float = field(default_factory=lambda: _env_float("CLIPFORGET_WORKSPACE_QUOTA_MB", 3000.0))
    workspace_ttl_days: float = field(default_factory=lambda: _env_float("CLIPFORGET_WORKSPACE_TTL_DAYS", 30.0))
    # read-only explore events (open, alpha, retrieval, run list) served at once: they share this many slots
    explore_concurrency: int = field(default_factory=lambda: int(_env_float(
        "CLIPFORGET_EXPLORE_CONCURRENCY", max(4, 4 * (os.cpu_count() or 1)))))
    housekeeping_interval_s: float = 3600.0  # expiry and clean-up also run this often while the app is up

    @property
    def quota_bytes(self) -> int | None:
        return int(self.workspace_quota_mb * 1e6) if self.workspace_quota_mb > 0 else None
    # where runs train (docs/backends.md): local worker processes (default), a Ray cluster, or a thread of the app
    backend: str = field(default_factory=lambda: os.environ.get("CLIPFORGET_BACKEND", "local"))
    workers: int | None = None  # local: worker processes (None: one per GPU, else 1; 0: only external workers)
    ray_address: str | None = None  # ray: auto | ray://host:port | None (a local cluster)
    worker_plugins: list[str] = field(default_factory=list)  # modules / .py files workers import (custom settings)
    # workers prepare the default preset's first run while idle: gallery index, data and class texts (app.py: on)
    warm_up: bool = False

"""Choosing a backend by name: ``local`` (worker processes, the default), ``ray`` (a Ray cluster) or ``thread`` (in
this process: tests, and machines where starting processes is not possible). See docs/backends.md."""

from __future__ import annotations

from pathlib import Path

from clipforget.core.errors import DataError

from .backend import Backend
from .model_cache import ModelCache

BACKENDS = ("local", "ray", "thread")


def create_backend(kind: str, models: ModelCache, cache: Path, workers: int | None = None,
                   device: str | None = None, ray_address: str | None = None, plugins: list[str] | None = None,
                   ray_num_cpus: int | None = None) -> Backend:
    """The backend ``kind`` over the cache folder ``cache`` (runs in ``cache/runs``, the local queue in
    ``cache/queue``). ``workers``: local worker processes (``None``: one per GPU, else one; ``0``: only workers
    started apart with ``python -m clipforget worker``). ``device``: where local workers train (default: auto)."""
    cache = Path(cache)
    if kind == "thread":
        from .thread import ThreadBackend

        return ThreadBackend(models, cache)
    if kind == "local":
        from .local import LocalBackend

        return LocalBackend(cache / "queue", workers, device, cache, plugins)
    if kind == "ray":
        from .ray_backend import RayBackend

        return RayBackend(ray_address, runs_dir=cache / "runs", cache_dir=cache, plugins=plugins,
                          num_cpus=ray_num_cpus)
    raise DataError(f"unknown backend {kind!r}; choose from {', '.join(BACKENDS)}")

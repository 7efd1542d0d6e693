"""Original models loaded once per process and shared read-only by runs, indexes and exploring."""

from __future__ import annotations

import threading

from clipforget.core.devices import configure_backends, resolve_device
from clipforget.models.factory import ClipBundle, create_model


class ModelCache:
    """``get(spec)`` loads a model once (thread-safe); runs never modify it (methods work on copies)."""

    def __init__(self, device: str | None = None, cache_dir: str | None = None):
        self.device = resolve_device(device)
        self.cache_dir = cache_dir
        configure_backends(self.device)
        self._bundles: dict[str, ClipBundle] = {}
        self._lock = threading.Lock()

    def get(self, spec: str) -> ClipBundle:
        with self._lock:
            if spec not in self._bundles:
                self._bundles[spec] = create_model(spec, self.device, self.cache_dir)
            return self._bundles[spec]

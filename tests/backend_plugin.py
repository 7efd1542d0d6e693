"""A worker plugin for the backend tests (``--plugin tests/backend_plugin.py``): setting ``gated`` waits until a file
exists, then builds the ``folders`` task with the quick sizes -- so a test decides when a worker's run goes on."""

from __future__ import annotations

import time
from pathlib import Path

from clipforget.core.errors import DataError
from clipforget.settings import get_setting
from clipforget.settings.registry import SIZE_PRESETS, Setting, register_setting


def gated(image_size: int, seed: int, sizes: object, gate: str, forget_dir: str, retain_dir: str, label: str,
          timeout: float = 900.0):
    deadline = time.time() + timeout
    while not Path(gate).exists():
        if time.time() > deadline:
            raise DataError(f"gate {gate} never opened")
        time.sleep(0.1)
    return get_setting("folders").build(image_size, seed, "quick", forget_dir=forget_dir, retain_dir=retain_dir,
                                        label=label)


register_setting(Setting("gated", "test: waits for a gate file, then the folders task", gated,
                         dict.fromkeys(SIZE_PRESETS)))

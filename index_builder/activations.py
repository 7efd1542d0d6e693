"""Gallery activations stored next to an index: what enters one stage of the image tower, for every index row.

Written once per model and gallery (the index folder is per model) by the first alpha grid that decodes the gallery,
read by every later one, so a run's grid costs only the part of the tower the run changed (docs/decisions.md D18).
``<index>/activations/<stage>.f16.npy`` holds float16 ``N,...`` rows in index order; ``<stage>.json`` (written last)
says for which index build and which weights they were computed, and a file that disagrees is ignored.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from clipforget.core.atomic import write_atomic, write_json
from clipforget.retrieval.index import INFO_FILE

from .writer import save_npy

ACTIVATIONS_DIR = "activations"
MAX_STORED_BYTES = 4 << 30  # larger galleries are decoded by every grid instead


def _paths(index_dir: Path, stage: str) -> tuple[Path, Path]:
    folder = Path(index_dir) / ACTIVATIONS_DIR
    return folder / f"{stage}.f16.npy", folder / f"{stage}.json"


def index_stamp(index_dir: Path) -> dict[str, Any]:
    """What identifies one build of an index (a rebuild or an ``add`` changes it)."""
    info = json.loads((Path(index_dir) / INFO_FILE).read_text(encoding="utf-8"))
    return {"count": info.get("count"), "updated": info.get("updated")}


def find_stored(index_dir: Path, stages: Sequence[str], last: int, fingerprint: str) -> tuple[int, np.ndarray] | None:
    """The stored activations entering the latest of ``stages[:last + 1]`` that has valid ones: ``(its position,
    N,... float16 memmap)``, or ``None``."""
    try:
        stamp = index_stamp(index_dir)
    except (OSError, ValueError):
        return None
    for position in range(min(last, len(stages) - 1), 0, -1):
        array_path, info_path = _paths(index_dir, stages[position])
        if not info_path.is_file() or not array_path.is_file():
            continue
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
            array = np.load(array_path, mmap_mode="r")
        except (OSError, ValueError):
            continue
        if info.get("index") == stamp and info.get("weights") == fingerprint and len(array) == stamp["count"]:
            return position, array
    return None


@contextlib.contextmanager
def stage_inputs(visual: nn.Module, stage: str | None) -> Iterator[list[np.ndarray]]:
    """Collect, while the block runs, what enters ``visual``'s sub-module ``stage`` on every forward (float16, CPU,
    in call order); nothing when ``stage`` is ``None``."""
    captured: list[np.ndarray] = []
    if stage is None:
        yield captured
        return

    def keep(module: nn.Module, args: tuple) -> None:
        captured.append(args[0].detach().half().cpu().numpy())

    hook = visual.get_submodule(stage).register_forward_pre_hook(keep)
    try:
        yield captured
    finally:
        hook.remove()


def store(index_dir: Path, stage: str, chunks: Sequence[np.ndarray], fingerprint: str) -> Path | None:
    """Write the activations entering ``stage`` for every index row (``chunks`` in row order); ``None`` when the
    folder is not writable (a read-only index is simply decoded each time)."""
    array_path, info_path = _paths(index_dir, stage)
    try:
        stamp = index_stamp(index_dir)
        array = np.concatenate(chunks).astype(np.float16, copy=False)
        if len(array) != stamp["count"]:
            return None
        write_atomic(array_path, lambda tmp: save_npy(tmp, array))
        write_json(info_path, {"stage": stage, "shape": list(array.shape[1:]), "dtype": "float16",
                               "index": stamp, "weights": fingerprint, "megabytes": round(array.nbytes / 2**20, 1)})
    except OSError:
        return None
    return array_path

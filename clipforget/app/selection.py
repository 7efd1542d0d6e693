"""Forget from the gallery: a prompt's top-k and picked images of a retrieval gallery become the forget and retain
galleries of a run -- the same upload folders a user's upload makes, so the run path is the normal one.

The images are copied into the caller's workspace under the upload limits (per file, per gallery, the quota) and
split once, here, into a training share (``forget/``, ``retain/``) and a held-out share (``calibration/forget/``,
``calibration/retain/``: calibration and evaluation, never trained on). :func:`trained_on_record` says which
gallery images trained the run; the run folder keeps it (``trained_on.json``), so the retrieval panel marks them
and audits leave them out. Picked images arrive as workspace-bound handles
(:meth:`clipforget.app.identity.WorkspaceTokens.image_handle`); a handle of another workspace is refused.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clipforget.core.atomic import partial_dir, replace_dir, write_json
from clipforget.core.errors import DataError
from clipforget.data.archives import storage_name

from .galleries import Gallery
from .uploads import META, UploadLimits

HOLDOUT = 0.2  # share of each selection held out for calibration and evaluation (as for uploads without one)
MAX_K = 2000


@dataclass
class SelectionRequest:
    """What the caller asked for: per side a prompt's top-k and picked rows (already resolved from handles)."""

    gallery: str
    forget_prompt: str = ""
    forget_k: int = 40
    forget_rows: list[int] = field(default_factory=list)
    retain_prompt: str = ""
    retain_k: int = 200
    retain_rows: list[int] = field(default_factory=list)


@dataclass
class Selection:
    """Rows of the gallery per side and share."""

    gallery: Gallery
    forget_train: list[int]
    forget_heldout: list[int]
    retain_train: list[int]
    retain_heldout: list[int]

    @property
    def forget(self) -> list[int]:
        return [*self.forget_train, *self.forget_heldout]

    @property
    def retain(self) -> list[int]:
        return [*self.retain_train, *self.retain_heldout]


def check_k(value: object, what: str) -> int:
    try:
        k = int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a whole number") from None
    if not 0 <= k <= MAX_K:
        raise DataError(f"{what} must be between 0 and {MAX_K}")
    return k


def top_rows(gallery: Gallery, query: np.ndarray | None, k: int) -> list[int]:
    """The original model's top-``k`` rows of the gallery for a text embedding (best first; none without one)."""
    from clipforget.retrieval.search import top_k_rows

    return [int(i) for i in top_k_rows(gallery.embeddings @ query, k)] if k and query is not None else []


def split_rows(rows: list[int], holdout: float = HOLDOUT, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(train, held out)``: ``holdout`` of the rows (at least one of two or more) held out, seeded."""
    n = len(rows)
    n_hold = min(max(round(n * holdout), 1 if n > 1 else 0), max(n - 1, 0))
    order = np.random.default_rng(seed).permutation(n)
    held = sorted(int(rows[i]) for i in order[:n_hold])
    train = [r for r in rows if r not in set(held)]
    return train, held


def build_selection(gallery: Gallery, forget_query: np.ndarray | None, retain_query: np.ndarray | None,
                    request: SelectionRequest) -> Selection:
    """Forget = the forget prompt's top-k plus picked rows; retain = the retain prompt's top-k plus picked rows,
    minus every forget row. Both split into a training and a held-out share."""
    forget = list(dict.fromkeys([*top_rows(gallery, forget_query, request.forget_k), *request.forget_rows]))
    taken = set(forget)
    retain = [r for r in dict.fromkeys([*top_rows(gallery, retain_query, request.retain_k), *request.retain_rows])
              if r not in taken]
    if not forget:
        raise DataError("the forget set is empty: type a prompt and a top-k, or pick images")
    if not retain:
        raise DataError("the retain set is empty (after removing the forget images): type a prompt and a top-k, or "
                        "pick images")
    forget_train, forget_held = split_rows(forget)
    retain_train, retain_held = split_rows(retain)
    return Selection(gallery, forget_train, forget_held, retain_train, retain_held)


def write_selection(selection: Selection, root: Path, limits: UploadLimits, retain_label: str | None) -> None:
    """Copy the selection's images into upload folders under ``root`` (``forget/``, ``retain/``, ``calibration/
    {forget,retain}/``), within ``limits``; retain images go into one sub-folder per gallery label when no retain
    label is given. Over a limit: nothing is written and a :class:`DataError` says which."""
    gal = selection.gallery
    rows = [*selection.forget, *selection.retain]
    sizes = {r: os.path.getsize(gal.paths[r]) for r in rows}
    too_large = [r for r in rows if sizes[r] > limits.max_upload_mb * 1e6]
    if too_large:
        raise DataError(f"{len(too_large)} selected image(s) are over the {limits.max_upload_mb:g} MB per-file limit")
    total = sum(sizes.values())
    if total > limits.total_bytes:
        raise limits.too_large("the selection", total)
    if len(rows) > limits.max_files:
        raise DataError(f"the selection has {len(rows)} images, over the {limits.max_files} limit")
    tmp = partial_dir(root)
    try:
        places = (("forget", selection.forget_train, False), ("retain", selection.retain_train, True),
                  ("calibration/forget", selection.forget_heldout, False),
                  ("calibration/retain", selection.retain_heldout, True))
        for folder, part, by_label in places:
            dest = tmp / folder
            dest.mkdir(parents=True, exist_ok=True)
            taken: dict[str, set[str]] = {}
            for r in part:
                sub = dest / storage_name(gal.labels[r], set()) if by_label and not retain_label else dest
                sub.mkdir(exist_ok=True)
                shutil.copyfile(gal.paths[r], sub / storage_name(Path(gal.paths[r]).name, taken.setdefault(
                    str(sub), set())))
            write_json(dest / META, {"skipped": [], "ignored": 0, "received": len(part), "archives": {}})
        replace_dir(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def data_sha256(selection: Selection) -> str:
    """One digest of the selection: each side's and share's images' bytes, in order."""
    digest = hashlib.sha256()
    for name, rows in (("forget", selection.forget_train), ("retain", selection.retain_train),
                       ("calibration_forget", selection.forget_heldout),
                       ("calibration_retain", selection.retain_heldout)):
        digest.update(name.encode())
        for r in rows:
            digest.update(Path(selection.gallery.paths[r]).read_bytes())
    return digest.hexdigest()


def trained_on_record(selection: Selection) -> dict[str, Any]:
    """What the run folder keeps (``trained_on.json``, server side only): the gallery images it trained on, those
    held out, the forget images (both shares) and the data's digest."""
    paths = selection.gallery.paths
    return {"gallery": selection.gallery.name,
            "trained": [paths[r] for r in [*selection.forget_train, *selection.retain_train]],
            "heldout": [paths[r] for r in [*selection.forget_heldout, *selection.retain_heldout]],
            "forget": [paths[r] for r in selection.forget],
            "counts": {part: len(getattr(selection, part))
                       for part in ("forget_train", "forget_heldout", "retain_train", "retain_heldout")},
            "data_sha256": data_sha256(selection)}

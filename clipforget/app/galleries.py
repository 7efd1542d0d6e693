"""Retrieval galleries for the app: which folders make each gallery, their indexes per model (held in memory for
exact search), text embeddings of prompts, and small thumbnails of results."""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clipforget.core.atomic import write_atomic
from clipforget.core.errors import DataError
from clipforget.core.paths import data_root
from clipforget.data.images import open_image, to_model_size
from clipforget.jobs.galleries import ensure_gallery_index
from clipforget.jobs.model_cache import ModelCache
from clipforget.models.encode import encode_text
from clipforget.retrieval.index import GalleryIndex

from .config import BUILTIN_GALLERIES, AppConfig

THUMBNAIL_NAME = re.compile(r"[0-9a-f]{20}\.png")


@dataclass
class Gallery:
    """A gallery indexed with one model: the index and its embeddings as float32 (for fast exact search)."""

    name: str
    index: GalleryIndex
    embeddings: np.ndarray  # N,D float32 unit norm (the original model)
    labels: list[str]
    paths: list[str]

    @property
    def folder(self) -> Path:
        return Path(self.index.path)

    def __len__(self) -> int:
        return len(self.index)


class Galleries:
    """Gallery definitions, their loaded indexes, prompt embeddings and thumbnails (shared by every workspace)."""

    def __init__(self, config: AppConfig, models: ModelCache, cache_root: Path):
        self.config = config
        self.models = models
        self.cache_root = Path(cache_root)
        self._loaded: dict[tuple[str, str], Gallery] = {}
        self._texts: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._encoding: dict[tuple[str, str], threading.Lock] = {}
        self._thumbnails: set[str] = set()  # thumbnails known to be on disk (no stat per result)
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        return list(dict.fromkeys([self.config.default_gallery, *self.config.galleries, *BUILTIN_GALLERIES]))

    def sources(self, name: str) -> list[Path]:
        """The image folders of gallery ``name``: ``--gallery`` flags, else the built-in galleries under the data
        root (the default, ``demo``: monkeys10 val + Tiny-ImageNet val + CIFAR-10 test + ImageNet samples + COCO,
        21.5k images)."""
        if name in self.config.galleries:
            return [Path(p) for p in self.config.galleries[name].split(os.pathsep)]
        if name in BUILTIN_GALLERIES:
            root = data_root(self.config.data_root)
            return [root / part for part in BUILTIN_GALLERIES[name]]
        raise DataError(f"unknown gallery {name!r}; choose from {', '.join(self.names())}")

    def get(self, spec: str, name: str, build: bool = True) -> Gallery:
        """Gallery ``name`` indexed with model ``spec`` (built once with :mod:`index_builder`, then loaded;
        ``build=False``: a :class:`DataError` when it is not built yet)."""
        key = (spec, name)
        if key not in self._loaded:
            index = ensure_gallery_index(self.cache_root, self.models.get(spec), name, self.sources(name),
                                         build_missing=build)
            if len(index) == 0:
                raise DataError(f"gallery {name!r} has no readable images (ask the operator to check its folders)")
            embeddings = np.asarray(index.embeddings, dtype=np.float32)
            self._loaded[key] = Gallery(name, index, embeddings, index.labels, index.paths)
        return self._loaded[key]

    def text_embedding(self, spec: str, prompt: str) -> np.ndarray:
        """The prompt's text embedding (cached; concurrent first asks for one prompt encode it once)."""
        key = (spec, prompt)
        with self._lock:
            if key in self._texts:
                self._texts.move_to_end(key)
                return self._texts[key]
            pending = self._encoding.setdefault(key, threading.Lock())
        with pending:  # the first caller encodes, the others wait for it
            with self._lock:
                if key in self._texts:
                    return self._texts[key]
            vec = encode_text(self.models.get(spec), [prompt])[0].cpu().numpy().astype(np.float32)
            with self._lock:
                self._texts[key] = vec
                self._encoding.pop(key, None)
                while len(self._texts) > 256:
                    self._texts.popitem(last=False)
        return vec

    @property
    def thumbnail_root(self) -> Path:
        return self.cache_root / "thumbs"

    def thumbnail_file(self, name: str) -> Path | None:
        """The thumbnail called ``name`` if it was made (``None`` for any other name)."""
        if not THUMBNAIL_NAME.fullmatch(name):
            return None
        path = self.thumbnail_root / name[:2] / name
        return path if path.is_file() else None

    def thumbnail(self, path: str, size: int = 96) -> Path:
        """A small PNG of a gallery image (cached by path), re-encoded from the decoded pixels."""
        from PIL import Image

        name = hashlib.sha1(f"{path}|{size}".encode()).hexdigest()[:20] + ".png"  # THUMBNAIL_NAME
        out = self.thumbnail_root / name[:2] / name
        if name in self._thumbnails:
            return out
        if not out.is_file():
            pixels = to_model_size(open_image(path, self.config.max_pixels), size).permute(1, 2, 0).numpy()
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="PNG")
            write_atomic(out, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
        with self._lock:
            self._thumbnails.add(name)
        return out

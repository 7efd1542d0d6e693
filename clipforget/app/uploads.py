"""Uploaded galleries: copy files and zips into a workspace safely, and report what a run will be able to read.

Every uploaded file is kept under a unique storage name (:func:`clipforget.data.archives.storage_name`), so no two
uploads replace each other; every file that cannot be used is listed with the reason (too large, not an image,
unsafe path or bad member in a zip, not decodable). Limits that would fill the disk (total size, file count) refuse
the whole upload with a :class:`~clipforget.core.errors.DataError`, and a refused upload leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from clipforget.core.atomic import write_json
from clipforget.core.errors import DataError
from clipforget.data.archives import ArchiveLimits, storage_name, unpack_zip
from clipforget.data.images import read_folder


@dataclass(frozen=True)
class UploadLimits:
    """Per-file and per-upload limits (the app config fills them from flags / environment)."""

    max_upload_mb: float = 20.0
    max_total_upload_mb: float = 500.0
    max_files: int = 20_000
    max_pixels: int = 40_000_000

    def archive_limits(self, used_bytes: int = 0, used_files: int = 0) -> ArchiveLimits:
        return ArchiveLimits(int(self.max_upload_mb * 1e6), int(self.max_total_upload_mb * 1e6) - used_bytes,
                             self.max_files - used_files)


@dataclass
class UploadReport:
    """What an upload produced: the folder the images were copied to, counts, and every skipped file with why."""

    folder: Path
    files: int
    images: int
    labels: dict[str, int]
    skipped: list[tuple[str, str]]

    def summary(self, name: str) -> str:
        labels = ", ".join(f"{k}: {v}" for k, v in sorted(self.labels.items())) or "none"
        return f"{name}: {self.images} images readable ({labels}); {len(self.skipped)} skipped"


def is_within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _display_name(path: Path) -> str:
    """The name a browser gave a file (Gradio keeps it as the last path component)."""
    return path.name


def save_files(dest: Path, kind: str, files: list[str | os.PathLike] | None, limits: UploadLimits) -> Path:
    """Copy uploaded files (images or zips) into ``dest`` (emptied first), enforcing ``limits``.

    Files over the size limit are skipped with a reason (listed in ``<kind>.skipped.json`` beside ``dest``); an
    upload over the total size or file-count limit is refused with a :class:`DataError` and leaves no files.
    """
    if dest.exists():
        shutil.rmtree(dest)
    skipped: list[tuple[str, str]] = []
    paths = [Path(f) for f in files or []]
    limit = limits.max_upload_mb * 1e6
    total = sum(f.stat().st_size for f in paths if f.is_file())
    if total > limits.max_total_upload_mb * 1e6:
        raise DataError(f"{kind} upload is {total / 1e6:.1f} MB, over the {limits.max_total_upload_mb:g} MB "
                        "total limit (--max-total-upload-mb / CLIPFORGET_MAX_TOTAL_UPLOAD_MB)")
    if len(paths) > limits.max_files:
        raise DataError(f"{kind} upload has {len(paths)} files, over the {limits.max_files} limit")
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        taken: set[str] = set()
        count, unpacked_bytes = 0, 0
        for f in paths:
            shown = _display_name(f)
            size = f.stat().st_size if f.is_file() else 0
            if f.suffix.lower() == ".zip":
                folder = tmp / storage_name(Path(shown).stem, taken)
                result = unpack_zip(f, folder, limits.archive_limits(unpacked_bytes, count), label=shown)
                skipped += result.skipped
                count += result.files
                unpacked_bytes += sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            elif size > limit:
                skipped.append((shown, f"too large ({size / 1e6:.1f} MB > {limits.max_upload_mb:g} MB limit, "
                                       "--max-upload-mb / CLIPFORGET_MAX_UPLOAD_MB)"))
            else:
                shutil.copyfile(f, tmp / storage_name(shown, taken))
                count += 1
            if count > limits.max_files:
                raise DataError(f"{kind} upload has more than {limits.max_files} files")
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    write_json(dest.parent / f"{kind}.skipped.json", skipped)
    return dest


def flatten_single_folder(folder: Path) -> Path:
    """A zip that wraps everything in one top folder (``cats.zip -> cats/...``) reads like its content."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        if len(entries) == 1 and entries[0].is_dir():
            folder = entries[0]
        else:
            return folder


def inspect_folder(folder: Path, label: str | None, max_pixels: int, size: int = 32) -> UploadReport:
    """Read an upload folder the way a run will (at a small size): counts per label and skipped files."""
    skipped = [tuple(x) for x in read_json_list(folder.parent / f"{folder.name}.skipped.json")]
    if not folder.is_dir() or not any(folder.rglob("*")):
        return UploadReport(folder, len(skipped), 0, {}, skipped)
    folder = flatten_single_folder(folder)
    images = read_folder(folder, size, label, max_pixels)
    skipped += [(str(Path(p).relative_to(folder)) if is_within(Path(p), folder) else Path(p).name, r)
                for p, r in images.skipped]
    return UploadReport(folder, len(images) + len(skipped), len(images), images.label_counts(), skipped)


def read_json_list(path: Path) -> list:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return value if isinstance(value, list) else []

"""Uploaded galleries: copy files and zips into a workspace safely, and report what a run will be able to read.

Every file that cannot be used is kept in a list with the reason (too large, not an image, unsafe path in a zip,
not decodable), shown in the app and written to the run report; limits that would make the machine run out of disk
or memory (total size, file count) refuse the whole upload with a :class:`~clipforget.data.DataError` instead.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .atomic import write_json
from .data import DataError, read_folder
from .paths import safe_name


@dataclass(frozen=True)
class UploadLimits:
    """Per-file and per-upload limits (``ServiceConfig`` fills them from flags / environment)."""

    max_upload_mb: float = 20.0
    max_total_upload_mb: float = 500.0
    max_files: int = 20_000
    max_pixels: int = 40_000_000


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


def save_files(dest: Path, kind: str, files: list[str | os.PathLike] | None, limits: UploadLimits) -> Path:
    """Copy uploaded files (images or zips) into ``dest`` (emptied first), enforcing ``limits``.

    Files over the size limit are skipped with a reason (listed in ``skipped.json``); an upload whose total size
    is over the total limit, or with too many files, is refused with a :class:`DataError`.
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    skipped: list[tuple[str, str]] = []
    files = [Path(f) for f in files or []]
    limit = limits.max_upload_mb * 1e6
    total = sum(f.stat().st_size for f in files if f.is_file())
    if total > limits.max_total_upload_mb * 1e6:
        raise DataError(f"{kind} upload is {total / 1e6:.1f} MB, over the {limits.max_total_upload_mb:g} MB "
                        "total limit (--max-total-upload-mb / CLIPFORGET_MAX_TOTAL_UPLOAD_MB)")
    count = 0
    for f in files:
        name = safe_name(Path(f).name)
        size = f.stat().st_size if f.is_file() else 0
        if f.suffix.lower() == ".zip":
            count += extract_zip(f, dest / Path(name).stem, skipped, limits)
        elif size > limit:
            skipped.append((f.name, f"too large ({size / 1e6:.1f} MB > {limits.max_upload_mb:g} MB limit, "
                                    "--max-upload-mb / CLIPFORGET_MAX_UPLOAD_MB)"))
        else:
            shutil.copyfile(f, dest / name)
            count += 1
        if count > limits.max_files:
            raise DataError(f"{kind} upload has more than {limits.max_files} files")
    write_json(dest.parent / f"{kind}.skipped.json", skipped)
    return dest

def extract_zip(archive: Path, dest: Path, skipped: list[tuple[str, str]], limits: UploadLimits) -> int:
    """Unpack ``archive`` into ``dest`` safely (no absolute / parent paths, size and count limits)."""
    limit = limits.max_upload_mb * 1e6
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        skipped.append((archive.name, "not a valid zip file"))
        return 0
    count = 0
    total = 0
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > limits.max_files:
            raise DataError(f"{archive.name} holds {len(members)} files, over the {limits.max_files} limit")
        for info in members:
            raw = Path(info.filename.replace("\\", "/"))
            if raw.is_absolute() or ".." in raw.parts:
                skipped.append((f"{archive.name}/{info.filename}", "unsafe path in archive"))
                continue
            parts = [p for p in raw.parts if p not in ("", ".")]
            if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
                continue
            target = dest.joinpath(*[safe_name(p) for p in parts])
            if not is_within(target, dest):
                skipped.append((f"{archive.name}/{info.filename}", "unsafe path in archive"))
                continue
            if info.file_size > limit:
                skipped.append((f"{archive.name}/{info.filename}",
                                f"too large ({info.file_size / 1e6:.1f} MB > {limits.max_upload_mb:g} MB)"))
                continue
            total += info.file_size
            if total > limits.max_total_upload_mb * 1e6:
                raise DataError(f"{archive.name} unpacks to over {limits.max_total_upload_mb:g} MB")
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            count += 1
    return count

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
        return UploadReport(folder, 0, 0, {}, skipped)
    folder = flatten_single_folder(folder)
    images = read_folder(folder, size, label, max_pixels)
    skipped += [(str(Path(p).relative_to(folder)) if is_within(Path(p), folder) else p, r)
                for p, r in images.skipped]
    return UploadReport(folder, len(images) + len(images.skipped), len(images), images.label_counts(), skipped)


def read_json_list(path: Path) -> list:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return value if isinstance(value, list) else []

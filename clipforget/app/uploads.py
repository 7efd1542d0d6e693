"""Uploaded galleries: copy files and zips into a workspace safely, and report what a run will be able to read.

Every uploaded file is kept under a unique storage name; labels never come from file names; every unusable file is
listed with its reason, and the counts add up (``files = images + skipped``, hidden system files of zips apart).
Limits that would fill the disk refuse the whole upload, which then leaves nothing behind. See docs/security.md.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from clipforget.core.atomic import partial_dir, read_json, replace_dir, write_json
from clipforget.core.errors import DataError
from clipforget.core.paths import file_digest
from clipforget.data.archives import ArchiveLimits, storage_name, unpack_zip
from clipforget.data.images import read_folder


@dataclass(frozen=True)
class UploadLimits:
    """Per-file and per-upload limits (the app config fills them from flags / environment) and the workspace's
    remaining quota (``None``: no quota)."""

    max_upload_mb: float = 20.0
    max_total_upload_mb: float = 500.0
    max_files: int = 20_000
    max_pixels: int = 40_000_000
    quota_left_bytes: int | None = None

    @property
    def total_bytes(self) -> int:
        total = int(self.max_total_upload_mb * 1e6)
        return total if self.quota_left_bytes is None else min(total, self.quota_left_bytes)

    def too_large(self, kind: str, size: float) -> DataError:
        if self.quota_left_bytes is not None and self.quota_left_bytes < self.max_total_upload_mb * 1e6:
            return DataError(f"{kind} upload needs {size / 1e6:.1f} MB but this workspace has "
                             f"{self.quota_left_bytes / 1e6:.1f} MB left of its quota (--workspace-quota-mb): "
                             "delete runs you no longer need")
        return DataError(f"{kind} upload is {size / 1e6:.1f} MB, over the {self.max_total_upload_mb:g} MB "
                         "total limit (--max-total-upload-mb / CLIPFORGET_MAX_TOTAL_UPLOAD_MB)")

    def archive_limits(self, used_bytes: int = 0, used_files: int = 0) -> ArchiveLimits:
        return ArchiveLimits(int(self.max_upload_mb * 1e6), self.total_bytes - used_bytes, self.max_files - used_files)


@dataclass
class UploadReport:
    """What an upload produced: the folder the images were copied to, counts, and every skipped file with why.

    ``files`` counts every file received (zip members included) except hidden system files of zips, which are
    counted in ``ignored``; ``files == images + len(skipped)``.
    """

    folder: Path
    files: int
    images: int
    labels: dict[str, int]
    skipped: list[tuple[str, str]]
    ignored: int = 0

    def summary(self, name: str) -> str:
        labels = ", ".join(f"{k}: {v}" for k, v in sorted(self.labels.items())) or "none"
        extra = f"; {self.ignored} hidden system files in zips ignored" if self.ignored else ""
        return (f"{name}: {self.files} files received, {self.images} images readable ({labels}); "
                f"{len(self.skipped)} skipped{extra}")


def is_within(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


META = ".upload.json"  # inside the upload folder; hidden, so no reader takes it for an image


def save_files(dest: Path, kind: str, files: list[str | os.PathLike] | None, limits: UploadLimits) -> Path:
    """Copy uploaded files (images or zips) into ``dest`` (replaced), enforcing ``limits``.

    Files over the size limit and unusable zip members are skipped with a reason (kept in ``<dest>/.upload.json``);
    an upload over the total size, file-count or quota limit is refused with
    a :class:`DataError` and leaves no files: ``dest`` keeps what it held before.
    """
    skipped: list[tuple[str, str]] = []
    paths = [Path(f) for f in files or []]
    if any(not p.is_file() for p in paths):
        raise DataError(f"some {kind} files are no longer on the server (uploads are kept for a few hours): "
                        "upload them again")
    limit = limits.max_upload_mb * 1e6
    total = sum(f.stat().st_size for f in paths)
    if total > limits.total_bytes:
        raise limits.too_large(kind, total)
    if len(paths) > limits.max_files:
        raise DataError(f"{kind} upload has {len(paths)} files, over the {limits.max_files} limit")
    tmp = partial_dir(dest)  # private: two checks of the same upload at once never share it
    try:
        taken: set[str] = set()
        count, written, ignored = 0, 0, 0
        archives: dict[str, str] = {}  # storage folder -> the zip's name as uploaded (shown with its members)
        for f in paths:
            shown = f.name  # the name a browser gave the file (Gradio keeps it as the last path component)
            size = f.stat().st_size
            if f.suffix.lower() == ".zip":
                folder = tmp / storage_name(Path(shown).stem, taken)
                archives[folder.name] = shown
                try:
                    result = unpack_zip(f, folder, limits.archive_limits(written, count), label=shown)
                except DataError as err:
                    if "not a valid zip" not in str(err):
                        raise  # a limit: the whole upload is refused
                    skipped.append((shown, "not a valid zip file"))
                    continue
                skipped += result.skipped
                count += result.files
                ignored += result.ignored
                written += result.bytes
            elif size > limit:
                skipped.append((shown, f"too large ({size / 1e6:.1f} MB > {limits.max_upload_mb:g} MB limit, "
                                       "--max-upload-mb / CLIPFORGET_MAX_UPLOAD_MB)"))
            else:
                if written + size > limits.total_bytes:
                    raise limits.too_large(kind, written + size)
                shutil.copyfile(f, tmp / storage_name(shown, taken))
                count += 1
                written += size
            if count > limits.max_files:
                raise DataError(f"{kind} upload has more than {limits.max_files} files")
        write_json(tmp / META, {"skipped": skipped, "ignored": ignored, "received": len(paths), "archives": archives})
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def skipped_at_upload(folder: Path) -> list[list[str]]:
    return [list(x) for x in read_json(folder / META).get("skipped", [])]


def has_files(folder: Path) -> bool:
    """``folder`` holds at least one file that is not hidden."""
    return folder.is_dir() and any(p.is_file() and not p.name.startswith(".") for p in folder.rglob("*"))


def flatten_single_folder(folder: Path) -> Path:
    """A zip that wraps everything in one top folder (``cats.zip -> cats/...``) reads like its content."""
    while True:
        entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
        if len(entries) == 1 and entries[0].is_dir():
            folder = entries[0]
        else:
            return folder


def subgroup_name(folder: Path) -> str:
    """What the photos of an upload are, from how they came: its zip's or one top folder's name
    (``japanese_macaque.zip`` -> ``japanese macaque``); empty for loose images."""
    inner = flatten_single_folder(folder)
    return "" if inner == folder else inner.name.replace("_", " ").strip()


def inspect_folder(folder: Path, label: str | None, max_pixels: int, size: int = 32) -> UploadReport:
    """Read an upload folder the way a run will (at a small size): counts per label and skipped files."""
    meta = read_json(folder / META)  # what save_files recorded
    skipped = [tuple(x) for x in meta.get("skipped", [])]
    ignored = int(meta.get("ignored", 0))
    if not has_files(folder):
        return UploadReport(folder, len(skipped), 0, {}, skipped, ignored)
    root = flatten_single_folder(folder)
    images = read_folder(root, size, label, max_pixels)
    archives = meta.get("archives", {})

    def shown(path: str) -> str:  # a zip member is named with its zip: photos.zip/notes.txt
        p = Path(path)
        if not is_within(p, folder):
            return p.name
        parts = p.relative_to(folder).parts
        if parts and parts[0] in archives:
            return "/".join((archives[parts[0]], *parts[1:]))
        return str(p.relative_to(root)) if is_within(p, root) else p.name

    skipped += [(shown(p), r) for p, r in images.skipped]
    return UploadReport(root, len(images) + len(skipped), len(images), images.label_counts(), skipped, ignored)


def _digests(folder: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if not folder.is_dir():
        return out
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        out.setdefault(file_digest(path), []).append(str(path.relative_to(folder)))
    return out


def shared_files(a: Path, b: Path) -> list[tuple[str, str]]:
    """Files with the same bytes in folders ``a`` and ``b`` (``(name in a, name in b)``), e.g. one photo uploaded
    to both the forget and the retain gallery."""
    left, right = _digests(a), _digests(b)
    return [(left[d][0], right[d][0]) for d in left if d in right]


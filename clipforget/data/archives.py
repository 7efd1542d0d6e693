"""Safe unpacking of zip files and collision-free storage names: the one place that turns archives into folders.

Used by :func:`clipforget.data.images.read_folder` (a gallery given as a zip) and by the app's uploads. A member that
cannot be used is skipped with its reason -- an unsafe path, too large, a bad CRC, encryption, an unsupported
compression method -- and the rest is read. Limits that would exhaust the disk (total unpacked size, member count)
refuse the whole archive with a :class:`~clipforget.core.errors.DataError`, and then nothing is left behind: members
are unpacked into a temporary sibling folder that is renamed into place only when the archive was accepted.
"""

from __future__ import annotations

import os
import shutil
import unicodedata
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from clipforget.core.atomic import partial_dir
from clipforget.core.errors import DataError
from clipforget.core.locks import file_lock
from clipforget.core.paths import cache_dir, file_digest, safe_name


@dataclass(frozen=True)
class ArchiveLimits:
    """How much one archive may unpack to."""

    max_member_bytes: int = 20_000_000
    max_total_bytes: int = 500_000_000
    max_members: int = 20_000


@dataclass
class Unpacked:
    """What an archive gave: the folder, how many files were written, each skipped member with why, and how many
    hidden / system members (``.DS_Store``, ``__MACOSX/``) were left out as not user content."""

    folder: Path
    files: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    ignored: int = 0
    bytes: int = 0


def storage_name(original: str, taken: set[str]) -> str:
    """A file name that is safe on every file system, keeps the suffix, and is not in ``taken`` (it is added).

    Letters of any script are kept (``猫.jpg`` stays ``猫.jpg``); separators and control characters become ``_``;
    a clash gets ``-2``, ``-3``, ... before the suffix, so no uploaded file silently replaces another.
    """
    name = unicodedata.normalize("NFC", original).replace("\\", "/").rsplit("/", 1)[-1]
    base, dot, ext = name.rpartition(".")
    if dot and ext and len(ext) <= 12 and ext.isascii() and ext.isalnum():
        stem, suffix = base, f".{ext.lower()}"  # ".jpg" alone keeps its suffix: "file.jpg"
    else:
        stem, suffix = name, ""
    stem = "".join(c if (c.isalnum() or c in "._- ") else "_" for c in stem).strip(" .")[:80] or "file"
    candidate, n = f"{stem}{suffix}", 1
    while candidate.casefold() in taken:
        n += 1
        candidate = f"{stem}-{n}{suffix}"
    taken.add(candidate.casefold())
    return candidate


def _member_parts(filename: str) -> list[str] | None:
    """Path parts of a zip member, or ``None`` when it is unsafe (absolute, ``..``, a drive letter)."""
    raw = filename.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        return None
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        return None
    return parts


def _why_unreadable(err: BaseException) -> str:
    if isinstance(err, RuntimeError) and "encrypted" in str(err).lower():
        return "encrypted zip member (passwords are not supported)"
    if isinstance(err, NotImplementedError):
        return f"unsupported compression method ({err})"
    if isinstance(err, zipfile.BadZipFile | zlib.error | EOFError):
        return f"corrupt zip member ({err})"
    return f"unreadable zip member ({type(err).__name__})"


def unpack_zip(archive: Path, dest: Path, limits: ArchiveLimits | None = None, label: str | None = None) -> Unpacked:
    """Unpack ``archive`` into ``dest`` (which must not exist yet) following the rules of the module docstring.

    Folders inside the archive are kept (they carry labels); names are made safe and unique per folder.
    ``label`` names the archive in skip reasons (default: its file name).
    """
    limits = limits or ArchiveLimits()
    label = label or archive.name
    if dest.exists():
        raise DataError(f"{label}: target folder already exists")
    tmp = partial_dir(dest)  # private: two unpacks of the same archive at once never share it
    result = Unpacked(dest)
    try:
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError):
            raise DataError(f"{label}: not a valid zip file") from None
        with zf:
            members = [m for m in zf.infolist() if not m.is_dir()]
            if len(members) > limits.max_members:
                raise DataError(f"{label} holds {len(members)} files, over the {limits.max_members} limit")
            declared = sum(m.file_size for m in members)
            if declared > limits.max_total_bytes:
                raise DataError(f"{label} unpacks to {declared / 1e6:.0f} MB, over the "
                                f"{limits.max_total_bytes / 1e6:g} MB limit")
            taken: dict[Path, set[str]] = {}
            total = 0
            for info in members:
                shown = f"{label}/{info.filename}"
                parts = _member_parts(info.filename)
                if parts is None:
                    result.skipped.append((shown, "unsafe path in archive"))
                    continue
                if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
                    result.ignored += 1  # hidden files and macOS resource forks: not user content
                    continue
                if info.file_size > limits.max_member_bytes:
                    result.skipped.append((shown, f"too large ({info.file_size / 1e6:.1f} MB > "
                                                  f"{limits.max_member_bytes / 1e6:g} MB limit)"))
                    continue
                folder = tmp.joinpath(*[safe_name(p) for p in parts[:-1]])
                target = folder / storage_name(parts[-1], taken.setdefault(folder, set()))
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    written = _copy_member(zf, info, target, limits.max_member_bytes)
                except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, OSError,
                        ValueError) as err:
                    target.unlink(missing_ok=True)
                    result.skipped.append((shown, _why_unreadable(err)))
                    continue
                total += written
                if total > limits.max_total_bytes:
                    raise DataError(f"{label} unpacks to over {limits.max_total_bytes / 1e6:g} MB")
                result.files += 1
        result.bytes = total
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, max_bytes: int) -> int:
    """Copy one member, refusing to write more than ``max_bytes`` whatever its header claims."""
    written = 0
    with zf.open(info) as src, open(target, "wb") as out:
        while chunk := src.read(1 << 20):
            written += len(chunk)
            if written > max_bytes:
                raise ValueError("member larger than its declared size")
            out.write(chunk)
    return written


def unpack_to_cache(archive: Path, limits: ArchiveLimits | None = None) -> tuple[Path, list[tuple[str, str]]]:
    """Unpack a gallery zip once into the cache (keyed by its content hash); ``(folder, skipped members)``."""
    target = cache_dir() / "unpacked" / f"{safe_name(archive.stem)}-{file_digest(archive, 'sha1')[:16]}"
    if target.is_dir():
        return target, []
    with file_lock(target.parent / f".{target.name}.lock"):  # the same zip twice at once: unpacked once
        if target.is_dir():
            return target, []
        result = unpack_zip(archive, target, limits)
    return target, result.skipped

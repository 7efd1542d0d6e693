"""The local backend's queue is a folder: specs wait as ticket files, a worker claims one by renaming it into its own
folder (atomic: exactly one claimant wins), and the run folder says everything else.

Layout under the queue root (default ``<cache>/queue``)::

    pending/<created>-<run_id>.json     waiting, oldest first (the file name sorts by submission time)
    workers/<host>-<pid>/worker.json    a live worker's heartbeat: slot, device, current run, updated
    workers/<host>-<pid>/<ticket>.json  the ticket that worker claimed (at most one)
    logs/<slot>.log                     what supervised workers print

Nothing lives in memory: any process -- the app, a restarted app, ``python -m clipforget worker`` on another
machine that mounts the same folder -- sees the same queue. A ticket names its run folder relative to the queue's
parent (the cache folder) when it lies inside it, so machines may mount the shared folder at different paths.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from collections.abc import Container
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clipforget.core.atomic import read_json, write_json
from clipforget.pipeline.folder import pid_alive

from .job import mark_dead
from .spec import RunSpec

HEARTBEAT_FILE = "worker.json"
WARM_UP_FILE = "warm-up.json"  # the app's default run, for workers to prepare while idle
WARM_UP_DONE_FILE = "warm-up.done.json"


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host; a zombie (exited, not yet reaped -- an orphan under an init that
    does not reap) counts as gone."""
    if not pid_alive(pid):
        return False
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except OSError:
        return True  # no /proc (macOS): trust the signal probe
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def host_name() -> str:
    return socket.gethostname()


def worker_id(pid: int | None = None, host: str | None = None) -> str:
    return f"{host or host_name()}-{pid or os.getpid()}"


@dataclass
class Ticket:
    """A queued or claimed run: where its ticket file is and which run folder it names."""

    path: Path
    run_id: str
    run_dir: Path
    owner: str
    created: float
    worker: str | None = None  # the claiming worker's id (None while pending)


class WorkQueue:
    """The queue folder (see the module docstring)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.pending = self.root / "pending"
        self.workers = self.root / "workers"
        self.logs = self.root / "logs"
        for folder in (self.pending, self.workers, self.logs):
            folder.mkdir(parents=True, exist_ok=True)

    @property
    def base(self) -> Path:
        """Run folders inside this folder are stored relative to it (the cache folder holding ``queue/``)."""
        return self.root.resolve().parent

    # warm-up -------------------------------------------------------------------------------------------------------
    def set_warm_up(self, spec: RunSpec) -> None:
        """Ask this queue's workers to prepare, while idle, what the first run like ``spec`` would pay once."""
        write_json(self.root / WARM_UP_FILE, asdict(spec))

    def warm_up(self, taken: Container[int] = ()) -> tuple[int, RunSpec] | None:
        """``(stamp, spec)`` of the latest warm-up asked for (the stamp changes with each ask), or ``None`` -- also
        when its stamp is in ``taken`` (a poll then costs one ``stat``)."""
        path = self.root / WARM_UP_FILE
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            return None
        if stamp in taken:
            return None
        data = read_json(path)
        return (stamp, RunSpec.from_dict(data)) if data.get("run_id") else None

    def warm_up_done(self, stamp: int, report: dict[str, Any]) -> None:
        write_json(self.root / WARM_UP_DONE_FILE, {"stamp": stamp, **report})

    # tickets -------------------------------------------------------------------------------------------------------
    def put(self, spec: RunSpec, run_dir: Path) -> Ticket:
        """Queue ``spec`` (already written to ``run_dir``); returns its ticket."""
        run_dir = Path(run_dir).resolve()
        try:
            stored = str(run_dir.relative_to(self.base))
        except ValueError:
            stored = str(run_dir)
        path = self.pending / f"{spec.created:017.6f}-{spec.run_id}.json"
        write_json(path, {"run_id": spec.run_id, "run_dir": stored, "owner": spec.owner, "created": spec.created,
                          "submitted": time.time()})
        return Ticket(path, spec.run_id, run_dir, spec.owner, spec.created)

    def _read(self, path: Path, worker: str | None) -> Ticket | None:
        data = read_json(path)
        if not data.get("run_id"):
            return None
        run_dir = Path(data["run_dir"])
        return Ticket(path, data["run_id"], run_dir if run_dir.is_absolute() else self.base / run_dir,
                      str(data.get("owner", "")), float(data.get("created") or 0), worker)

    def pending_tickets(self) -> list[Ticket]:
        """Waiting tickets, oldest first."""
        return [t for t in (self._read(p, None) for p in sorted(_json_files(self.pending))) if t is not None]

    def claimed_tickets(self) -> list[Ticket]:
        tickets = (self._read(path, folder.name) for folder in _folders(self.workers) for path in _json_files(folder)
                   if path.name != HEARTBEAT_FILE)
        return [t for t in tickets if t is not None]

    def claim(self, worker_dir: Path) -> Ticket | None:
        """Move the oldest pending ticket into ``worker_dir``; ``None`` when nothing waits (or others won)."""
        for path in sorted(_json_files(self.pending)):
            target = Path(worker_dir) / path.name
            try:
                os.rename(path, target)
            except FileNotFoundError:
                continue  # another worker (or a cancel) took it first
            ticket = self._read(target, Path(worker_dir).name)
            if ticket is not None:
                return ticket
            target.unlink(missing_ok=True)  # unreadable ticket: drop it
        return None

    def withdraw(self, run_id: str) -> bool:
        """Remove ``run_id``'s ticket if it is still pending (``False``: claimed already, or unknown)."""
        for path in _json_files(self.pending):
            if path.name.endswith(f"-{run_id}.json"):
                try:
                    path.unlink()
                except FileNotFoundError:
                    return False
                return True
        return False

    # workers -------------------------------------------------------------------------------------------------------
    def worker_dir(self, wid: str) -> Path:
        return self.workers / wid

    def heartbeats(self) -> list[dict[str, Any]]:
        """Every worker folder's heartbeat (``id`` = folder name; empty fields for a folder without one yet)."""
        out = []
        for folder in _folders(self.workers):
            beat = read_json(folder / HEARTBEAT_FILE)
            beat["id"] = folder.name
            beat.setdefault("folder_mtime", folder.stat().st_mtime if folder.exists() else 0.0)
            out.append(beat)
        return out

    def is_alive(self, beat: dict[str, Any], timeout: float) -> bool:
        """A worker on this host is alive while its process is; elsewhere while its heartbeat is fresh."""
        updated = float(beat.get("updated") or beat.get("folder_mtime") or 0.0)
        if beat.get("host") == host_name() and beat.get("pid"):
            return process_alive(int(beat["pid"]))
        return time.time() - updated < timeout

    def retire(self, wid: str, reason: str) -> list[str]:
        """A worker is gone: each run it had claimed is marked interrupted with ``reason``; its folder is removed.
        Returns the run ids it interrupted."""
        folder = self.worker_dir(wid)
        failed = []
        for path in _json_files(folder):
            if path.name == HEARTBEAT_FILE:
                continue
            ticket = self._read(path, wid)
            if ticket is not None:
                mark_dead(ticket.run_dir, reason)
                failed.append(ticket.run_id)
            path.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        return failed

    def reap(self, timeout: float = 60.0, skip: set[str] | None = None) -> list[str]:
        """Retire every dead worker (except ids in ``skip``: a supervisor's own children, retired with their exit
        status); returns the run ids this interrupted."""
        failed = []
        for beat in self.heartbeats():
            if skip and beat["id"] in skip:
                continue
            if not beat.get("pid") and time.time() - float(beat.get("folder_mtime") or 0) < timeout:
                continue  # a worker that is starting: its folder exists before its first heartbeat
            if not self.is_alive(beat, timeout):
                here = beat.get("host") == host_name()
                where = f" on {beat['host']}" if beat.get("host") and not here else ""
                why = "its process is gone (killed or crashed)" if here else f"no heartbeat for {timeout:.0f} s"
                name = beat.get("label") or beat["id"]
                failed += self.retire(beat["id"], f"worker {name}{where} stopped while running this run: {why}")
        return failed


def _json_files(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.suffix == ".json" and not p.name.startswith(".")]
    except FileNotFoundError:
        return []


def _folders(folder: Path) -> list[Path]:
    try:
        return [p for p in folder.iterdir() if p.is_dir()]
    except FileNotFoundError:
        return []

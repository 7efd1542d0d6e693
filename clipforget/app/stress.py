"""The stress test of an opened run, as the app runs it (:func:`clipforget.pipeline.stress.stress_test`): in a
thread of its own, one at a time per workspace and on the whole server (it holds a model, the gallery's activations
and, with relearning, minutes of CPU), with its progress readable while it works.

Which photos are the subgroup's: a preset that knows where its subgroup lies in the built-in galleries (the monkeys
preset: ``monkeys10/val/pygmy_marmoset/``...) names them when the chosen gallery holds them; otherwise the run's own
held-out forget photos are added to the gallery (the library's default).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from clipforget.core.errors import DataError
from clipforget.pipeline.stress import StressConfig, read_stress, stress_test

from .explore import RunView
from .galleries import Galleries
from .presets import PRESETS
from .runs import Runs

MAX_TEXTS = 20  # the user's own texts, one per line
MAX_TEXT_CHARS = 200
BUSY_HERE = "a stress test is already running in this workspace: wait for it to finish"
NO_SUBGROUP = ("this run did not record held-out photos of its subgroup (an older run) and the chosen gallery holds "
               "none the app knows of: start the run again, or pick a gallery that holds the subgroup's photos")
BUSY_SERVER = "another stress test is running on this server (one at a time): try again in a few minutes"


def parse_texts(raw: object) -> list[str]:
    """The user's own texts: one per non-empty line, at most :data:`MAX_TEXTS` of at most :data:`MAX_TEXT_CHARS`
    characters each (refused, not cut: a cut text is not what the user meant)."""
    if raw is None:
        return []
    if not isinstance(raw, str):
        raise DataError("your texts must be text")
    lines = list(dict.fromkeys(line.strip() for line in raw.splitlines() if line.strip()))
    if len(lines) > MAX_TEXTS:
        raise DataError(f"at most {MAX_TEXTS} texts of your own ({len(lines)} given)")
    for line in lines:
        if len(line) > MAX_TEXT_CHARS:
            raise DataError(f"each text may have {MAX_TEXT_CHARS} characters at most ({len(line)} given)")
        if any(ord(c) < 32 for c in line):
            raise DataError("your texts may not hold control characters")
    return lines


def subgroup_parts(view: RunView, paths: list[str]) -> list[str]:
    """The path parts of the subgroup's held-out photos in a gallery of ``paths``: the run's preset's, where the
    gallery holds photos under them; none otherwise (the run's own held-out photos are used)."""
    source = (view.spec.source or {}) if view.spec else {}
    preset = PRESETS.get(str(source.get("preset") or ""))
    if preset is None or not preset.subgroup:
        return []
    choice = source.get("option") or preset.default_choice()
    parts = [p.format(choice=choice) for p in preset.subgroup]
    norm = [p.replace("\\", "/") for p in paths]
    found = [part for part in parts if any(part in p for p in norm)]
    return found if found == parts else []  # a gallery with only some of them: the run's own photos, not a part


@dataclass
class StressJob:
    """One stress test in its thread: where it is, then its result or its error."""

    owner: str
    run_id: str
    stage: str = "starting"
    fraction: float = 0.0
    message: str = "starting"
    started: float = field(default_factory=time.time)
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def progress(self, stage: str, fraction: float, message: str) -> None:
        # the library reports the gallery read and the sweep under "stress", relearning under its own stage: one bar
        self.stage = stage
        self.fraction = 0.4 + 0.6 * float(fraction) if stage == "relearning" else float(fraction)
        self.message = message

    @property
    def elapsed(self) -> float:
        return time.time() - self.started


class StressTests:
    """Starts the stress test of an owner's finished run, at most one per workspace and one on the server."""

    def __init__(self, runs: Runs, galleries: Galleries):
        self.runs = runs
        self.galleries = galleries
        self.cfg = StressConfig()
        self._jobs: dict[str, StressJob] = {}  # owner -> the running (or last) job
        self._lock = threading.Lock()

    def existing(self, owner: str, run_id: str) -> dict[str, Any]:
        """The owner's run's last stress test (empty when it has none)."""
        return read_stress(self.runs.open(owner, run_id).folder)

    def running(self, owner: str) -> StressJob | None:
        with self._lock:
            job = self._jobs.get(owner)
        return job if job is not None and not job.done.is_set() else None

    def start(self, owner: str, run_id: str, gallery: str, relearning: bool = False,
              texts: list[str] | tuple[str, ...] = ()) -> StressJob:
        """Start the stress test of the owner's finished run ``run_id`` over ``gallery``; refused while another
        runs in this workspace or on the server."""
        view = self.runs.open(owner, run_id)  # the owner's, finished: "no such run" for anyone else's
        with self._lock:
            if any(not j.done.is_set() for j in self._jobs.values()):
                mine = self._jobs.get(owner)
                raise DataError(BUSY_HERE if mine is not None and not mine.done.is_set() else BUSY_SERVER)
            job = self._jobs[owner] = StressJob(owner, run_id)
        try:
            self.runs.require_quota(owner)
            gal = self.galleries.get(view.model_spec, gallery)  # the gallery the explore view shows
            parts = subgroup_parts(view, gal.paths)
            device = str(self.runs.models.device)
        except BaseException:
            job.done.set()  # a start that fails leaves the workspace and the server free
            raise

        def work() -> None:
            try:
                job.result = stress_test(view.folder, gal.index, parts, None, (), list(texts), bool(relearning),
                                         self.cfg, device, job.progress)
            except DataError as err:
                # the library's advice names a CLI flag the page does not have
                job.error = DataError(NO_SUBGROUP) if "--subgroup" in str(err) else err
            except BaseException as err:  # handed to the page by the handler that follows the job
                job.error = err
            finally:
                job.done.set()

        threading.Thread(target=work, name=f"stress-{run_id}", daemon=True).start()
        return job

"""What a run is, as data: :class:`RunSpec` is written to the run folder (``job.json``) before any work starts, so a
worker in another process -- or on another machine -- needs nothing else to run it, and a restarted app can list it."""

from __future__ import annotations

import secrets
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clipforget.core.atomic import read_json, write_json
from clipforget.core.paths import safe_name

SPEC_FILE = "job.json"


@dataclass
class RunSpec:
    """One run: who asked, which model / setting / options / profile / method, and which gallery to precompute."""

    run_id: str
    owner: str
    title: str
    model: str
    setting: str
    options: dict[str, Any] = field(default_factory=dict)
    profile: str = "fast"
    method: str = "ours"
    seed: int = 0
    gallery: str | None = None  # gallery whose alpha grid is computed at the end of the run
    gallery_sources: list[str] = field(default_factory=list)  # its image folders
    source: dict[str, Any] = field(default_factory=dict)  # what the user picked (preset / upload), for display
    created: float = field(default_factory=time.time)

    @staticmethod
    def new_id(title: str) -> str:
        return f"{time.strftime('%Y%m%d-%H%M%S')}-{safe_name(title.lower())[:40]}-{secrets.token_hex(4)}"

    def write(self, run_dir: Path) -> None:
        write_json(Path(run_dir) / SPEC_FILE, asdict(self))

    @classmethod
    def read(cls, run_dir: Path) -> RunSpec | None:
        data = read_json(Path(run_dir) / SPEC_FILE)
        return cls.from_dict(data) if data else None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def reproduce_command(self) -> str:
        """The CLI command that runs this spec again (folders named by their role, never by their server path;
        the app's profile is the CLI's size preset of the same name's data)."""
        model = str(self.source.get("model", self.model))
        model = model if ":" in model or "/" not in model else Path(model).name
        if self.setting == "folders":
            opts = self.options
            parts = ["python -m clipforget unlearn --forget forget/ --retain retain/",
                     f"--label {shlex.quote(str(opts.get('label', '')))}"]
            if opts.get("retain_label"):
                parts.append(f"--retain-label {shlex.quote(str(opts['retain_label']))}")
            if opts.get("calibration_dir"):
                parts.append("--calibration calibration/")
            parts += [f"--forget-prompt {shlex.quote(str(p))}" for p in opts.get("forget_prompts") or []]
        else:
            parts = [f"python -m clipforget run {self.setting}"]
            parts += [f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in self.options.items()
                      if k in ("forget_class", "forget_style") and v is not None]
        parts += [f"--model {shlex.quote(model)}", f"--method {self.method}", f"--seed {self.seed}",
                  f"--out runs/{self.run_id}", f"  # app profile '{self.profile}'"]
        return " ".join(parts)

"""A run folder: the contract between whoever runs a method (CLI, worker process, Ray task) and whoever reads it.

Layout: ``status.json`` (written first and last), ``config.json``, ``progress.json`` (live, optional),
``layer_ranking.json``, ``alpha_curve.json``, ``method_log.json``, ``metrics.json``, ``model/`` (theta(alpha*)),
``unlearned/`` (theta at alpha = 1, for alpha grids) and ``alpha_grid/<gallery>/``. Every file is written atomically
and ``status.json`` says ``done`` only after all of them exist, so a killed run is never mistaken for a finished one.
:class:`RunFolder` is the one place that decides "is this run done?" and loads what a run produced.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from clipforget.core.atomic import read_json, write_json
from clipforget.core.errors import ModelLoadError
from clipforget.core.paths import safe_name
from clipforget.models.factory import (
    CONFIG_FILE,
    ClipBundle,
    bundled_model_has,
    bundled_models,
    bundled_name_for,
    create_model,
    is_bundled_form,
    load_checkpoint,
    load_config,
    weights_digest,
)
from clipforget.models.weights import State
from clipforget.retrieval.alpha_grid import alpha_grid_dir

STATES_ACTIVE = ("queued", "running")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True


def forget_text_subject(text: str) -> str:
    """``a photo of a marmoset.`` -> ``marmoset`` (a forget text as a person names it)."""
    text = text.strip().rstrip(".")
    for lead in ("a photo of a ", "a photo of an ", "a photo of "):
        if text.lower().startswith(lead):
            return text[len(lead):]
    return text


class RunFolder:
    """One run on disk (see the module docstring)."""

    STATUS = "status.json"
    CONFIG = "config.json"
    PROGRESS = "progress.json"
    METRICS = "metrics.json"
    ALPHA_CURVE = "alpha_curve.json"
    METHOD_LOG = "method_log.json"
    EVAL_CURVE = "eval_curve.json"  # every evaluation set's accuracy on the alpha grid (written by the app's worker)
    TRAINED_ON = "trained_on.json"  # which gallery images trained the run and which were held out (selections)

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    # status ------------------------------------------------------------------------------------------------------
    def write_status(self, state: str, **fields: Any) -> None:
        """Replace ``status.json``; a running state records this process and host, so a dead one is detected."""
        status = {"state": state, "updated": time.time(), **fields}
        if state == "running":
            status.setdefault("pid", os.getpid())
            status.setdefault("host", socket.gethostname())
        write_json(self.path / self.STATUS, status)

    def status(self) -> dict[str, Any]:
        """The run's status; a ``running`` run whose process is gone (on this host) reads as ``interrupted``."""
        status = read_json(self.path / self.STATUS)
        if not status:
            return {"state": "missing"}
        if status.get("state") == "running" and status.get("host", socket.gethostname()) == socket.gethostname() \
                and not pid_alive(status.get("pid")):
            status["state"] = "interrupted"
            status.setdefault("error", "the process running this run stopped before it finished (killed or crashed)")
        return status

    @property
    def state(self) -> str:
        return str(self.status().get("state"))

    def is_done(self) -> bool:
        return self.state == "done" and (self.path / self.METRICS).is_file()

    def require_done(self) -> None:
        if not self.is_done():
            raise ModelLoadError(f"run {self.name} is not finished (state: {self.state})")

    # files ---------------------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return read_json(self.path / self.CONFIG)

    def differences(self, spec: str, config: Any) -> list[str]:
        """Why this run cannot stand for a run of ``config`` on base model ``spec`` today: the changed settings, plus
        ``model`` (another base model) or ``model_weights`` (its name now loads other weights); empty when it can."""
        changed = config_changes(self.config().get("config"), config)
        if self.model_spec != spec:
            return ["model", *changed]
        if self.base_weights_changed() or self.base_model_retired():
            return ["model_weights", *changed]
        return changed

    def base_model_retired(self) -> bool:
        """The run was made on a bundled model this version no longer has: no bundled model today has the
        architecture of the run's checkpoint (a retired model, or a name that now holds another one)."""
        recorded = str(self.config().get("model", ""))
        checkpoint = self.path / "model"
        if not is_bundled_form(recorded) or not (checkpoint / CONFIG_FILE).is_file():
            return False
        return not bundled_model_has(self.model_spec, load_config(checkpoint))

    def base_weights_changed(self) -> bool:
        """The run recorded its base model's weights and the spec now loads others (a bundled model rebuilt)."""
        recorded = self.config().get("model_weights")
        today = weights_digest(self.model_spec) if recorded else None
        return today is not None and recorded != today

    def metrics(self) -> dict[str, Any]:
        return read_json(self.path / self.METRICS)

    def progress(self) -> dict[str, Any]:
        return read_json(self.path / self.PROGRESS)

    def method_log(self) -> dict[str, Any]:
        return read_json(self.path / self.METHOD_LOG)

    def forget_texts(self) -> list[str]:
        """The texts the run made the forget images stop matching besides their label: the user's and the ones the
        method found (``mined``); empty for methods without them. The other names the method also trained against
        (``paraphrases``, D34) are :meth:`paraphrase_texts`."""
        log = self.method_log()
        other = {str(p.get("text")) for p in log.get("paraphrases") or []}
        return [str(t) for t in log.get("forget_texts") or [] if str(t) not in other]

    def paraphrase_texts(self) -> list[str]:
        """The other names of the subgroup the method trained against besides :meth:`forget_texts` (D34)."""
        return [str(p.get("text")) for p in self.method_log().get("paraphrases") or []]

    def forgotten_names(self) -> list[str]:
        """:meth:`forget_texts` as the names they say (``a photo of a marmoset.`` -> ``marmoset``)."""
        return [forget_text_subject(t) for t in self.forget_texts()]

    def subgroup_names(self) -> list[str]:
        """The names that find the forgotten images: :meth:`forgotten_names`, else (a class forgotten under its own
        label, where nothing is mined) the forget images' labels."""
        return self.forgotten_names() or [str(x) for x in read_json(self.path / "task.json").get("forget_labels", [])]

    def eval_curve(self) -> list[dict[str, float]]:
        return list(read_json(self.path / self.EVAL_CURVE).get("curve", []))

    def trained_on(self) -> dict[str, Any]:
        """For a run made from a gallery selection: ``{"gallery": name, "trained": [paths], "heldout": [paths],
        "forget": [paths]}`` (the gallery images it trained on, those held out for calibration and evaluation, and
        the selection's forget images, both shares); empty for other runs."""
        return read_json(self.path / self.TRAINED_ON)

    def write_progress(self, progress: dict[str, Any]) -> None:
        write_json(self.path / self.PROGRESS, {**progress, "updated": time.time()})

    def calibration(self) -> dict[str, Any]:
        """``{"alpha": chosen alpha or None, "curve": [...]}`` (empty for methods without a soup)."""
        return read_json(self.path / self.ALPHA_CURVE)

    @property
    def chosen_alpha(self) -> float:
        """The calibrated alpha; 1.0 for methods that write no soup (their model is theta_unlearned)."""
        alpha = self.calibration().get("alpha")
        return 1.0 if alpha is None else float(alpha)

    @property
    def model_spec(self) -> str:
        """The base (original) model's spec: the recorded one, or today's name of a bundled model renamed since."""
        recorded = str(self.config().get("model", ""))
        checkpoint = self.path / "model"
        if not recorded or not (checkpoint / CONFIG_FILE).is_file():
            return recorded
        return bundled_name_for(recorded, load_config(checkpoint))

    def grid_dir(self, gallery_name: str) -> Path:
        """Where this run's alpha grid of gallery ``gallery_name`` lives."""
        return alpha_grid_dir(self.path, safe_name(gallery_name))

    # models --------------------------------------------------------------------------------------------------------
    def load_model(self, which: str = "model", device: str = "cpu") -> ClipBundle:
        """A finished run's final (``model``) or pre-restore (``unlearned``) weights; refuses unfinished runs."""
        self.require_done()
        if which == "unlearned" and not (self.path / "unlearned").is_dir():
            which = "model"  # methods without a soup: the final model is theta_unlearned
        return load_checkpoint(self.path / which, device)

    def unlearned_state(self, device: str = "cpu") -> State:
        """theta_unlearned of the image tower (alpha = 1)."""
        return self.load_model("unlearned", device).visual_state()

    def original_model(self, device: str = "cpu") -> ClipBundle:
        """The run's base model (theta_original), by the spec recorded in ``config.json``."""
        self.require_done()
        self.require_same_base()
        return create_model(self.model_spec, device=device)

    def require_same_base(self) -> None:
        """Refuse a run made on a base model that is gone (other weights of its name, or a bundled model no longer
        shipped): its soups would mix two models."""
        if self.base_model_retired():
            raise ModelLoadError(
                f"run {self.name} was made on the bundled model {self.config().get('model')!r}, which this version of "
                f"clipforget no longer ships (bundled now: {', '.join(bundled_models())}); its original model is gone, "
                "so its soup cannot be rebuilt: run it again")
        if self.base_weights_changed():
            raise ModelLoadError(
                f"run {self.name} was made on other weights of {self.model_spec!r} than the ones installed now "
                f"(recorded {self.config().get('model_weights')}, now {weights_digest(self.model_spec)}); its original "
                "model is gone, so its soup cannot be rebuilt: run it again")


def config_changes(recorded: Any, config: Any) -> list[str]:
    """The dotted fields whose value in a recorded config (as a run folder's ``config.json`` holds it) differs from
    ``config`` (a dataclass): a finished run is reused only when nothing differs — not after a ``--set``, nor after a
    default changed."""
    def flat(value: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): value}

    old, new = flat(recorded or {}), flat(json.loads(json.dumps(asdict(config))))
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))

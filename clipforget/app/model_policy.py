"""Which models a client may ask for: an allow-list, checked on the server, answered without touching the model.

Accepted: a bundled model, ``--model`` and every ``--allow-model SPEC``, ``run:<run id>`` of the caller's own finished
runs (resolved to the run's ``model/`` folder, never shown), or anything with ``--allow-any-model`` (a trusted,
single-user set-up). Everything else gets the same refusal whatever the spec names, so replies tell nothing about the
server's files; checking a spec never loads it (a file-exists test at most). See docs/security.md ("Inputs").
"""

from __future__ import annotations

from pathlib import Path

from clipforget.core.errors import DataError
from clipforget.models.factory import CONFIG_FILE, WEIGHTS_FILE, bundled_models, find_bundled_checkpoint

from .config import AppConfig

RUN_PREFIX = "run:"


class ModelPolicy:
    """The allow-list of the module docstring. ``run_folder(owner, run_id)`` resolves the caller's own finished run
    (raising :class:`DataError` for anything else); it comes from :class:`clipforget.app.runs.Runs`."""

    def __init__(self, config: AppConfig, run_folder=None):
        self.config = config
        self.run_folder = run_folder

    def listed(self) -> list[str]:
        """Bundled and operator-named models, default first."""
        return list(dict.fromkeys([self.config.model, *bundled_models(), *self.config.allowed_models]))

    def choices(self, own_runs: list[dict] | None = None) -> list[tuple[str, str]]:
        """``(label, spec)`` pairs for the model dropdown: :meth:`listed`, then the caller's finished runs."""
        out = [(spec, spec) for spec in self.listed()]
        for run in own_runs or []:
            if run.get("state") == "done":
                out.append((f"{run['title']} (your run {run['id']})", f"{RUN_PREFIX}{run['id']}"))
        return out

    def resolve(self, spec: str | None, owner: str) -> str:
        """The spec a run of ``owner`` may use for ``spec`` (``None``: the default model); refuses the rest."""
        spec = (spec or "").strip() or self.config.model
        if spec.startswith(RUN_PREFIX):
            if self.run_folder is None:
                raise self._refused(spec)
            try:
                folder = self.run_folder(owner, spec[len(RUN_PREFIX):])
            except DataError:
                raise self._refused(spec) from None
            return str(folder / "model")
        if spec in self.listed() or self.config.allow_any_model:
            return spec
        raise self._refused(spec)

    def _refused(self, spec: str) -> DataError:
        shown = spec if len(spec) <= 80 else spec[:77] + "..."
        return DataError(f"model {shown!r} is not offered on this server; choose one of "
                         f"{', '.join(self.listed())} or one of your finished runs (the operator can allow more "
                         "with --allow-model)")

    def describe(self, spec: str | None, owner: str) -> str:
        """A one-line, path-free status of ``spec`` for the page, without loading it."""
        resolved = self.resolve(spec, owner)
        shown = (spec or "").strip() or self.config.model
        if shown.startswith(RUN_PREFIX):
            ready = (Path(resolved) / WEIGHTS_FILE).is_file()
        elif resolved in bundled_models():
            ready = find_bundled_checkpoint(resolved, self.config.cache_dir) is not None
        elif Path(resolved).is_dir():
            ready = (Path(resolved) / WEIGHTS_FILE).is_file() and (Path(resolved) / CONFIG_FILE).is_file()
        else:  # an operator-allowed open_clip NAME:TAG: the worker's loader says whether its weights are here
            return f"Model **{shown}** is allowed; it loads on the worker when a run starts."
        if not ready:
            raise DataError(f"model {shown!r} has no weights on this server (ask the operator to install them)")
        return f"Model **{shown}** is available; it loads on the worker when a run starts."

"""Export theta(alpha) of a run as an open_clip-style checkpoint folder with a model card, zipped."""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from clipforget.core.atomic import write_text
from clipforget.core.escape import md_text
from clipforget.core.locks import path_lock
from clipforget.models.factory import save_checkpoint
from clipforget.models.weights import soup
from clipforget.pipeline.report import SCORE_EXPLAINED

from . import validate
from .explore import RunView
from .workspaces import export_stem


def export_run(view: RunView, exports_dir: Path, alpha: float | None = None) -> Path:
    """Zip theta(alpha) (default: the calibrated alpha) as ``open_clip_config.json`` + safetensors + README.md.

    Safe when the same export is asked for twice at once (a double click, two tabs): one writer per target at a
    time (:func:`~clipforget.core.locks.path_lock`), the second finds the first's zip and returns it; everything
    is written in a private temporary folder and the zip renamed into place, so a reader never sees a half-written
    zip and no temporary file ever ships in one."""
    alpha = view.chosen_alpha if alpha is None else validate.alpha(alpha)
    exports_dir = Path(exports_dir)
    exports_dir.mkdir(parents=True, exist_ok=True)
    stem = export_stem(view.dir.name, alpha)
    archive = exports_dir / f"{stem}.zip"
    with path_lock(archive):  # exports are written by the app's process only
        if archive.is_file():  # made by the caller we waited for (or earlier): the run and alpha fix its content
            return archive
        work = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".partial", dir=exports_dir))
        try:
            model_dir = work / "model"
            if abs(alpha - view.chosen_alpha) < 1e-9:
                model_dir.mkdir()
                for f in (view.dir / "model").iterdir():
                    if _ships(f.name):
                        shutil.copyfile(f, model_dir / f.name)
            else:
                bundle = view.models.get(view.model_spec)
                theta_u, theta_0 = view.states()
                meta = {"run": view.dir.name, "alpha": alpha, "base_model": view.model_label,
                        "task": view.config.get("task")}
                save_checkpoint(bundle.with_visual_state(soup(theta_u, theta_0, alpha)), model_dir, metadata=meta)
            write_text(model_dir / "README.md", model_card(view, alpha))
            partial = work / "export.zip"
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
                for f in sorted(model_dir.iterdir()):
                    if f.is_file() and _ships(f.name):
                        zf.write(f, f"{view.dir.name}/{f.name}")
            os.replace(partial, archive)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return archive


def _ships(name: str) -> bool:
    """A model file that belongs in an export: not hidden, not a temporary file of an atomic write."""
    return not name.startswith(".") and not name.endswith((".tmp", ".partial", ".lock"))


def model_card(view: RunView, alpha: float) -> str:
    """The exported model's README.md: what was forgotten, with which data, alpha and metrics."""
    m = md_text  # every word in the card, typed or not, is Markdown text: no HTML, no links (docs/security.md)
    cfg = view.config
    described = view.spec.source.get("described", {}) if view.spec else {}
    headers, rows = view.metrics_table(alpha)
    table = "\n".join(["| " + " | ".join(m(h) for h in headers) + " |", "|" + "---|" * len(headers)]
                      + ["| " + " | ".join(m(x) for x in row) + " |" for row in rows])
    sizes = cfg.get("sizes", {})
    return f"""# clipforget model: {m(view.title)}

A CLIP model whose image tower was made to forget a subgroup with clipforget's three-stage method
(forget: relative-Fisher LoRA -> remind: BN-aligned knowledge distillation with EMA -> restore: model soup).
The text tower is unchanged.

- **Forgotten:** {m(described.get('forget', cfg.get('task')))} (task: {m(cfg.get('task'))})
- **Kept:** {m(described.get('retain', ''))}
- **Base model:** {m(view.model_label)}
- **Data:** {m(sizes.get('forget', '?'))} forget / {m(sizes.get('retain', '?'))} retain training images; calibration
  {m(sizes.get('calibration_forget', '?'))} forget / {m(sizes.get('calibration_retain', '?'))} retain images
  ({m(described.get('calibration', 'held out, never trained on'))});
  zero-shot classes: {m(', '.join(str(c) for c in cfg.get('classnames', [])))}
- **alpha:** {alpha:.2f} (theta = alpha * theta_unlearned + (1 - alpha) * theta_original; calibrated alpha* =
  {view.chosen_alpha:.2f})
- **Run profile:** {m(view.spec.profile if view.spec else '?')}; run id `{view.dir.name}`

## Zero-shot accuracy (evaluation sets, at this alpha)

{table}

{m(SCORE_EXPLAINED)}

## Loading

```python
from clipforget.models.factory import load_checkpoint
bundle = load_checkpoint("this-folder")  # bundle.model is an open_clip CLIP / CustomTextCLIP
```

or on the command line: `python -m clipforget ... --model this-folder`. The folder holds `open_clip_config.json`
(open_clip's model config under `model_cfg`) and `open_clip_model.safetensors`; weights of frozen parts shipped with
their Python package (listed in `frozen_prefixes`) are left out.
"""

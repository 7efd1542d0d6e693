"""Export theta(alpha) of a run as an open_clip-style checkpoint folder with a model card, zipped."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from clipforget.core.atomic import write_text
from clipforget.models.factory import save_checkpoint
from clipforget.models.weights import soup

from . import validate
from .explore import RunView
from .workspaces import export_stem


def export_run(view: RunView, exports_dir: Path, alpha: float | None = None) -> Path:
    """Zip theta(alpha) (default: the calibrated alpha) as ``open_clip_config.json`` + safetensors + README.md."""
    alpha = view.chosen_alpha if alpha is None else validate.alpha(alpha)
    out = Path(exports_dir) / export_stem(view.dir.name, alpha)
    if out.exists():
        shutil.rmtree(out)
    model_dir = out / "model"
    if abs(alpha - view.chosen_alpha) < 1e-9:
        model_dir.mkdir(parents=True)
        for f in (view.dir / "model").iterdir():
            shutil.copyfile(f, model_dir / f.name)
    else:
        bundle = view.models.get(view.model_spec)
        theta_u, theta_0 = view.states()
        meta = {"run": view.dir.name, "alpha": alpha, "base_model": view.model_label, "task": view.config.get("task")}
        save_checkpoint(bundle.with_visual_state(soup(theta_u, theta_0, alpha)), model_dir, metadata=meta)
    write_text(model_dir / "README.md", model_card(view, alpha))
    archive = out.with_suffix(".zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(model_dir.iterdir()):
            zf.write(f, f"{view.dir.name}/{f.name}")
    shutil.rmtree(out)
    return archive


def model_card(view: RunView, alpha: float) -> str:
    """The exported model's README.md: what was forgotten, with which data, alpha and metrics."""
    cfg = view.config
    described = view.spec.source.get("described", {}) if view.spec else {}
    headers, rows = view.metrics_table(alpha)
    table = "\n".join(["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
                      + ["| " + " | ".join(str(x) for x in row) + " |" for row in rows])
    sizes = cfg.get("sizes", {})
    return f"""# clipforget model: {view.title}

A CLIP model whose image tower was made to forget a subgroup with clipforget's three-stage method
(forget: relative-Fisher LoRA -> remind: BN-aligned knowledge distillation with EMA -> restore: model soup).
The text tower is unchanged.

- **Forgotten:** {described.get('forget', cfg.get('task'))} (task `{cfg.get('task')}`)
- **Kept:** {described.get('retain', '')}
- **Base model:** `{view.model_label}`
- **Data:** {sizes.get('forget', '?')} forget / {sizes.get('retain', '?')} retain training images; calibration
  {sizes.get('calibration_forget', '?')} forget / {sizes.get('calibration_retain', '?')} retain images
  ({described.get('calibration', 'held out, never trained on')});
  zero-shot classes: {', '.join(cfg.get('classnames', []))}
- **alpha:** {alpha:.2f} (theta = alpha * theta_unlearned + (1 - alpha) * theta_original; calibrated alpha* =
  {view.chosen_alpha:.2f})
- **Run profile:** {view.spec.profile if view.spec else '?'}; run id `{view.dir.name}`

## Zero-shot accuracy (evaluation sets, at this alpha)

{table}

Score = mean of (1 - target ratio) and every kept set's ratio, ratio = min(acc / acc_original, 1), in percent.

## Loading

```python
from clipforget.models.factory import load_checkpoint
bundle = load_checkpoint("this-folder")  # bundle.model is an open_clip CLIP / CustomTextCLIP
```

or on the command line: `python -m clipforget ... --model this-folder`. The folder holds `open_clip_config.json`
(open_clip's model config under `model_cfg`) and `open_clip_model.safetensors`; weights of frozen parts shipped with
their Python package (listed in `frozen_prefixes`) are left out.
"""

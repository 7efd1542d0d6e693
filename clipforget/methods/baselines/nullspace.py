"""Null-space projection: remove the target class text direction(s) from the image embedding, without training.

With ``T`` the unit text embeddings of the forget labels and ``Q`` an orthonormal basis of their span, the image
embedding ``e`` becomes ``(I - s Q Q^T) e`` (``s = strength``; 1 removes the directions entirely), so every image's
cosine similarity to the forget labels' texts goes to 0. The projection is folded into the last linear map of the
image tower, so the result is an ordinary weight edit:

* ModifiedResNet (RN50, embedded): ``attnpool.c_proj`` -- ``W <- P W``, ``b <- P b`` (it is the attention pool's
  output projection, whose output is the embedding);
* VisionTransformer: ``proj`` -- ``proj <- proj P``;
* open_clip's timm tower: ``head.proj`` (linear projection) or ``head.mlp.fc2`` (MLP projection, the bundled
  ``embedded``) -- a linear map, ``W <- P W``, ``b <- P b``.

Limitation (by design): it acts on the whole label, not on a subgroup -- when forget and retain images share the
label (subgroup settings) the retained images lose it too.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

from clipforget.core.progress import ProgressFn
from clipforget.data.task import UnlearningTask
from clipforget.methods.registry import MethodOutput, register
from clipforget.methods.training import forget_ids, frozen_state, trainable_copy
from clipforget.models.encode import text_classifier
from clipforget.models.factory import ClipBundle


@dataclass
class NullspaceConfig:
    strength: float = 1.0


def projector(directions: torch.Tensor, strength: float) -> torch.Tensor:
    """``I - strength * Q Q^T`` for the span of the rows of ``directions`` (``k,D``)."""
    q, _ = torch.linalg.qr(directions.float().T)
    return torch.eye(directions.shape[1], device=directions.device) - strength * q @ q.T


def project_output(visual: torch.nn.Module, proj: torch.Tensor) -> str:
    """Fold ``proj`` (``D,D``) into the image tower's output map in place; returns the edited parameter's name."""
    with torch.no_grad():
        for name in OUTPUT_MAPS:
            linear = dict(visual.named_modules()).get(name)
            if isinstance(linear, torch.nn.Linear):
                linear.weight.copy_((proj @ linear.weight.float()).to(linear.weight.dtype))
                if linear.bias is not None:
                    linear.bias.copy_((proj @ linear.bias.float()).to(linear.bias.dtype))
                return name
        if getattr(visual, "proj", None) is not None:
            visual.proj.copy_((visual.proj.float() @ proj).to(visual.proj.dtype))
            return "proj"
    raise ValueError(f"image tower has none of {', '.join(OUTPUT_MAPS)}, proj: cannot fold the projection")


OUTPUT_MAPS = ("attnpool.c_proj", "head.proj", "head.mlp.fc2")


def output_map(cfg: NullspaceConfig, bundle: ClipBundle) -> list[str] | None:
    """The one module the edit changes (``None`` for a ViT, whose ``proj`` is a bare parameter)."""
    modules = dict(bundle.model.visual.named_modules())
    found = [name for name in OUTPUT_MAPS if name in modules]
    return found[:1] or None


@register("nullspace", NullspaceConfig, "training-free: project the target text direction out of the image output",
          layers=output_map)
def nullspace(bundle: ClipBundle, task: UnlearningTask, cfg: NullspaceConfig, progress: ProgressFn) -> MethodOutput:
    start = time.perf_counter()
    classifier = text_classifier(bundle, task.classnames)
    ids = forget_ids(task)
    visual = trainable_copy(bundle)
    edited = project_output(visual, projector(classifier[ids], cfg.strength).to(bundle.device))
    progress("nullspace", 1.0, f"projected {len(ids)} direction(s) out of {edited}")
    log = {"config": asdict(cfg), "directions": [task.classnames[i] for i in ids], "edited": edited,
           "shared_with_retain": sorted(set(task.classnames[i] for i in ids) & set(task.retain.labels))}
    return MethodOutput(frozen_state(visual), log, stage_seconds={"edit": time.perf_counter() - start})

"""A run on cached prefix activations: the task, evaluation sets and method outputs of one run, moved to the part of
the image tower the method can change (:mod:`clipforget.models.prefix`) and back.

Every image of the run goes once through the frozen layers before the method's first layer; the stages, the
calibration curve and the evaluation work from those activations on a :class:`~clipforget.models.prefix.SuffixBundle`,
and the states they return are completed with the original prefix weights before anything is written.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from clipforget.core.progress import ProgressFn, no_progress
from clipforget.data.task import EvalSet, UnlearningTask
from clipforget.methods.registry import MethodOutput, MethodSpec
from clipforget.models.factory import ClipBundle
from clipforget.models.prefix import PrefixCache, SuffixBundle, plan_cut


class PrefixedRun:
    """One run's prefix cache and the conversions between the full tower and the suffix."""

    def __init__(self, cache: PrefixCache):
        self.cache = cache
        self.seconds = 0.0

    @classmethod
    def plan(cls, bundle: ClipBundle, spec: MethodSpec, config: Any) -> PrefixedRun | None:
        """``None`` when the method may change any layer (or the tower cannot be cut before its layers)."""
        layers = spec.layers(config, bundle)
        cut = plan_cut(bundle.model.visual, bundle.example_input(), layers)
        return cls(PrefixCache(bundle, cut)) if cut is not None else None

    @property
    def bundle(self) -> SuffixBundle:
        return self.cache.suffix_bundle

    def prepare(self, task: UnlearningTask, eval_sets: Sequence[EvalSet], progress: ProgressFn = no_progress,
                in_place: bool = False) -> tuple[UnlearningTask, list[EvalSet]]:
        """The task and evaluation sets with activations in place of pixels (each image encoded once).

        ``in_place``: put the activations into the given task and sets instead of copies, so that their pixels can
        be freed as soon as they are encoded (for callers that hand their inputs over and never reuse the pixels).
        """
        start = time.perf_counter()
        parts = ("forget", "retain", "calibration_forget", "calibration_retain", "reference")
        total = sum(len(getattr(task, p)) for p in parts if getattr(task, p) is not None) \
            + sum(len(s.images) for s in eval_sets)
        stage = self.cache.cut.first_suffix_stage
        self.cache.on_encoded = lambda done: progress("prefix", min(done / max(total, 1), 1.0),
                                                     f"{done}/{total} images up to {stage}")
        image_set = self.cache.image_set
        if in_place:
            for part in parts:
                setattr(task, part, image_set(getattr(task, part)))
            for s in eval_sets:
                s.images = image_set(s.images)
            moved, sets = task, list(eval_sets)
        else:
            moved = dataclasses.replace(task, **{p: image_set(getattr(task, p)) for p in parts})
            moved.cancel = task.cancel
            sets = [dataclasses.replace(s, images=image_set(s.images)) for s in eval_sets]
        self.seconds += time.perf_counter() - start
        return moved, sets

    def full_output(self, output: MethodOutput) -> MethodOutput:
        """The method's states completed with the original prefix weights."""
        unlearned = output.unlearned_state
        return dataclasses.replace(output, visual_state=self.cache.full_state(output.visual_state),
                                   unlearned_state=None if unlearned is None else self.cache.full_state(unlearned))

    def describe(self) -> dict[str, Any]:
        """What the run folder's metrics say about the cache."""
        return {"first_cached_stage": self.cache.cut.first_suffix_stage, "tower_kind": self.cache.cut.kind,
                "images": self.cache.images_encoded, "megabytes": round(self.cache.cached_bytes / 2**20, 1),
                "seconds": round(self.seconds, 2)}

    def release(self) -> None:
        self.cache.release()

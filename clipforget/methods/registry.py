"""The method registry: plug-ins behind one signature (like peft's tuners).

A method is ``fn(bundle, task, config, progress) -> MethodOutput``; ``bundle.model`` is the original model and must
be left untouched. A method that changes only some layers says which (``layers``); it may then be handed a bundle
whose image tower is the part from the first of them on, fed with cached activations instead of pixels
(:class:`clipforget.models.prefix.SuffixBundle`): the same code runs either way. Register with
:func:`register`; look up with :func:`get_method` (importing
:mod:`clipforget.methods` registers the built-in ones). Each method has a config
dataclass whose defaults are its recommended settings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

import torch

from clipforget.core.progress import ProgressFn
from clipforget.data.task import UnlearningTask
from clipforget.models.factory import ClipBundle


@dataclass
class MethodOutput:
    """The final image-tower state, plus what a method wants kept in the run folder."""

    visual_state: dict[str, torch.Tensor]
    log: dict[str, Any] = field(default_factory=dict)
    unlearned_state: dict[str, torch.Tensor] | None = None  # before restoring (ours), for alpha grids
    alpha: float | None = None
    alpha_curve: list[dict] | None = None
    ranking: list[dict] | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)


MethodFn = Callable[[ClipBundle, UnlearningTask, Any, ProgressFn], MethodOutput]
# (config, bundle) -> the image-tower modules the method may change or take gradients of; None: any of them
LayersFn = Callable[[Any, ClipBundle], "list[str] | None"]


def any_layer(config: Any, bundle: ClipBundle) -> list[str] | None:
    return None


@dataclass
class MethodSpec:
    name: str
    fn: MethodFn
    config_cls: type
    description: str
    # which layers the method touches: the run caches the activations of everything before them
    # (:mod:`clipforget.models.prefix`) and hands the method a bundle whose tower starts there
    layers: LayersFn = any_layer


_REGISTRY: dict[str, MethodSpec] = {}


def register(name: str, config_cls: type, description: str,
             layers: LayersFn = any_layer) -> Callable[[MethodFn], MethodFn]:
    def decorator(fn: MethodFn) -> MethodFn:
        _REGISTRY[name] = MethodSpec(name, fn, config_cls, description, layers)
        return fn

    return decorator


def get_method(name: str) -> MethodSpec:
    if name not in _REGISTRY:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(available_methods())}")
    return _REGISTRY[name]


def available_methods() -> list[str]:
    """``ours`` first, then the baselines by name."""
    return sorted(_REGISTRY, key=lambda name: (name != "ours", name))


def seed_config(config: Any, seed: int) -> None:
    """Set ``seed`` on a config dataclass and on every nested config dataclass that has one."""
    if hasattr(config, "seed"):
        config.seed = seed
    for f in fields(config) if is_dataclass(config) else []:
        value = getattr(config, f.name)
        if is_dataclass(value):
            seed_config(value, seed)

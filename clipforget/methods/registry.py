"""The method registry: plug-ins behind one signature (like peft's tuners).

A method is ``fn(bundle, task, config, progress) -> MethodOutput``; ``bundle.model`` is the original model and must
be left untouched. Register with :func:`register`; look up with :func:`get_method` (importing
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


@dataclass
class MethodSpec:
    name: str
    fn: MethodFn
    config_cls: type
    description: str


_REGISTRY: dict[str, MethodSpec] = {}


def register(name: str, config_cls: type, description: str) -> Callable[[MethodFn], MethodFn]:
    def decorator(fn: MethodFn) -> MethodFn:
        _REGISTRY[name] = MethodSpec(name, fn, config_cls, description)
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

"""The method registry: plug-ins behind one signature (like peft's tuners).

A method is ``fn(bundle, task, config, progress) -> MethodOutput``; ``bundle.model`` is the original model and must
be left untouched. A method that changes only some layers says which (``layers``); it may then be handed a bundle
whose image tower is the part from the first of them on, fed with cached activations instead of pixels
(:class:`clipforget.models.prefix.SuffixBundle`): the same code runs either way. Register with :func:`register`;
look up with :func:`get_method` (importing :mod:`clipforget.methods` registers the built-in ones). Each method has a
config dataclass whose defaults are its recommended settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
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


def override_config(config: Any, assignment: str) -> None:
    """Apply one ``"dotted.field=value"`` to a method config (the CLI's ``--set``): ``value`` is read as JSON
    (numbers, true / false, null, lists, quoted strings) and otherwise taken as a plain string. Unknown fields and
    values of the wrong kind raise ``ValueError`` naming what the config has."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set expects FIELD=VALUE (e.g. remind.steps=40), got {assignment!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    *parents, name = key.strip().split(".")
    target = config
    for part in parents:
        target = _config_field(target, part, key)
        if not is_dataclass(target):
            raise ValueError(f"--set {key}: {part!r} is a value, not a group of settings")
    current = _config_field(target, name, key)
    if is_dataclass(current):
        raise ValueError(f"--set {key}: {name!r} is a group; set one of its fields: "
                         f"{', '.join(f.name for f in fields(current))}")
    optional = "None" in str(next(f.type for f in fields(target) if f.name == name))
    if not (value is None and optional) and current is not None and not _same_kind(current, value):
        raise ValueError(f"--set {key}: expected a value like {current!r}, got {value!r}")
    if isinstance(current, float) and isinstance(value, int):
        value = float(value)
    setattr(target, name, value)


def _same_kind(current: Any, value: Any) -> bool:
    if isinstance(current, bool) or isinstance(value, bool):
        return isinstance(current, bool) and isinstance(value, bool)
    if isinstance(current, float):
        return isinstance(value, (int, float))
    if isinstance(current, (list, tuple)):
        return isinstance(value, list)
    return isinstance(value, type(current))


def apply_overrides(config: Any, overrides: Mapping[str, Any], prefix: str = "") -> None:
    """The nested-mapping form of :func:`override_config`: ``{"remind": {"steps": 40}}`` sets ``remind.steps``."""
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            apply_overrides(config, value, dotted + ".")
        else:
            override_config(config, f"{dotted}={json.dumps(value)}")


def method_config(name: str, seed: int = 0, overrides: Sequence[str] = ()) -> Any:
    """Method ``name``'s default config, seeded, with the ``overrides`` (``--set`` assignments) that name one of its
    fields applied; an assignment naming a field this config does not have is left to the other methods."""
    config = get_method(name).config_cls()
    seed_config(config, seed)
    for assignment in overrides:
        if has_field(config, assignment.partition("=")[0]):
            override_config(config, assignment)
    return config


def has_field(config: Any, dotted: str) -> bool:
    """Whether ``dotted`` ("remind.steps") names a field of the config."""
    for part in dotted.strip().split("."):
        if not is_dataclass(config) or part not in {f.name for f in fields(config)}:
            return False
        config = getattr(config, part)
    return True


def _config_field(config: Any, name: str, key: str) -> Any:
    known = [f.name for f in fields(config)] if is_dataclass(config) else []
    if name not in known:
        raise ValueError(f"--set {key}: no field {name!r} here; fields: {', '.join(known)}")
    return getattr(config, name)


def seed_config(config: Any, seed: int) -> None:
    """Set ``seed`` on a config dataclass and on every nested config dataclass that has one."""
    if hasattr(config, "seed"):
        config.seed = seed
    for f in fields(config) if is_dataclass(config) else []:
        value = getattr(config, f.name)
        if is_dataclass(value):
            seed_config(value, seed)

"""The settings registry: every paper setting (and the generic folder one) registers a builder and its size presets.

A setting turns options into ``(UnlearningTask, [EvalSet])``. The CLI (``run``, ``bench``), the app's presets and
the run workers all look settings up here, so a new setting is one module that calls :func:`register_setting`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clipforget.core.errors import DataError
from clipforget.data.task import EvalSet, UnlearningTask

SIZE_PRESETS = ("quick", "small", "paper")  # seconds (tests, UI checks) / the CPU benchmarks / the paper's sizes

# build(image_size, seed, sizes, **options) -> (task, evaluation sets)
Builder = Callable[..., tuple[UnlearningTask, list[EvalSet]]]


@dataclass(frozen=True)
class Setting:
    """A registered setting: its builder, its named data sizes and the option a UI offers as a single choice."""

    name: str
    description: str
    builder: Builder
    sizes: dict[str, Any]  # size preset name -> the builder's sizes dataclass
    choice_option: str | None = None  # the builder option a UI's one dropdown sets (e.g. "forget_class")
    choices: tuple[str, ...] = ()
    default_choice: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)

    def options(self) -> list[str]:
        """Keyword options the builder takes (beyond image size, seed and sizes)."""
        params = inspect.signature(self.builder).parameters
        return [p for p in params if p not in ("image_size", "seed", "sizes")]

    def build(self, image_size: int, seed: int = 0, size: str = "paper",
              **options: Any) -> tuple[UnlearningTask, list[EvalSet]]:
        """Build the task with the data sizes of preset ``size``; unknown options are refused with a clear error."""
        if size not in self.sizes:
            raise DataError(f"setting {self.name!r} has no size preset {size!r}; choose from {', '.join(self.sizes)}")
        options = {k: v for k, v in options.items() if v is not None}
        unknown = set(options) - set(self.options())
        if unknown:
            raise DataError(f"setting {self.name!r} takes no option {sorted(unknown)}; it takes {self.options()}")
        if self.choice_option and self.choices and options.get(self.choice_option) not in (None, *self.choices):
            raise DataError(f"{self.choice_option.replace('_', ' ')} must be one of {', '.join(self.choices)}")
        return self.builder(image_size=image_size, seed=seed, sizes=self.sizes[size], **{**self.defaults, **options})


_REGISTRY: dict[str, Setting] = {}


def register_setting(setting: Setting) -> Setting:
    missing = set(SIZE_PRESETS) - set(setting.sizes)
    if missing:
        raise ValueError(f"setting {setting.name!r} lacks size presets {sorted(missing)}")
    _REGISTRY[setting.name] = setting
    return setting


def get_setting(name: str) -> Setting:
    if name not in _REGISTRY:
        raise DataError(f"unknown setting {name!r}; choose from {', '.join(available_settings())}")
    return _REGISTRY[name]


def available_settings() -> list[str]:
    return list(_REGISTRY)

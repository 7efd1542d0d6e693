"""Run profiles: how much work a run from the app does (method settings, data size preset, curve resolution)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clipforget.core.errors import DataError
from clipforget.methods.ours import ThreeStageConfig
from clipforget.stages.forget import ForgetConfig
from clipforget.stages.remind import RemindConfig
from clipforget.stages.restore import RestoreConfig
from clipforget.stages.restore import grid_alphas as even_alphas


@dataclass
class RunProfile:
    """Method settings, the settings' size preset, the evaluation curves' resolution and the gallery's alpha grid."""

    name: str
    method: ThreeStageConfig
    size: str  # a size preset of clipforget.settings (quick / small / paper)
    curve_alphas: tuple[float, ...]
    curve_max_images: int  # per evaluation set, for the accuracy-vs-alpha curves
    grid: bool = True  # precompute the gallery's alpha grid at the end of the run
    description: str = ""
    grid_alphas: tuple[float, ...] = tuple(even_alphas(21))  # the app's alpha slider snaps to these
    grid_max_images: int | None = None  # the grid covers a fixed sample of at most this many gallery images
    prefix_cache: bool = True  # each image once through the frozen prefix (False: full network, for checking)

    def grid_rows(self, gallery_size: int) -> list[int] | None:
        """The gallery rows the alpha grid covers: all, or a fixed (seed 0) sample of ``grid_max_images``."""
        if self.grid_max_images is None or gallery_size <= self.grid_max_images:
            return None
        return sorted(int(i) for i in np.random.default_rng(0).choice(gallery_size, self.grid_max_images, False))


PROFILES: dict[str, RunProfile] = {
    "quick": RunProfile(
        "quick",
        ThreeStageConfig(
            ForgetConfig(steps=6, lr=3e-3, batch_size=16, fisher_samples=8, fisher_micro_batch=4),
            RemindConfig(align_images=16, align_batch=16, align_steps=1, steps=2, batch_size=16, ema_decay=0.3),
            RestoreConfig(alphas=even_alphas(5)),
        ),
        "quick", tuple(even_alphas(5)), 48,
        description="under a minute: for tests and UI checks (docs/decisions.md D5)",
        grid_alphas=tuple(even_alphas(11)), grid_max_images=2000,
    ),
    "fast": RunProfile("fast", ThreeStageConfig(), "small", tuple(even_alphas(21)), 200,
                       description="minutes: the method's defaults on reduced data (the app's default)"),
    "full": RunProfile("full", ThreeStageConfig(), "paper", tuple(even_alphas(21)), 1000,
                       description="the paper's data sizes"),
}


def get_profile(name: str) -> RunProfile:
    if name not in PROFILES:
        raise DataError(f"unknown run profile {name!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[name]

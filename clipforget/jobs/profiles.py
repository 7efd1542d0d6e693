"""Run profiles: how much work a run from the app does (method settings, data size preset, curve resolution)."""

from __future__ import annotations

from dataclasses import dataclass

from clipforget.core.errors import DataError
from clipforget.methods.ours import ThreeStageConfig
from clipforget.stages.forget import ForgetConfig
from clipforget.stages.remind import RemindConfig
from clipforget.stages.restore import RestoreConfig, grid_alphas


@dataclass
class RunProfile:
    """Method settings, the settings' size preset, and the evaluation curves' resolution."""

    name: str
    method: ThreeStageConfig
    size: str  # a size preset of clipforget.settings (quick / small / paper)
    curve_alphas: tuple[float, ...]
    curve_max_images: int  # per evaluation set, for the accuracy-vs-alpha curves
    grid: bool = True  # precompute the gallery's alpha grid at the end of the run
    description: str = ""


PROFILES: dict[str, RunProfile] = {
    "quick": RunProfile(
        "quick",
        ThreeStageConfig(
            ForgetConfig(steps=6, lr=3e-3, batch_size=16, fisher_samples=8, fisher_micro_batch=4),
            RemindConfig(align_images=16, align_batch=16, align_steps=1, steps=2, batch_size=16, ema_decay=0.3),
            RestoreConfig(alphas=grid_alphas(5)),
        ),
        "quick", tuple(grid_alphas(5)), 48,
        description="seconds: for tests and UI checks (docs/decisions.md D5)",
    ),
    "fast": RunProfile("fast", ThreeStageConfig(), "small", tuple(grid_alphas(21)), 200,
                       description="minutes: the method's defaults on reduced data (the app's default)"),
    "full": RunProfile("full", ThreeStageConfig(), "paper", tuple(grid_alphas(21)), 1000,
                       description="the paper's data sizes"),
}


def get_profile(name: str) -> RunProfile:
    if name not in PROFILES:
        raise DataError(f"unknown run profile {name!r}; choose from {', '.join(PROFILES)}")
    return PROFILES[name]

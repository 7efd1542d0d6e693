"""Where tensors run: one rule for every command, worker and test."""

from __future__ import annotations

import torch


def resolve_device(name: str | None = None) -> str:
    """``None`` / ``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else is returned as is."""
    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        from .errors import ModelLoadError

        raise ModelLoadError(f"device {name!r} asked for, but no CUDA GPU is visible to this process")
    return str(name)


def configure_backends(device: str) -> None:
    """Per-device numerics: TF32 matmuls and cuDNN autotuning on CUDA (inputs have fixed sizes here)."""
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

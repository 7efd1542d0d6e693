"""Where tensors run: one rule for every command, worker and test, and the per-device numerics.

:func:`autocast_dtype`: bf16 on GPUs that have it (Ampere and later), fp16 on older GPUs; on the CPU bf16 only where
the processor computes it natively (AMX or AVX-512 BF16), else fp32 (emulated bf16 made forward + backward 2.5x slower
on the project's machines: docs/decisions.md D15). Training runs under the same autocast as inference and clipforget
uses no gradient scaler, so bf16 (fp32's exponent range) is what keeps small gradients from underflowing
(docs/decisions.md D8-backends). ``CLIPFORGET_CPU_AUTOCAST=bf16|fp32`` overrides the CPU choice.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch


def resolve_device(name: str | None = None) -> str:
    """``None`` / ``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; anything else is returned as is."""
    if name in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        from .errors import ModelLoadError

        raise ModelLoadError(f"device {name!r} asked for, but no CUDA GPU is visible to this process")
    return str(name)


def visible_gpus() -> int:
    """How many CUDA GPUs this process sees (``CUDA_VISIBLE_DEVICES`` applies)."""
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def configure_backends(device: str) -> None:
    """Per-device numerics: TF32 matmuls and cuDNN autotuning on CUDA (inputs have fixed sizes here)."""
    if str(device).startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.enabled = True
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = False


def configure_threads(threads: int | None) -> None:
    """Limit this process's CPU threads (several workers on one machine must not each take every core)."""
    if threads and threads > 0:
        torch.set_num_threads(int(threads))
        os.environ.setdefault("OMP_NUM_THREADS", str(int(threads)))
        with contextlib.suppress(ImportError):  # faiss is a dependency
            import faiss

            faiss.omp_set_num_threads(int(threads))


def autocast_dtype(device: str | torch.device) -> torch.dtype:
    """The autocast dtype of the module docstring (``torch.float32``: no autocast)."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    choice = os.environ.get("CLIPFORGET_CPU_AUTOCAST", "").strip().lower()
    if choice in ("bf16", "fp32"):
        return torch.bfloat16 if choice == "bf16" else torch.float32
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AMX-BF16 or AVX-512 BF16; read from ``/proc/cpuinfo``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = {flag for line in fh if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return False
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def describe_device(device: str | torch.device, local: str | torch.device | None = None) -> str:
    """``cpu (4 threads)`` or ``cuda:1 (NVIDIA H100 80GB HBM3)``; ``local``: the in-process name of a GPU that
    ``device`` names as the machine sees it (``CUDA_VISIBLE_DEVICES=1`` makes physical ``cuda:1`` local ``cuda:0``)."""
    device = str(device)
    if device.startswith("cuda"):
        try:
            return f"{device} ({torch.cuda.get_device_name(torch.device(str(local or device)))})"
        except (RuntimeError, AssertionError, ValueError):
            return device
    return f"cpu ({torch.get_num_threads()} threads)"


def worker_devices(device: str | None = None, workers: int | None = None) -> list[str]:
    """Devices of the local workers, as the machine names them: ``workers`` (default: one per visible GPU, else one)
    spread over the visible GPUs round-robin (``auto``; ``cuda``: the same, but no GPU is an error), or all on
    ``device`` when it names one (``cpu``, ``cuda:1``)."""
    if device not in (None, "", "auto", "cuda"):
        return [str(device)] * max(1, workers or 1)
    gpus = visible_gpus()
    if gpus == 0:
        if device == "cuda":
            resolve_device("cuda")  # raises: no GPU visible
        return ["cpu"] * max(1, workers or 1)
    return [f"cuda:{i % gpus}" for i in range(workers or gpus)]

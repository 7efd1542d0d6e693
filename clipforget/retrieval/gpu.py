"""FAISS on the GPU when the installed FAISS has one (``faiss-gpu``), else nothing changes.

Exact search over a few hundred thousand rows is where a GPU starts to pay: below that, a query on the CPU takes
about a millisecond and the transfer would cost more (docs/decisions.md, backends). HNSW indexes stay on the CPU
(FAISS has no GPU HNSW); ``Flat`` and ``IVF*`` indexes move with :func:`index_to_gpu`.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

GPU_MIN_ROWS = 200_000  # move an index / brute-force search to the GPU from this many rows on

_RESOURCES: dict[int, Any] = {}
_LOCK = threading.Lock()


def faiss_gpus() -> int:
    """GPUs the installed FAISS can use (0 with ``faiss-cpu``)."""
    try:
        import faiss

        return int(faiss.get_num_gpus())
    except (ImportError, AttributeError, RuntimeError):
        return 0


def gpu_resources(device: int = 0) -> Any:
    """One ``faiss.StandardGpuResources`` per GPU for this process (they hold scratch memory; share them)."""
    import faiss

    with _LOCK:
        if device not in _RESOURCES:
            _RESOURCES[device] = faiss.StandardGpuResources()
        return _RESOURCES[device]


def wants_gpu(rows: int, gpu: bool | None) -> bool:
    """``gpu`` True / False decides; ``None``: on the GPU when FAISS has one and ``rows >= GPU_MIN_ROWS``."""
    if gpu is False:
        return False
    return faiss_gpus() > 0 and (gpu is True or rows >= GPU_MIN_ROWS)


def index_to_gpu(index: Any, device: int = 0) -> tuple[Any, bool]:
    """``(index on GPU, True)``, or ``(index, False)`` where FAISS cannot move it (HNSW, no GPU)."""
    import faiss

    if faiss_gpus() == 0 or "HNSW" in type(index).__name__:
        return index, False
    try:
        return faiss.index_cpu_to_gpu(gpu_resources(device), device, index), True
    except (RuntimeError, AttributeError):
        return index, False


def knn_gpu(queries: np.ndarray, matrix: np.ndarray, k: int, device: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-``k`` of ``queries`` against ``matrix`` rows on the GPU (float32 arrays)."""
    import faiss

    return faiss.knn_gpu(gpu_resources(device), queries, matrix, k, metric=faiss.METRIC_INNER_PRODUCT, device=device)

"""``python -m clipforget run monkeys --size small --seed SEED`` (the same steps as the CLI), with RemindConfig
overrides, for comparing remind-stage variants on the cached path (docs/decisions.md D11):

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/run_remind_variant.py OUT SEED activation_epsilon=0.5

Writes the run folder plus ``wall_seconds.txt`` and ``load.txt`` (1-minute load before / after), like
``bench_prefix_cache.py``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch

from clipforget.core.devices import configure_backends, resolve_device
from clipforget.methods.registry import get_method, seed_config
from clipforget.models.factory import DEFAULT_MODEL, create_model
from clipforget.pipeline.run import run_method
from clipforget.settings import get_setting


def main() -> int:
    out, seed = Path(sys.argv[1]), int(sys.argv[2])
    overrides = {k: float(v) if "." in v else int(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])}
    start, load = time.perf_counter(), os.getloadavg()[0]
    torch.manual_seed(seed)
    device = resolve_device("auto")
    configure_backends(device)
    bundle = create_model(DEFAULT_MODEL, device=device)
    task, eval_sets = get_setting("monkeys").build(bundle.image_size, seed, "small")
    config = get_method("ours").config_cls()
    seed_config(config, seed)
    for key, value in overrides.items():
        setattr(config.remind, key, value)
    result = run_method(bundle, task, out, "ours", config, eval_sets,
                        extra={"seed": seed, "setting": "monkeys", "size": "small", "options": {},
                               "command": " ".join(sys.argv), "remind_overrides": overrides})
    (out / "wall_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    (out / "load.txt").write_text(f"{load:.2f} {os.getloadavg()[0]:.2f}\n")
    m = result.metrics
    print(json.dumps({k: m[k] for k in ("score", "alpha", "stage_seconds", "evaluation_seconds", "peak_rss_mb")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

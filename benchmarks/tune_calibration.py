"""Compare variants of the three-stage method on a setting's *calibration* data only (no evaluation set is built
into the run): per variant and seed, the α the rule picks and the calibration forget accuracy F, retain accuracy R
and forget top-rank share FR there. How D19 was measured; tuning never looks at an evaluation split.

    python benchmarks/tune_calibration.py --setting monkeys --seeds 0,1,2 --out /tmp/tune \\
        --variant base='{}' --variant teacher='{"forget": {"forget_target": "teacher"}}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from clipforget.methods.registry import apply_overrides, get_method, seed_config
from clipforget.models.factory import DEFAULT_MODEL, create_model
from clipforget.pipeline.run import run_method
from clipforget.settings import get_setting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", default="monkeys")
    parser.add_argument("--forget-class", default=None)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--size", default="small")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True, help="folder for the variants' run folders")
    parser.add_argument("--variant", action="append", required=True, help="name=JSON overrides of ThreeStageConfig")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    bundle = create_model(args.model)
    options = {"forget_class": args.forget_class} if args.forget_class else {}
    variants = [v.split("=", 1) for v in args.variant]
    for seed in (int(s) for s in args.seeds.split(",")):
        task, _ = get_setting(args.setting).build(bundle.image_size, seed, args.size, **options)
        for name, overrides in variants:
            config = get_method("ours").config_cls()
            seed_config(config, seed)
            apply_overrides(config, json.loads(overrides))
            folder = Path(args.out) / f"{name}-seed{seed}"
            started = time.perf_counter()
            torch.manual_seed(seed)
            run_method(bundle, task, folder, "ours", config, [], extra={"seed": seed})
            curve = json.loads((folder / "alpha_curve.json").read_text())
            chosen = next(p for p in curve["curve"] if abs(p["alpha"] - curve["alpha"]) < 1e-6)
            print(f"{name:>16} seed {seed}: alpha {curve['alpha']:.2f}  F {chosen['forget']:.3f}  "
                  f"R {chosen['retain']:.3f}  FR {chosen.get('forget_retrieval', float('nan')):.3f}  "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

"""Where a run's calibration images go: per source folder, the zero-shot classes they get under the original model
and under θ(α) (calibration images only, never an evaluation split). How D19 found the "dog" sink.

    python benchmarks/calibration_confusion.py --run RUN --setting monkeys --seed 0 --alpha 0.9
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import torch

from clipforget.evaluation import zero_shot_predictions
from clipforget.models.factory import DEFAULT_MODEL, create_model, load_checkpoint
from clipforget.models.layers import VisualOnly
from clipforget.models.weights import clone_state
from clipforget.settings import get_setting
from clipforget.stages.restore import souped_tower


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--setting", default="monkeys")
    parser.add_argument("--forget-class", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="small")
    parser.add_argument("--alpha", type=float, required=True)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()

    bundle = create_model(args.model)
    options = {"forget_class": args.forget_class} if args.forget_class else {}
    task, _ = get_setting(args.setting).build(bundle.image_size, args.seed, args.size, **options)
    theta_0 = clone_state(bundle.model.visual)
    theta_u = load_checkpoint(Path(args.run) / "unlearned").visual_state()
    for alpha in (0.0, args.alpha):
        tower = VisualOnly(souped_tower(bundle.model.visual, theta_u, theta_0, alpha))
        for name, images in (("forget", task.calibration_forget), ("retain", task.calibration_retain)):
            with torch.no_grad():
                predicted = zero_shot_predictions(bundle, images, task.classnames, model=tower)
            by_folder: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
            for index, path in zip(predicted.tolist(), images.paths, strict=True):
                by_folder[Path(path).parent.name][task.classnames[index]] += 1
            print(f"alpha {alpha:.2f} calibration {name}:")
            for folder, counts in sorted(by_folder.items()):
                print(f"    {folder:<28} " + ", ".join(f"{k} {v}" for k, v in counts.most_common(4)))


if __name__ == "__main__":
    main()

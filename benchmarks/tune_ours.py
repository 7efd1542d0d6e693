"""Compare configurations of the three-stage method on one bench setting, with the Score at every alpha.

Prints, per variant: the calibrated alpha, the Score there, and the best Score on the alpha grid (which a real run
cannot pick: it uses evaluation sets). Used to choose the method's defaults; see BENCHMARKS.md.

    python benchmarks/tune_ours.py --setting subgroup --variant base='{}' \
        --variant fkd='{"remind": {"feature_kd_weight": 5}}'
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from clipforget.evaluation import evaluate_sets, ratio, score
from clipforget.methods.registry import apply_overrides, get_method, seed_config
from clipforget.models.encode import encode_images, encode_text
from clipforget.models.factory import DEFAULT_MODEL, create_model
from clipforget.models.layers import VisualOnly
from clipforget.models.weights import soup
from clipforget.settings import get_setting


def top_target(bundle, visual, images, is_target, query, k: int = 20) -> int:
    """How many of the top-``k`` images for ``query`` are target images (retrieval-side forgetting)."""
    feats = encode_images(bundle, images, model=VisualOnly(visual))
    return int(is_target[torch.topk(feats @ query, k).indices].sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--setting", default="cifar10")
    parser.add_argument("--forget-class", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--full-size", action="store_true", help="the setting's full sizes (as `run cifar10`)")
    parser.add_argument("--variant", action="append", required=True, help="name=JSON overrides of ThreeStageConfig")
    parser.add_argument("--alphas", default="0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    torch.set_num_threads(2)
    bundle = create_model(args.model)
    options = {"forget_class": args.forget_class} if args.forget_class else {}
    task, eval_sets = get_setting(args.setting).build(bundle.image_size, args.seed,
                                                      "paper" if args.full_size else "small", **options)
    original = evaluate_sets(bundle, bundle.model.visual, eval_sets)
    target = next(s.name for s in eval_sets if s.role == "target")
    print("original", {k: round(v, 3) for k, v in original.items()}, flush=True)
    spec = get_method("ours")
    sets = {s.name: s for s in eval_sets}
    retrieval = None
    if "cifar10_target" in sets and "cifar10_retain" in sets:  # gallery = both sets, prompt = the target class
        images = torch.cat([sets["cifar10_target"].images.images, sets["cifar10_retain"].images.images])
        is_target = torch.arange(len(images)) < len(sets["cifar10_target"].images)
        name = sets["cifar10_target"].images.labels[0]
        retrieval = (images, is_target, encode_text(bundle, [f"a photo of a {name}"])[0])
        print("top-20 target images, original:", top_target(bundle, bundle.model.visual, *retrieval), flush=True)
    alphas = [float(a) for a in args.alphas.split(",")]
    results = []
    for variant in args.variant:
        name, _, text = variant.partition("=")
        config = spec.config_cls()
        seed_config(config, args.seed)
        apply_overrides(config, json.loads(text or "{}"))
        start = time.perf_counter()
        out = spec.fn(bundle, task, config, lambda *a: None)
        seconds = time.perf_counter() - start
        scratch = copy.deepcopy(bundle.model.visual).eval()
        theta_0 = {k: v.clone() for k, v in bundle.model.visual.state_dict().items()}
        rows = []
        for alpha in sorted(set(alphas) | {out.alpha}):
            scratch.load_state_dict(soup(out.unlearned_state, theta_0, alpha))
            accs = evaluate_sets(bundle, scratch, eval_sets)
            terms = {k: ratio(accs[k], original[k]) for k in accs}
            s = score(terms[target], [v for k, v in terms.items() if k != target])
            row = {"alpha": alpha, "score": s, **{k: round(v, 3) for k, v in accs.items()}}
            if retrieval is not None:
                row["top20_target"] = top_target(bundle, scratch, *retrieval)
            rows.append(row)
        chosen = next(r for r in rows if r["alpha"] == out.alpha)
        best = max(rows, key=lambda r: r["score"])
        print(f"== {name}: {seconds:.0f}s alpha*={out.alpha} score {chosen['score']:.1f} | best {best['score']:.1f}"
              f" at {best['alpha']}  layers {out.log['forget']['lora_layers']}", flush=True)
        for r in rows:
            print("   ", r, flush=True)
        results.append({"variant": name, "seconds": seconds, "alpha": out.alpha, "rows": rows,
                        "curve": out.alpha_curve})
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    main()

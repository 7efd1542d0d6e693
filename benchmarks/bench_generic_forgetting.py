"""Issue 19's retrieval acceptance for a run of the generic path (``unlearn`` on a subgroup of monkeys10/train):
top-20 before -> after at the run's alpha* over held-out photos (an index of monkeys10 val + Tiny-ImageNet val).

    .venv/bin/python -m index_builder build --model embedded --gallery ../shared/data/monkeys10/val \\
        ../shared/data/tiny-imagenet/val --out indexes/monkeys-tiny
    .venv/bin/python benchmarks/bench_generic_forgetting.py --run RUN --index indexes/monkeys-tiny \\
        --subgroup-name marmoset --subgroup pygmy_marmoset/,silvery_marmoset/

Prints, per prompt, the subgroup's and the siblings' images in the top-20 (own name and coarse label), and for ten
prompts of Tiny-ImageNet classes the prompt's own-class images and the top-20 overlap, with the issue's bounds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import common  # noqa: F401  (puts the repository on sys.path)
import numpy as np

from clipforget.core.devices import resolve_device
from clipforget.data.imagenet import display_name
from clipforget.models.encode import encode_text
from clipforget.pipeline.folder import RunFolder
from clipforget.retrieval.audit import audit_prompt
from clipforget.retrieval.index import load_index
from index_builder.alpha_grid import embeddings_at

UNRELATED = {  # prompt -> Tiny-ImageNet val folder of its class
    "lesser panda": "n02509815", "golden retriever": "n02099601", "sports car": "n04285008",
    "goldfish": "n01443537", "school bus": "n04146614", "koala": "n01882714", "monarch butterfly": "n02279972",
    "pizza": "n07873807", "teapot": "n04398044", "lemon": "n07749582",
}


def all_class_churn(original, gallery, after: np.ndarray, root: str, k: int = 20) -> dict:
    """Own-class images in the top-``k`` of "a photo of a <class>." for every ``<root><wnid>/`` folder, before and
    after: the share kept per prompt."""
    folders = np.array([Path(p).parent.name if root in p else "" for p in gallery.paths])
    wnids = sorted({w for w in folders if w})
    texts = encode_text(original, [f"a photo of a {display_name(w)}." for w in wnids]).cpu().numpy()
    before = np.asarray(gallery.embeddings, np.float32)
    kept = []
    for wnid, text in zip(wnids, texts, strict=True):
        b = int((folders[np.argsort(-(before @ text))[:k]] == wnid).sum())
        a = int((folders[np.argsort(-(after @ text))[:k]] == wnid).sum())
        if b:
            kept.append(a / b)
    return {"prompts": len(kept), "kept_mean": float(np.mean(kept)), "kept_min": float(np.min(kept)),
            "below_095": int(sum(x < 0.95 for x in kept)), "gain": int(sum(x > 1 for x in kept))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--index", required=True)
    p.add_argument("--subgroup-name", required=True, help="the subgroup's own name, e.g. marmoset")
    p.add_argument("--subgroup", required=True, help="path parts of the subgroup's held-out images, comma separated")
    p.add_argument("--coarse", default="monkey")
    p.add_argument("--siblings", default="monkeys10/val/", help="path part of every image of the coarse label")
    p.add_argument("--alpha", type=float, default=None)
    p.add_argument("--unrelated-root", default="tiny-imagenet/val/",
                   help="path part above the unrelated prompts' <wnid>/ folders (a tuning gallery of Tiny-ImageNet "
                        "train images: its folder name)")
    p.add_argument("--all-classes", action="store_true",
                   help="also every class folder under --unrelated-root as a prompt: how many lose >= 5 %% of their "
                        "own-class top-20 (the churn of near-ties)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    run = RunFolder(args.run)
    alpha = run.chosen_alpha if args.alpha is None else args.alpha
    gallery = load_index(args.index)
    device = resolve_device("auto")
    original = run.original_model(device)
    after = embeddings_at(original, run.unlearned_state(device), gallery, alpha, run.grid_dir(gallery.name))
    drift = float(1.0 - np.mean(np.sum(np.asarray(gallery.embeddings, np.float32) * after, axis=1)))
    print(f"run {run.path.name}: alpha* {alpha:.2f}; forget texts {run.forget_texts()}; gallery embedding drift "
          f"1 - cos {drift:.4f}")
    groups = {"subgroup": args.subgroup, "coarse": args.siblings}
    out: dict = {"run": str(run.path), "alpha": alpha, "drift": drift, "forget_texts": run.forget_texts(),
                 "prompts": {}}
    for prompt in (f"a photo of a {args.subgroup_name}", f"a photo of a {args.coarse}"):
        audit = audit_prompt(original, gallery, after, prompt, 20, None, (), groups)
        (sb, sa), (cb, ca) = audit.groups_in_top_k["subgroup"], audit.groups_in_top_k["coarse"]
        others = (cb - sb, ca - sa)
        out["prompts"][prompt] = {"subgroup": [sb, sa], "siblings": list(others), "overlap": audit.overlap}
        fall = f"{100 * (1 - sa / sb):.0f} %" if sb else "n/a"
        print(f'"{prompt}": {args.subgroup_name} {sb} -> {sa} (fall {fall}); other {args.coarse} species '
              f"{others[0]} -> {others[1]}; overlap {audit.overlap:.2f}")
    kept, overlaps = [], []
    for name, wnid in UNRELATED.items():
        prompt = f"a photo of a {name}"
        audit = audit_prompt(original, gallery, after, prompt, 20, None, (), {"own": f"{args.unrelated_root}{wnid}/"})
        b, a = audit.groups_in_top_k["own"]
        kept.append(a / b if b else 1.0)
        overlaps.append(audit.overlap)
        out["prompts"][prompt] = {"own_class": [b, a], "overlap": audit.overlap}
        print(f'"{prompt}": own class {b} -> {a}; overlap {audit.overlap:.2f}')
    mean_overlap = sum(overlaps) / len(overlaps)
    print(f"unrelated prompts: own-class kept min {min(kept):.2f} (bound 0.95), mean top-20 overlap "
          f"{mean_overlap:.2f} (bound 0.85)")
    out["unrelated"] = {"own_class_kept_min": min(kept), "mean_overlap": mean_overlap}
    if args.all_classes:
        out["all_classes"] = all_class_churn(original, gallery, after, args.unrelated_root)
        c = out["all_classes"]
        print(f"all {c['prompts']} class prompts under {args.unrelated_root}: own-class top-20 kept mean "
              f"{c['kept_mean']:.3f}, min {c['kept_min']:.2f}; {c['below_095']} lose >= 5 %, {c['gain']} gain")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

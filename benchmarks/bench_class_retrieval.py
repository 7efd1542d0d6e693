"""Issue 19's retrieval acceptance for CIFAR-10 class forgetting (the paper's Fig. 4): for each finished run, the
top-20 of "a photo of a <class>" for all ten classes, before -> after at the run's alpha*, over held-out images
(an index holding CIFAR-10 test, Tiny-ImageNet val and the ImageNet samples).

    .venv/bin/python -m index_builder build --model embedded --gallery ../shared/data/cifar10/test \\
        ../shared/data/tiny-imagenet/val ../shared/data/imagenet-samples --out indexes/heldout
    PYTHONPATH=. .venv/bin/python benchmarks/bench_class_retrieval.py --index indexes/heldout \\
        bench/suite/cifar10-airplane/ours/seed0 bench/suite/cifar10-ship/ours/seed*

Per run: the forgotten class's prompt, its CIFAR-10 images (bound: fall >= 80 %) and the same class in the other
domains (Tiny-ImageNet val folders and ImageNet samples of the class, the Fig. 4 "ImageNet airplanes stay"); the
other nine prompts, their own CIFAR-10 class images kept (bound: >= 90 % of before, each).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clipforget.core.devices import resolve_device
from clipforget.data.cifar10 import CIFAR10_CLASSES
from clipforget.data.imagenet import IMAGENET_TO_CIFAR10, imagenet_classes
from clipforget.data.tiny_imagenet import tiny_imagenet_classes
from clipforget.pipeline.folder import RunFolder
from clipforget.retrieval.audit import audit_prompt
from clipforget.retrieval.index import load_index
from clipforget.settings.cifar10 import TINY_TO_CIFAR10
from index_builder.alpha_grid import AlphaGridConfig, compute_alpha_grid, embeddings_at


def prompt_for(name: str) -> str:
    return f"a photo of {'an' if name[0] in 'aeiou' else 'a'} {name}"


def other_domain_patterns(name: str) -> str:
    """Path parts of the class's held-out photos outside CIFAR-10 (comma separated, as audit groups take them)."""
    tiny = {c["wnid"] for c in tiny_imagenet_classes()
            if c["name"].split(",")[0].strip() in TINY_TO_CIFAR10.get(name, ())}
    wnids = [imagenet_classes()[i]["wnid"] for i in IMAGENET_TO_CIFAR10.get(name, ())]
    return ",".join([*(f"tiny-imagenet/val/{w}/" for w in sorted(tiny)), *(f"imagenet-samples/{w}_" for w in wnids)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="finished run folders of the cifar10 setting")
    p.add_argument("--index", required=True)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    gallery = load_index(args.index)
    device = resolve_device("auto")
    rows = []
    for path in args.runs:
        run = RunFolder(path)
        forgotten = run.metrics()["task"].split("-", 1)[1]
        original = run.original_model(device)
        # the alpha* point of the run's grid for this gallery: the gallery's stored activations (D18) make it one
        # suffix pass; the first run without them decodes once and stores them for the next
        compute_alpha_grid(original, run.unlearned_state(device), args.index, run.grid_dir(gallery.name),
                           AlphaGridConfig(workers=0, device=device), first=[run.chosen_alpha], stop_after_first=True)
        after = embeddings_at(original, run.unlearned_state(device), gallery, run.chosen_alpha,
                              run.grid_dir(gallery.name))
        row: dict = {"run": str(run.path), "class": forgotten, "alpha": run.chosen_alpha, "prompts": {}}
        kept = []
        for name in CIFAR10_CLASSES:
            groups = {"cifar": f"cifar10/test/{name}/"}
            if name == forgotten and other_domain_patterns(name):
                groups["other_domains"] = other_domain_patterns(name)
            audit = audit_prompt(original, gallery, after, prompt_for(name), args.k, None, (), groups)
            counts = {g: list(v) for g, v in audit.groups_in_top_k.items()}
            row["prompts"][name] = {**counts, "overlap": audit.overlap}
            if name != forgotten:
                before, now = counts["cifar"]
                kept.append(now / before if before else 1.0)
        b, a = row["prompts"][forgotten]["cifar"]
        row["fall"] = 1 - a / b if b else float("nan")
        row["others_kept_min"], row["others_kept_mean"] = min(kept), sum(kept) / len(kept)
        other = row["prompts"][forgotten].get("other_domains")
        print(f"{run.path}: alpha* {run.chosen_alpha:.2f}; \"{prompt_for(forgotten)}\": CIFAR {b} -> {a} "
              f"(fall {100 * row['fall']:.0f} %, bound 80), other domains "
              f"{'-' if other is None else f'{other[0]} -> {other[1]}'}; other nine prompts' own class kept min "
              f"{row['others_kept_min']:.2f} (bound 0.90), mean {row['others_kept_mean']:.2f}", flush=True)
        print("    " + ", ".join(f"{n} {v['cifar'][0]}->{v['cifar'][1]}" for n, v in row["prompts"].items()))
        rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

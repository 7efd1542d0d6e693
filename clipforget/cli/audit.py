"""``audit``: a prompt's top-k over a gallery index, original model vs theta(alpha); ``alpha-grid``: precompute.

    python -m clipforget audit --run runs/cifar10-airplane --index indexes/cifar10-test+imagenet \\
        --prompt "a photo of an airplane" --subgroup cifar10/test/airplane/ --track airliner,warplane
    python -m clipforget alpha-grid --run runs/cifar10-airplane --index indexes/cifar10-test+imagenet

The gallery embeddings under theta(alpha) come from the run's alpha grid for that index when it holds ``alpha``,
else from encoding the gallery once with theta(alpha).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clipforget.core.devices import resolve_device
from clipforget.pipeline.folder import RunFolder
from clipforget.retrieval.audit import audit_prompt
from clipforget.retrieval.index import load_index
from index_builder.alpha_grid import AlphaGridConfig, compute_alpha_grid, embeddings_at

from .common import add_finished_run_args, add_folder_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="retrieval audit: a prompt's top-k before vs after unlearning")
    add_finished_run_args(p)
    p.add_argument("--index", required=True, help="gallery index folder (python -m index_builder build)")
    p.add_argument("--prompt", action="append", required=True, help="text prompt (repeatable)")
    p.add_argument("--subgroup", default=None, help="path part of the forgotten images, e.g. cifar10/test/airplane/")
    p.add_argument("--track", default="", help="labels whose full-gallery ranks to report, comma separated")
    p.add_argument("--group", action="append", default=[], metavar="NAME=PATH_PART[,PATH_PART]",
                   help="count a group of images in the top-k before / after (repeatable)")
    p.add_argument("--json", default=None, help="also write the audit as JSON here")
    p.set_defaults(func=cmd_audit)

    g = sub.add_parser("alpha-grid", help="gallery embeddings of a finished run at every alpha")
    g.add_argument("--run", required=True, help="finished run folder")
    g.add_argument("--index", required=True, help="index folder of the gallery")
    g.add_argument("--name", default=None, help="grid name (default: the index folder's name)")
    g.add_argument("--step", type=float, default=0.05, help="alpha grid step over [0, 1]")
    g.add_argument("--batch-size", type=int, default=256)
    g.add_argument("--workers", type=int, default=None, help="decoding processes (default: min(8, CPUs))")
    g.add_argument("--cache-mb", type=int, default=1024, help="activation cache per gallery chunk")
    g.add_argument("--overwrite", action="store_true")
    g.add_argument("--device", default="auto")
    add_folder_args(g)
    g.set_defaults(func=cmd_alpha_grid)


def step_alphas(step: float) -> tuple[float, ...]:
    n = round(1.0 / step)
    if n < 1 or abs(n * step - 1.0) > 1e-9:
        raise ValueError(f"--step must divide 1 (e.g. 0.05, 0.1), not {step}")
    return tuple(round(i / n, 6) for i in range(n + 1))


def cmd_alpha_grid(args: argparse.Namespace) -> int:
    run = RunFolder(args.run)
    device = resolve_device(args.device)
    cfg = AlphaGridConfig(alphas=step_alphas(args.step), batch_size=args.batch_size, workers=args.workers,
                          cache_bytes=args.cache_mb * 2**20, device=device)
    name = args.name or Path(args.index).name
    out = compute_alpha_grid(run.original_model(device), run.unlearned_state(device), args.index,
                             run.grid_dir(name), cfg, overwrite=args.overwrite,
                             provenance={"run": str(run.path.resolve())})
    info = json.loads((out / "grid.json").read_text(encoding="utf-8"))
    print(f"{out}: {len(info['alphas'])} alphas x {info['count']} images, recomputed from "
          f"{info['first_recomputed_stage']}, {info['seconds']}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    run = RunFolder(args.run)
    run.require_done()
    alpha = run.chosen_alpha if args.alpha is None else float(args.alpha)
    gallery = load_index(args.index)
    device = resolve_device(args.device)
    original = run.original_model(device)
    after = embeddings_at(original, run.unlearned_state(device), gallery, alpha, run.grid_dir(gallery.name))
    track = tuple(t.strip() for t in args.track.split(",") if t.strip())
    groups = dict(g.split("=", 1) for g in args.group)
    results = []
    for prompt in args.prompt:
        audit = audit_prompt(original, gallery, after, prompt, args.k, args.subgroup, track, groups)
        results.append(audit.as_dict())
        c = audit.comparison
        print(f'"{prompt}"  top-{len(c.before)}, original vs theta(alpha={alpha:.2f}):  {len(c.left)} left, '
              f"{len(c.entered)} entered, overlap {100 * audit.overlap:.0f} %")
        for name, (b, a) in audit.groups_in_top_k.items():
            print(f"  {name}: {b} -> {a} in the top-{len(c.before)}")
        if audit.subgroup_in_top_k is not None:
            b, a = audit.subgroup_in_top_k
            drop = f"{100 * (1 - a / b):.0f} %" if b else "n/a"
            print(f"  subgroup {args.subgroup!r} in the top-{len(c.before)}: {b} -> {a} (fall {drop})")
        if audit.tracked:
            med_b, med_a = audit.median_ranks()
            print(f"  tracked {', '.join(track)} ({len(audit.tracked)} images): median rank {med_b:.0f} -> "
                  f"{med_a:.0f} of {len(gallery)} (x{med_a / max(med_b, 1):.2f})")
        print("  before:", ", ".join(h.label for h in c.before))
        print("  after: ", ", ".join(h.label for h in c.after))
    if args.json:
        Path(args.json).write_text(json.dumps({"run": str(run.path), "index": str(args.index), "alpha": alpha,
                                               "prompts": results}, indent=2), encoding="utf-8")
    return 0

"""``stress``: is it really gone? Other names, relearning and unseen photos for a finished run.

    python -m clipforget stress --run runs/marmoset --index indexes/monkeys-tiny \\
        --subgroup pygmy_marmoset/,silvery_marmoset/ [--name marmoset] [--prompt "a tiny monkey"] [--no-relearn]

``--subgroup`` names the held-out photos of the forgotten subgroup in the index (path parts, comma separated).
Prints the verdict table and the worst texts; writes ``stress.json`` into the run folder (the report and the app
show it). docs/decisions.md D34.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from clipforget.core.devices import resolve_device
from clipforget.pipeline.folder import RunFolder
from clipforget.pipeline.stress import StressConfig, stress_test
from clipforget.retrieval.index import load_index

from .common import add_finished_run_args, progress_printer


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stress", help="stress test of a finished run: other names, relearning, unseen photos")
    add_finished_run_args(p)
    p.add_argument("--index", required=True, help="gallery index of held-out photos (python -m index_builder build)")
    p.add_argument("--subgroup", default="", help="path parts of the subgroup's held-out photos in the index, comma "
                   "separated (default: the run's own held-out photos of the subgroup, added to the gallery)")
    p.add_argument("--name", action="append", default=[], help="a name of the subgroup to expand (repeatable)")
    p.add_argument("--prompt", action="append", default=[], help="a text of your own to try (repeatable)")
    p.add_argument("--no-relearn", dest="relearn", action="store_false", help="skip the relearning attack")
    p.add_argument("--json", default=None, help="also write the result here")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_stress)


def cmd_stress(args: argparse.Namespace) -> int:
    run = RunFolder(args.run)
    parts = [p.strip() for p in args.subgroup.split(",") if p.strip()]
    result = stress_test(run, load_index(args.index), parts, args.alpha, args.name, args.prompt, args.relearn,
                         StressConfig(k=args.k), resolve_device(args.device),
                         progress_printer(args.quiet, edges_only=True))
    print_result(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


def print_result(result: dict) -> None:
    print(f"\nstress test of {result['run']} at alpha {result['alpha']:.2f} over {result['subgroup_images']} held-out "
          f"photos of the subgroup ({result['subgroup_source']}; gallery {result['gallery']}, "
          f"{result['seconds']:.0f} s)")
    width = max(len(v["test"]) for v in result["verdicts"])
    for v in result["verdicts"]:
        print(f"  {v['test']:<{width}}  {v['verdict'].upper():<10}  {v['numbers']}")
    names = result["names"]
    print(f"\nother names: {len(names['texts'])} texts ({', '.join(names['families'])}); "
          f"{names['counted']} found >= {result['config']['min_before']} before; the worst after:")
    for row in names["texts"][:8]:
        print(f"  {row['before']:>3} -> {row['after']:>3}  [{row['family']}] {row['text']}")
    relearning = result.get("relearning", {})
    if "rows" in relearning:
        print(f"\nrelearning (lr {relearning['lr']}, batch {relearning['batch']}): zero-shot of the subgroup / "
              f"top-{result['k']} of \"{relearning['texts'][0]}\"")
        for row in relearning["rows"]:
            print(f"  {row['attack']:<16} from {row['model']:<9} {row['steps']:>4} steps: zero-shot "
                  f"{row['zero_shot']:.2f} ({row['zero_shot_ratio']:.2f} of the original), top-k {row['top_k']}")
    print(f"\nweight distance of theta(alpha) to the original: {result['weight_distance']:.4f} (relative L2)")

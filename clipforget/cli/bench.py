"""``bench``: every method on a setting over seeds (table + chart), or one of the paper's ablations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clipforget.experiments.bench import ABLATIONS, BenchPlan, run_ablation, run_bench
from clipforget.experiments.suite import SUITES, run_suite

from .common import add_folder_args, add_model_args, load_model, progress_printer
from .run import add_setting_options, setting_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark methods on a setting (table + chart), or an ablation")
    p.add_argument("--setting", default="cifar10")
    p.add_argument("--suite", choices=list(SUITES), default=None,
                   help="bench every setting of a suite (paper: monkeys, cifar10 airplane / automobile / ship, style, "
                        "subgroup) into OUT/<cell>/, then suite.md and the Score chart suite.html")
    p.add_argument("--methods", default="all", help="comma separated method names, or 'all'")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (data selection and method seed)")
    p.add_argument("--out", required=True, help="folder for run folders, results.md/json and chart.html")
    add_setting_options(p)
    p.add_argument("--ablation", choices=ABLATIONS, default=None,
                   help="steps: Tab. 4 remind steps; alpha: Tab. 5 fixed alphas; merge: Tab. 6 continual merging")
    p.add_argument("--steps", default="5,10,20,30,40,50,100", help="remind steps for --ablation steps")
    p.add_argument("--alphas", default="0.1,0.3,0.5,0.65,0.7,0.9", help="alphas for --ablation alpha")
    p.add_argument("--merge-classes", default="ship,airplane,cat", help="classes for --ablation merge")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="FIELD=VALUE",
                   help="a method setting, as `run --set`, for every method whose config has it (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_model_args(p)
    add_folder_args(p)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    bundle = load_model(args)
    methods = () if args.methods == "all" else tuple(m.strip() for m in args.methods.split(",") if m.strip())
    plan = BenchPlan(args.setting, Path(args.out), methods, args.seeds, args.size or "small", setting_options(args),
                     command="python -m clipforget " + " ".join(sys.argv[1:]), overrides=tuple(args.overrides))
    progress = progress_printer(args.quiet, edges_only=True)
    if args.suite:
        if args.ablation:
            raise SystemExit("--suite runs the method benches; run an --ablation on one --setting")
        run_suite(bundle, Path(args.out), args.suite, methods, args.seeds, args.size or "small", plan.command,
                  progress, overrides=plan.overrides)
    elif args.ablation:
        values = {"steps": args.steps, "alpha": args.alphas, "merge": args.merge_classes}[args.ablation]
        run_ablation(bundle, plan, args.ablation, [v.strip() for v in values.split(",") if v.strip()], progress)
    else:
        run_bench(bundle, plan, progress)
    return 0

"""Prefix cache vs full network: the same runs both ways in one invocation (issue 17).

For each task and seed, ``python -m clipforget run`` is started twice in a fresh process (so peak RSS is the run's
own), with and without ``--no-prefix-cache``; then one retrieval audit per run folder (every prompt, so the gallery is
encoded under theta(alpha*) once) over one held-out gallery index (monkeys10 val + Tiny-ImageNet val + CIFAR-10 test +
the ImageNet samples). Finished runs and audits in ``--out`` are reused: delete a run's folder to measure it again.
Prints per run: seconds per stage,
evaluation and prefix seconds, wall seconds, peak RSS, Score, alpha*, and the audit's top-20 group counts; then the
speed-up and the differences the issue bounds (Score <= 1.5 points, alpha* <= 0.05, top-20 counts <= 2 images).

    nice -n 5 .venv/bin/python benchmarks/bench_prefix_cache.py --out /work/bench17 [--tasks monkeys,airplane]
        [--seeds 0,1,2] [--threads 2] [--set remind.activation_epsilon=0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import ROOT, timed

TASKS = {
    "monkeys": (["run", "monkeys", "--size", "small"], [
        ("a photo of a marmoset", ["marmosets=pygmy_marmoset,silvery_marmoset", "other_monkeys=monkeys10/val"]),
        ("a photo of a monkey", ["marmosets=pygmy_marmoset,silvery_marmoset", "other_monkeys=monkeys10/val"]),
        ("a photo of a lesser panda", ["lesser_panda=n02509815"]),
    ]),
    "airplane": (["run", "cifar10", "--forget-class", "airplane"], [
        ("a photo of an airplane", ["cifar_airplanes=cifar10/test/airplane", "tiny_or_imagenet=n02690373,airliner"]),
        ("a photo of a ship", ["cifar_ships=cifar10/test/ship"]),
    ]),
}


def python() -> str:
    return str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


def run(cmd: list[str], env: dict[str, str]) -> float:
    return timed(subprocess.run, cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)[1]


def ensure_index(out: Path, env: dict[str, str], data: Path) -> Path:
    index = out / "index_heldout"
    if not (index / "index.json").exists() and not any(index.glob("*.faiss")):
        galleries = [data / "monkeys10" / "val", data / "tiny-imagenet" / "val", data / "cifar10" / "test",
                     data / "imagenet-samples"]
        seconds = run([python(), "-m", "index_builder", "build", "--model", "embedded", "--workers", "0",
                       "--gallery", *map(str, galleries), "--out", str(index)], env)
        print(f"index of the held-out gallery: {seconds:.0f} s", flush=True)
    return index


def audit(folder: Path, index: Path, prompts: list[tuple[str, list[str]]], env: dict[str, str]) -> dict:
    """One ``clipforget audit`` per run (the gallery is encoded at alpha* once), every prompt, every group."""
    target = folder / "audit.json"
    if not target.exists():
        cmd = [python(), "-m", "clipforget", "audit", "--run", str(folder), "--index", str(index), "-k", "20",
               "--json", str(target)]
        for prompt, _ in prompts:
            cmd += ["--prompt", prompt]
        for group in dict.fromkeys(g for _, groups in prompts for g in groups):
            cmd += ["--group", group]
        run(cmd, env)
    entries = {e["prompt"]: e for e in json.loads(target.read_text())["prompts"]}
    counts = {}
    for prompt, groups in prompts:
        names = {g.split("=", 1)[0] for g in groups}
        entry = entries[prompt]
        counts[prompt] = {"groups": {n: c for n, c in entry["groups_in_top_k"].items() if n in names},
                          "overlap": round(entry["overlap"], 3)}
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--tasks", default="monkeys,airplane")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of monkeys (airplane: the first only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-audit", action="store_true")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="FIELD=VALUE",
                        help="a method setting for every run, as `clipforget run --set` (repeatable)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    data = Path(env.get("CLIPFORGET_DATA", ROOT.parent / "shared" / "data"))
    index = None if args.no_audit else ensure_index(out, env, data)
    rows = []
    for task in args.tasks.split(","):
        base, prompts = TASKS[task]
        seeds = [int(s) for s in args.seeds.split(",")] if task == "monkeys" else [int(args.seeds.split(",")[0])]
        for seed in seeds:
            pair = {}
            for mode in ("cache", "full"):
                folder = out / f"{task}-s{seed}-{mode}"
                if not (folder / "metrics.json").exists():
                    cmd = [python(), "-m", "clipforget", *base, "--seed", str(seed), "--quiet", "--out", str(folder)]
                    cmd += [arg for assignment in args.overrides for arg in ("--set", assignment)]
                    load_before = os.getloadavg()[0]
                    wall = run(cmd + ([] if mode == "cache" else ["--no-prefix-cache"]), env)
                    (folder / "wall_seconds.txt").write_text(f"{wall:.1f}\n")
                    # the machine is shared: the 1-minute load average before and after the run
                    (folder / "load.txt").write_text(f"{load_before:.2f} {os.getloadavg()[0]:.2f}\n")
                m = json.loads((folder / "metrics.json").read_text())
                wall = float((folder / "wall_seconds.txt").read_text())
                prefix = (m.get("prefix_cache") or {}).get("seconds", 0.0)
                work = m["method_seconds"] + m["evaluation_seconds"] + prefix
                row = {"task": task, "seed": seed, "mode": mode, "stages": m["stage_seconds"],
                       "evaluation": m["evaluation_seconds"], "prefix": prefix, "stages+eval": round(work, 1),
                       "wall": wall, "peak_rss_mb": m["peak_rss_mb"], "score": round(m["score"], 2),
                       "alpha": m["alpha"], "prefix_cache": m.get("prefix_cache"),
                       "load_1min": (folder / "load.txt").read_text().split() if (folder / "load.txt").exists()
                       else None}
                if index is not None:
                    row["audit"] = audit(folder, index, prompts, env)
                pair[mode] = row
                rows.append(row)
                print(json.dumps(row), flush=True)
            c, f = pair["cache"], pair["full"]
            diff = {"task": task, "seed": seed, "speedup_stages+eval": round(f["stages+eval"] / c["stages+eval"], 2),
                    "speedup_wall": round(f["wall"] / c["wall"], 2), "score_diff": round(c["score"] - f["score"], 2),
                    "alpha_diff": round(abs(c["alpha"] - f["alpha"]), 2)}
            if index is not None:
                diff["audit_max_count_diff"] = max(
                    abs(c["audit"][p]["groups"][g][1] - f["audit"][p]["groups"][g][1])
                    for p in c["audit"] for g in c["audit"][p]["groups"])
            print("DIFF " + json.dumps(diff), flush=True)
    (out / "summary.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

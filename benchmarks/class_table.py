"""Markdown table of `python -m clipforget run cifar10` run folders (one per forgotten class), against issue 2's goals.

    python benchmarks/class_table.py runs/classes/*/
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GOALS = {"target_ratio": 0.05, "retain_ratio": 0.90, "score": 85.0, "seconds": 180.0, "rss_gib": 4.0}


def row(run: Path) -> str:
    m = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    z = m["zero_shot"]
    target = next(k for k, v in z.items() if v.get("role") == "target")
    retained = [k for k, v in z.items() if v.get("role") != "target"]
    t_ratio = z[target]["ratio"]
    r_ratio = min(m["retain_acc"] / m["retain_acc_original"], 1.0)  # the paper caps ratios at 1
    seconds = sum(m["stage_seconds"].values())
    rss = m["peak_rss_mb"] / 1024

    def mark(ok: bool) -> str:
        return "✔" if ok else "✘"

    t_ok, r_ok = mark(t_ratio <= GOALS["target_ratio"]), mark(r_ratio >= GOALS["retain_ratio"])
    cells = [
        run.name,
        f"{100 * z[target]['acc_original']:.1f} → {100 * z[target]['acc']:.1f} ({t_ratio:.3f} {t_ok})",
        f"{100 * m['retain_acc_original']:.1f} → {100 * m['retain_acc']:.1f} ({r_ratio:.3f} {r_ok})",
        *(f"{100 * z[k]['acc_original']:.1f} → {100 * z[k]['acc']:.1f}" for k in retained if k.startswith("imagenet")),
        f"{m['score']:.1f} {mark(m['score'] >= GOALS['score'])}",
        f"{m['alpha']:.2f}",
        f"{m['total_seconds']:.0f} s ({seconds:.0f} in stages)",
        f"{rss:.2f}",
    ]
    return "| " + " | ".join(cells) + " |"


def main(paths: list[str]) -> None:
    print("| forget class | CIFAR-10 target % (ratio) | other nine % (ratio) | ImageNet class % "
          "| ImageNet all mapped % | Score | α | run time | peak RSS GiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        run = Path(path)
        if (run / "metrics.json").is_file():
            print(row(run))


if __name__ == "__main__":
    main(sys.argv[1:])

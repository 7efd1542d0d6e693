"""Peak resident memory and seconds of one run, phase by phase, on the CLI's path (inputs handed over to the run).

    CLIPFORGET_DATA=../shared/data .venv/bin/python benchmarks/bench_run_memory.py [--setting cifar10]
        [--forget-class airplane] [--size paper] [--keep-pixels] [--interval 0.02]

A thread reads this process's RSS every ``--interval`` seconds; the phases are the model's loading, the setting's
construction (decoding), and each progress stage the run reports (``prefix``, ``evaluate``, ``forget``, ``remind``,
``restore``). Issue 18's bound for `run cifar10 --forget-class airplane` is 3 GiB (docs/history/experiments.md D31).
``--keep-pixels`` runs as ``bench`` does (the caller keeps its pixel sets) for comparison.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from common import rss_mb

from clipforget.core.devices import configure_backends, resolve_device
from clipforget.methods.registry import get_method, seed_config
from clipforget.models.factory import DEFAULT_MODEL, create_model
from clipforget.pipeline.run import run_method
from clipforget.settings import get_setting


class PhaseSampler:
    """Peak RSS and seconds per named phase, sampled by a daemon thread."""

    def __init__(self, interval: float):
        self.interval = interval
        self.phase = "start"
        self.peaks: dict[str, float] = {}
        self.started: dict[str, float] = {"start": time.perf_counter()}
        self.seconds: dict[str, float] = {}
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        while True:
            phase = self.phase
            self.peaks[phase] = max(self.peaks.get(phase, 0.0), rss_mb())
            time.sleep(self.interval)

    def enter(self, phase: str) -> None:
        if phase == self.phase:
            return
        now = time.perf_counter()
        self.seconds[self.phase] = self.seconds.get(self.phase, 0.0) + now - self.started[self.phase]
        self.peaks[phase] = max(self.peaks.get(phase, 0.0), rss_mb())
        self.phase, self.started[phase] = phase, now


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", default="cifar10")
    p.add_argument("--forget-class", default="airplane")
    p.add_argument("--size", default="paper")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--method", default="ours")
    p.add_argument("--keep-pixels", action="store_true", help="the caller keeps its pixel sets (as `bench` does)")
    p.add_argument("--interval", type=float, default=0.02)
    args = p.parse_args(argv)

    sampler = PhaseSampler(args.interval)
    sampler.enter("model")
    device = resolve_device("auto")
    configure_backends(device)
    bundle = create_model(args.model, device=device)
    sampler.enter("data")
    options = {"forget_class": args.forget_class} if args.forget_class else {}
    task, eval_sets = get_setting(args.setting).build(bundle.image_size, 0, args.size, **options)
    config = get_method(args.method).config_cls()
    seed_config(config, 0)
    with tempfile.TemporaryDirectory() as out:
        result = run_method(bundle, task, Path(out) / "run", args.method, config, eval_sets,
                            lambda stage, fraction, message: sampler.enter(stage), keep_pixels=args.keep_pixels)
        sampler.enter("end")
        if result.prefixed is not None:
            result.prefixed.release()
    time.sleep(4 * args.interval)
    print(json.dumps({
        "setting": args.setting, "forget_class": args.forget_class, "size": args.size, "model": args.model,
        "keep_pixels": args.keep_pixels, "score": round(result.metrics["score"], 2),
        "peak_rss_mb": round(max(sampler.peaks.values())),
        "phase_peak_rss_mb": {k: round(v) for k, v in sampler.peaks.items()},
        "phase_seconds": {k: round(v, 1) for k, v in sampler.seconds.items()},
        "stage_seconds": result.metrics["stage_seconds"],
    }, indent=2))


if __name__ == "__main__":
    main()

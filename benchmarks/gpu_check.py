"""GPU check: the CUDA path end to end, with timings -- one script for the one run a lent GPU allows.

    python benchmarks/gpu_check.py                    # on CUDA; prints a table, writes $OUT/gpu_check.json if $OUT
    python benchmarks/gpu_check.py --device cpu --quick   # the same steps, small, on the CPU (checks the script)

Steps (``--steps``; each timed, a failing one recorded and the next one run): ``env``; ``forward``, the image
encoder's pure forward images/s (uint8 batches in pinned host memory -> embeddings on the host); ``build``, an index
build and its share of the pure forward (goal >= 90 %); ``run``, the app's default run (``fast``, CIFAR-10 airplane)
through ``clipforget.jobs.execute`` (goal: the three stages <= 60 s on an H100-class GPU); ``grid``, the 21-alpha grid
alone; ``faiss``, exact top-20 search, CPU vs GPU; ``worker``, a quick run by a ``local`` worker on the device;
``rn50``, open_clip RN50 at 224 px (stand-in weights unless ``--paper-weights FILE``): tower images/s, then the
paper-size ``cifar10`` airplane run (``--quick``: a handful of images, two steps a stage). More: docs/backends.md,
"The GPU check".

On a machine without CUDA and without ``--device cpu`` it says so and exits 0. Data: the data root must hold
``cifar10/{train,test}``, ``imagenet-samples`` and ``breeds``, or the subset ``benchmarks/gpu_pack.py`` packs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import ms, random_images, timed

from clipforget.core.devices import autocast_dtype, configure_backends
from clipforget.core.paths import data_root
from clipforget.models.factory import DEFAULT_MODEL


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _throughput(encode: Callable[[torch.Tensor], Any], images: torch.Tensor, seconds: float, device: str,
                warm_ups: int = 1) -> tuple[int, float]:
    """Images ``encode`` went through in about ``seconds`` of batches of ``images`` (after warm-ups), and the wall
    seconds it took (synchronised: the device's queued work counts)."""
    for _ in range(warm_ups):
        encode(images)
    _sync(device)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        encode(images)
        n += len(images)
    _sync(device)
    return n, time.perf_counter() - t0


def step_env(device: str) -> dict[str, Any]:
    from clipforget.retrieval.gpu import faiss_gpus

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "device": device, "cpus": os.cpu_count(),
                            "autocast": str(autocast_dtype(device)).replace("torch.", "")}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", bf16=torch.cuda.is_bf16_supported(),
                    cudnn=torch.backends.cudnn.version())
    try:
        import faiss

        info.update(faiss=faiss.__version__, faiss_gpus=faiss_gpus())
    except ImportError:
        info["faiss"] = None
    return info


def step_forward(device: str, model: str, batch: int, seconds: float) -> dict[str, Any]:
    from index_builder.encoder import ClipImageEncoder

    encoder = ClipImageEncoder.from_spec(model, device)
    size = encoder.image_size
    images = random_images(batch, size)
    if device.startswith("cuda"):
        images = images.pin_memory()
    # host -> device, forward under autocast, embeddings back to the host
    n, wall = _throughput(encoder, images, seconds, device, warm_ups=3)
    return {"batch": batch, "image_size": size, "images": n, "seconds": round(wall, 2),
            "images_per_second": round(n / wall, 1)}


def gallery_folders(limit: int | None, tmp: Path) -> list[Path]:
    """CIFAR-10 test + the ImageNet samples (the app's default gallery); ``limit``: files per folder, as links."""
    root = data_root()
    sources = [root / "cifar10" / "test", root / "imagenet-samples"]
    sources = [s for s in sources if s.is_dir()]
    if not limit:
        return sources
    out = []
    for src in sources:
        dst = tmp / "gallery" / src.name
        folders = [d for d in sorted(src.iterdir()) if d.is_dir()] or [src]
        for folder in folders:
            target = dst / folder.name if folder != src else dst
            target.mkdir(parents=True, exist_ok=True)
            for f in sorted(p for p in folder.iterdir() if p.is_file())[:limit]:
                (target / f.name).symlink_to(f)
        out.append(dst)
    return out


def step_build(device: str, model: str, galleries: list[Path], tmp: Path, batch: int, workers: int,
               forward: dict[str, Any] | None) -> dict[str, Any]:
    from index_builder.build import BuildConfig, build

    out = build([str(g) for g in galleries], tmp / "index", BuildConfig(model=model, batch_size=batch,
                                                                         workers=workers, device=device,
                                                                         progress=False))
    info = json.loads((out / "info.json").read_text())
    timing = info["build"]
    result = {"images": info["count"], "skipped": info["skipped"], "decode_workers": workers, **timing}
    if forward:
        result["share_of_forward"] = round(timing["images_per_second"] / forward["images_per_second"], 3)
    return result


def step_run(device: str, model: str, profile: str, galleries: list[Path], tmp: Path) -> dict[str, Any]:
    from clipforget.jobs.execute import execute
    from clipforget.jobs.model_cache import ModelCache
    from clipforget.jobs.spec import RunSpec

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    models = ModelCache(device)
    load = timed(models.get, model)[1]
    spec = RunSpec(RunSpec.new_id("gpu-check"), "gpucheck00", "gpu check", model, "cifar10",
                   {"forget_class": "airplane"}, profile, gallery="check", gallery_sources=[str(g) for g in galleries])
    run_dir = tmp / "runs" / spec.run_id
    run_dir.mkdir(parents=True)
    spec.write(run_dir)
    marks: dict[str, float] = {}

    def progress(stage: str, fraction: float, message: str) -> None:
        now = time.perf_counter()
        marks.setdefault(stage, now)
        marks[f"{stage}:end"] = now

    total = timed(execute, spec, run_dir, models, progress, cache_root=tmp / "cache")[1]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    stage_wall = {s: round(marks[f"{s}:end"] - marks[s], 2) for s in ("prepare", "curves") if s in marks}
    result = {"profile": profile, "model_load_seconds": round(load, 2), "execute_seconds": round(total, 2),
              "stage_seconds": metrics.get("stage_seconds"), "three_stages_seconds": metrics.get("method_seconds"),
              "evaluation_seconds": metrics.get("evaluation_seconds"), "wall_seconds_of": stage_wall,
              "score": metrics.get("score"), "alpha": metrics.get("alpha"),
              "target_acc": [metrics.get("target_acc_original"), metrics.get("target_acc")],
              "retain_acc": [metrics.get("retain_acc_original"), metrics.get("retain_acc")], "run_dir": str(run_dir)}
    if device.startswith("cuda"):
        result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def step_grid(device: str, model: str, run_dir: str, tmp: Path, workers: int) -> dict[str, Any]:
    from clipforget.jobs.galleries import index_folder
    from clipforget.jobs.model_cache import ModelCache
    from clipforget.pipeline.folder import RunFolder
    from index_builder.alpha_grid import AlphaGridConfig, compute_alpha_grid

    bundle = ModelCache(device).get(model)
    index = index_folder(tmp / "cache", bundle, "check")
    theta_u = RunFolder(run_dir).unlearned_state(device)
    t0 = time.perf_counter()
    out = compute_alpha_grid(bundle, theta_u, index, tmp / "grid", AlphaGridConfig(workers=workers, device=device),
                             overwrite=True)
    _sync(device)
    seconds = time.perf_counter() - t0
    info = json.loads((out / "grid.json").read_text())
    rows, alphas = info["count"], len(info["alphas"])
    return {"seconds": round(seconds, 2), "rows": rows, "alphas": alphas,
            "image_alphas_per_second": round(rows * alphas / seconds, 1) if rows and seconds else None}


def step_faiss(device: str, quick: bool) -> dict[str, Any]:
    import faiss

    from clipforget.retrieval.gpu import faiss_gpus, knn_gpu

    n = 100_000 if quick else 1_000_000
    dim, k, q = 256, 20, 200
    rng = np.random.default_rng(0)
    base = rng.standard_normal((n, dim), dtype=np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = np.ascontiguousarray(base[rng.integers(0, n, q)] + 0.01, dtype=np.float32)
    out: dict[str, Any] = {"rows": n, "dim": dim, "queries": q, "k": k}

    def p50_p95(search: Callable[[np.ndarray], Any]) -> list[float]:  # one query at a time, as the app asks
        timings = [ms(search, queries[i : i + 1]) for i in range(q)]
        return [round(float(np.percentile(timings, p)), 2) for p in (50, 95)]

    out["cpu_ms_p50_p95"] = p50_p95(lambda x: faiss.knn(x, base, k, metric=faiss.METRIC_INNER_PRODUCT))
    if faiss_gpus() > 0:
        knn_gpu(queries[:1], base, k)
        out["gpu_ms_p50_p95"] = p50_p95(lambda x: knn_gpu(x, base, k))
    else:
        out["gpu"] = "this FAISS has no GPU support (faiss-cpu): GPU search not measured"
    return out


def step_worker(device: str, model: str, tmp: Path) -> dict[str, Any]:
    from clipforget.jobs.local import LocalBackend
    from clipforget.jobs.spec import RunSpec

    backend = LocalBackend(tmp / "wcache" / "queue", workers=1, device=device, cache_dir=tmp / "wcache")
    try:
        spec = RunSpec(RunSpec.new_id("gpu-worker"), "gpucheck00", "worker", model, "cifar10",
                       {"forget_class": "airplane"}, "quick")
        t0 = time.perf_counter()
        backend.submit(spec, tmp / "wcache" / "runs" / spec.run_id)
        snap = backend.wait(spec.run_id, timeout=900)
        return {"state": snap["state"], "error": snap.get("error"), "device": snap.get("device"),
                "worker": snap.get("worker"), "seconds_incl_worker_start": round(time.perf_counter() - t0, 1)}
    finally:
        backend.close()


QUICK_STEPS = ("forget.steps=2", "forget.fisher_samples=8", "forget.batch_size=8", "remind.align_images=8",
               "remind.align_steps=2", "remind.steps=2", "remind.batch_size=8", "restore.alphas=[0.0, 0.5, 1.0]",
               "mining.samples=8")


def step_paper_model(device: str, quick: bool, tmp: Path, weights: str | None, arch: str = "RN50") -> dict[str, Any]:
    from clipforget.methods.registry import get_method, override_config, seed_config
    from clipforget.models.encode import encode_images
    from clipforget.models.factory import create_model
    from clipforget.models.standin import write_standin
    from clipforget.pipeline.run import run_method
    from clipforget.settings.cifar10 import SIZES, Cifar10Sizes, cifar10_class_task

    t0 = time.perf_counter()
    standin = weights is None
    if standin:
        weights = str(write_standin(arch, tmp / f"{arch}-standin.pt", seed=0))
    bundle = create_model(f"{arch}:{weights}", device=device)
    result: dict[str, Any] = {"model": arch, "standin_weights": standin, "image_size": bundle.image_size,
                              "load_seconds": round(time.perf_counter() - t0, 1)}

    # the tower alone: uint8 batches -> embeddings, the share of every image the method and the index encode
    images = random_images(8 if quick else 128, bundle.image_size)
    n, wall = _throughput(lambda x: encode_images(bundle, x), images, 2.0 if quick else 10.0, device)
    result["tower_images_per_second"] = round(n / wall, 1)

    sizes = Cifar10Sizes(forget=8, retain_per_class=2, calibration_forget=4, calibration_retain_per_class=1,
                         eval_per_class=2, reference_tiny_per_class=0) if quick else SIZES["paper"]
    task, eval_sets = cifar10_class_task(bundle.image_size, 0, sizes, "airplane")
    if quick:
        eval_sets = eval_sets[:2]  # CIFAR-10 test only: the 1,000 ImageNet samples are minutes at 224 px on a CPU
    config = get_method("ours").config_cls()
    seed_config(config, 0)
    for assignment in QUICK_STEPS if quick else ():
        override_config(config, assignment)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    run = run_method(bundle, task, tmp / "rn50-run", "ours", config, eval_sets, prefix_cache=True, keep_pixels=False)
    m = run.metrics
    result.update(run_seconds=round(time.perf_counter() - t0, 1), size="quick" if quick else "paper",
                  images={"forget": len(task.forget), "retain": len(task.retain)},
                  stage_seconds=m.get("stage_seconds"), three_stages_seconds=m.get("method_seconds"),
                  evaluation_seconds=m.get("evaluation_seconds"), prefix=m.get("prefix_cache"),
                  peak_rss_mb=m.get("peak_rss_mb"), score=m.get("score"), alpha=m.get("alpha"))
    if device.startswith("cuda"):
        result["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--quick", action="store_true", help="small gallery, quick profile, short timings")
    p.add_argument("--profile", default=None, help="run profile (default: fast, or quick with --quick)")
    p.add_argument("--gallery-limit", type=int, default=None, help="files per gallery sub-folder (default: all)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: min(16, CPUs))")
    p.add_argument("--steps", default="env,forward,build,run,grid,faiss,worker,rn50")
    p.add_argument("--paper-weights", default=None,
                   help="RN50 weights file for the rn50 step (default: a stand-in with seeded random weights)")
    p.add_argument("--out", default=os.environ.get("OUT"), help="folder for gpu_check.json (default: $OUT)")
    args = p.parse_args(argv)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible -- nothing to check here. Run it where a GPU is lent "
              "(docs/backends.md), or check the script itself with: --device cpu --quick")
        return 0
    configure_backends(device)
    profile = args.profile or ("quick" if args.quick else "fast")
    limit = args.gallery_limit if args.gallery_limit is not None else (20 if args.quick else None)
    workers = args.workers if args.workers is not None else min(16, os.cpu_count() or 1)
    steps = args.steps.split(",")
    results: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "args": vars(args)}
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    galleries = gallery_folders(limit, tmp)

    def run(name: str, fn: Callable[[], dict[str, Any]]) -> None:
        if name not in steps:
            return
        t0 = time.perf_counter()
        print(f"[{name}] ...", flush=True)
        try:
            results[name] = fn()
        except Exception as err:  # keep going: one run of the script must report as much as it can
            results[name] = {"error": f"{type(err).__name__}: {err}", "trace": traceback.format_exc(limit=8)}
        results[name]["step_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[{name}] {json.dumps({k: v for k, v in results[name].items() if k != 'trace'})}", flush=True)
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "gpu_check.json").write_text(json.dumps(results, indent=2))

    run("env", lambda: step_env(device))
    run("forward", lambda: step_forward(device, args.model, args.batch_size, 3.0 if args.quick else 15.0))
    run("build", lambda: step_build(device, args.model, galleries, tmp, args.batch_size, workers,
                                    results.get("forward") if "error" not in results.get("forward", {}) else None))
    run("run", lambda: step_run(device, args.model, profile, galleries, tmp))
    if "run_dir" in results.get("run", {}):
        run("grid", lambda: step_grid(device, args.model, results["run"]["run_dir"], tmp, workers))
    run("faiss", lambda: step_faiss(device, args.quick))
    run("worker", lambda: step_worker(device, args.model, tmp))
    run("rn50", lambda: step_paper_model(device, args.quick, tmp, args.paper_weights))
    print("\n== gpu_check summary")
    for line in summary_lines(results):
        print(line)
    return 0


def summary_lines(r: dict[str, Any]) -> list[str]:
    env, fwd, bld, run, grid = (r.get(k, {}) for k in ("env", "forward", "build", "run", "grid"))
    lines = [f"device: {env.get('gpu', env.get('device'))}, torch {env.get('torch')}, CUDA {env.get('cuda')}, "
             f"autocast {env.get('autocast')}, FAISS GPUs {env.get('faiss_gpus')}"]
    if "images_per_second" in fwd:
        lines.append(f"pure forward: {fwd['images_per_second']:.0f} images/s (batch {fwd['batch']}, "
                     f"{fwd['image_size']} px)")
    if "images_per_second" in bld:
        share = f", {100 * bld['share_of_forward']:.0f} % of pure forward" if "share_of_forward" in bld else ""
        lines.append(f"index build: {bld['images']} images at {bld['images_per_second']:.0f} images/s{share}")
    if "execute_seconds" in run:
        lines.append(f"run ({run['profile']}): three stages {run['three_stages_seconds']} s "
                     f"{run['stage_seconds']}, whole run {run['execute_seconds']} s, Score {run['score']}, "
                     f"alpha {run['alpha']}")
    if "seconds" in grid:
        lines.append(f"alpha grid: {grid['alphas']} alphas x {grid['rows']} images in {grid['seconds']} s")
    rn50 = r.get("rn50", {})
    if "stage_seconds" in rn50:
        memory = f", peak GPU memory {rn50['peak_gpu_memory_gb']} GB" if "peak_gpu_memory_gb" in rn50 else ""
        lines.append(f"RN50 at {rn50['image_size']} px ({rn50['size']}): tower {rn50['tower_images_per_second']} "
                     f"images/s, three stages {rn50['three_stages_seconds']} s {rn50['stage_seconds']}{memory}")
    for name in ("faiss", "worker"):
        if name in r:
            lines.append(f"{name}: {json.dumps({k: v for k, v in r[name].items() if k != 'trace'})}")
    lines += [f"FAILED {k}: {v['error']}" for k, v in r.items() if isinstance(v, dict) and "error" in v and v["error"]
              and k != "worker"]
    return lines


if __name__ == "__main__":
    sys.exit(main())

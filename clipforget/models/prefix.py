"""Prefix activations: run the frozen start of an image tower once per image, the rest (the suffix) many times.

:func:`plan_cut` finds where the tower can be cut before the layers a method may change, :func:`prefix_activations`
computes what enters the suffix, and :func:`suffix_tower` is a copy of the tower that takes those activations as its
input, with the same state-dict keys for the layers it keeps (so peft targets, soups and checkpoints work unchanged).
:class:`SuffixBundle` is a bundle whose image inputs are cached activations, so the stages run on it unchanged;
:class:`PrefixCache` computes each image set's activations once (fp16). Tower types are plug-ins behind one interface
(:class:`ChainSplitter`, :class:`VisionTransformerSplitter`). Where and why the tower is cut: docs/decisions.md D11.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from clipforget.data.images import ImageSet

from .encode import autocast, in_chunks
from .factory import ClipBundle, with_tower
from .inputs import ActivationSpace
from .weights import State

# --- chains of sub-modules ---------------------------------------------------------------------------------------


def flatten_stages(visual: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level children in registration order, plain ``nn.Sequential`` opened up recursively (dotted names)."""

    def expand(prefix: str, module: nn.Module) -> list[tuple[str, nn.Module]]:
        if type(module) is nn.Sequential:
            return [s for name, child in module.named_children() for s in expand(f"{prefix}.{name}", child)]
        return [(prefix, module)]

    return [s for name, child in visual.named_children() for s in expand(name, child)]


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)


def _snapshot(value: Any) -> Any:
    """A copy taken when a hook fires: later in-place ops (``out += identity``) must not alter what was seen."""
    return value.detach().clone() if isinstance(value, torch.Tensor) else value


def _chain_of_children(module: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor]] | None:
    """``[(name, child, its input)]`` when ``module(x)`` is exactly its children called once each, in registration
    order, each on the previous one's output (equal values: identity ops such as dropout in eval may sit between),
    returning the last one's output; ``None`` otherwise (residual blocks, modules that read children's weights)."""
    children = list(module.named_children())
    if not children or any(True for _ in module.parameters(recurse=False)) or \
            any(True for _ in module.buffers(recurse=False)):
        return None
    calls: list[tuple[str, tuple, Any]] = []
    inputs: dict[str, tuple] = {}
    hooks = [child.register_forward_pre_hook(
        lambda m, args, name=name: inputs.__setitem__(name, tuple(_snapshot(a) for a in args)))
        for name, child in children]
    hooks += [child.register_forward_hook(
        lambda m, args, out, name=name: calls.append((name, inputs[name], _snapshot(out))))
        for name, child in children]
    try:
        output = module(x)
    finally:
        for hook in hooks:
            hook.remove()
    if [c[0] for c in calls] != [name for name, _ in children]:
        return None
    previous: Any = x
    for _, args, out in calls:
        if len(args) != 1 or not _same(args[0], previous):
            return None
        previous = out
    if not _same(output, previous):
        return None
    return [(name, child, args[0]) for (name, child), (_, args, _) in zip(children, calls, strict=True)]


@torch.no_grad()
def sequential_stages(visual: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module]] | None:
    """The tower as the finest chain of sub-modules whose consecutive forward calls reproduce its forward.

    A module is opened up when :func:`_chain_of_children` confirms (with forward hooks on ``example``) that its
    forward is exactly its children in order, and the children are opened up in turn; residual blocks and modules
    that read their children's weights directly stay whole. ``None`` when the tower itself cannot be opened.
    Works for open_clip's ModifiedResNet (stem modules, ``layer1.0`` ... ``layer4.1``, ``attnpool``) and timm towers
    wrapped by open_clip (``trunk.conv_stem``, ``trunk.blocks.0.0``, ..., ``trunk.global_pool``, ``head.proj``).
    """
    def expand(prefix: str, module: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module]]:
        chain = _chain_of_children(module, x)
        if chain is None:
            return [(prefix, module)]
        return [s for name, child, inp in chain for s in expand(f"{prefix}.{name}" if prefix else name, child, inp)]

    stages = expand("", visual, example)
    return None if len(stages) == 1 and stages[0][0] == "" else stages


# --- where to cut -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TowerCut:
    """A cut of an image tower: ``stages`` in forward order, the suffix starting at ``stages[split]``."""

    kind: str  # the splitter's name
    stages: tuple[str, ...]
    split: int

    @property
    def first_suffix_stage(self) -> str:
        return self.stages[self.split]

    @property
    def prefix_stages(self) -> tuple[str, ...]:
        return self.stages[: self.split]

    def in_prefix(self, key: str) -> bool:
        """Whether a module name or state-dict key belongs to a prefix stage."""
        return any(key == s or key.startswith(s + ".") for s in self.prefix_stages)


def replace_submodule(module: nn.Module, name: str, replacement: nn.Module) -> None:
    """Put ``replacement`` where the sub-module ``name`` of ``module`` is (same name, so hooks and paths resolve)."""
    parent_name, _, child = name.rpartition(".")
    setattr(module.get_submodule(parent_name) if parent_name else module, child, replacement)


class ChainSplitter:
    """Towers whose forward is a chain of sub-modules; the suffix copy has the prefix stages replaced by Identity."""

    name = "chain"

    def applies(self, visual: nn.Module) -> bool:
        return True

    def stages(self, visual: nn.Module, example: torch.Tensor) -> list[str] | None:
        stages = sequential_stages(visual, example)
        return [n for n, _ in stages] if stages else None

    def suffix(self, visual: nn.Module, cut: TowerCut) -> nn.Module:
        tower = copy.deepcopy(visual)
        for name in cut.prefix_stages:
            replace_submodule(tower, name, nn.Identity())
        return tower


class _SkipBlock(nn.Module):
    """A residual block left out of a ViT's suffix (it belongs to the prefix)."""

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return x


def _vit_suffix_embeds(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return x  # the cached activations already are the tokens entering the first suffix block


class VisionTransformerSplitter:
    """open_clip's VisionTransformer, cut between residual blocks (tokens ``N,L,D`` are what gets cached)."""

    name = "vit"

    def applies(self, visual: nn.Module) -> bool:
        from open_clip.transformer import VisionTransformer

        return isinstance(visual, VisionTransformer)

    def stages(self, visual: nn.Module, example: torch.Tensor) -> list[str] | None:
        return [f"transformer.resblocks.{i}" for i in range(len(visual.transformer.resblocks))]

    def suffix(self, visual: nn.Module, cut: TowerCut) -> nn.Module:
        tower = copy.deepcopy(visual)
        for name in cut.prefix_stages:
            replace_submodule(tower, name, _SkipBlock())
        tower._embeds = types.MethodType(_vit_suffix_embeds, tower)
        return tower


SPLITTERS: list[Any] = [VisionTransformerSplitter(), ChainSplitter()]


def tower_stages(visual: nn.Module, example: torch.Tensor) -> tuple[str, tuple[str, ...]] | None:
    """``(splitter name, stage names in forward order)`` of ``visual``, or ``None`` when it cannot be split.
    ``example``: a normalised input batch for the forward-hook checks (run in eval mode)."""
    splitter = next(s for s in SPLITTERS if s.applies(visual))
    was_training = visual.training
    visual.eval()
    try:
        stages = splitter.stages(visual, example)
    finally:
        visual.train(was_training)
    return (splitter.name, tuple(stages)) if stages else None


def stage_of(stages: Sequence[str], name: str) -> int:
    """The stage holding a module name or state-dict key; 0 for one outside every stage (nothing before it can be
    cached)."""
    return next((i for i, s in enumerate(stages) if name == s or name.startswith(s + ".")), 0)


def plan_cut(visual: nn.Module, example: torch.Tensor, layers: Sequence[str] | None) -> TowerCut | None:
    """The cut of ``visual`` just before the first stage that holds one of ``layers`` (module names), or ``None``
    when nothing can be cached: ``layers`` is ``None`` (the method may change any layer), the tower cannot be split,
    or the first layer sits in the first stage. ``example``: a normalised input batch for the forward-hook checks."""
    if not layers:
        return None
    found = tower_stages(visual, example)
    if found is None:
        return None
    kind, stages = found
    split = min(stage_of(stages, layer) for layer in layers)
    return TowerCut(kind, stages, split) if split > 0 else None


# --- prefix and suffix ---------------------------------------------------------------------------------------------


class _Cut(Exception):
    """Raised by the pre-hook on the first suffix stage: the prefix is done."""


@torch.no_grad()
def prefix_activations(visual: nn.Module, cut: TowerCut, inputs: torch.Tensor) -> torch.Tensor:
    """Normalised inputs -> the activations entering ``cut.first_suffix_stage`` (the tower's own forward, stopped
    there by a pre-hook; ViT tokens are returned batch first)."""
    seen: list[torch.Tensor] = []

    def stop(module: nn.Module, args: tuple) -> None:
        seen.append(args[0])
        raise _Cut

    hook = visual.get_submodule(cut.first_suffix_stage).register_forward_pre_hook(stop)
    try:
        visual(inputs)
    except _Cut:
        pass
    finally:
        hook.remove()
    if not seen:
        raise RuntimeError(f"the tower's forward never reached {cut.first_suffix_stage}")
    h = seen[0]
    if cut.kind == "vit" and not getattr(visual.transformer, "batch_first", True):
        h = h.transpose(0, 1)
    return h


def suffix_tower(visual: nn.Module, cut: TowerCut) -> nn.Module:
    """A copy of ``visual`` whose forward takes the activations entering ``cut.first_suffix_stage``; the layers it
    keeps have the same module names and state-dict keys, the prefix's weights are gone."""
    return next(s for s in SPLITTERS if s.name == cut.kind).suffix(visual, cut)


@dataclass
class SuffixBundle(ClipBundle):
    """A bundle whose image tower is a :func:`suffix_tower` and whose image inputs are prefix activations."""

    cut: TowerCut | None = None
    tower_layers_full: tuple[str, ...] = ()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return images.to(self.device, non_blocking=True).float()

    def tower_layers(self) -> list[str]:
        """The *whole* tower's adaptable layers: methods choose layers by their position in the full tower, and the
        cut was planned so that the ones they choose are in the suffix."""
        return list(self.tower_layers_full)

    @property
    def input_space(self) -> ActivationSpace:
        return ActivationSpace()


def batch_size_for(device: torch.device) -> int:
    """Images per prefix batch: larger on a GPU (bounded by its memory), 256 on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(max(256, min(4096, free // (64 << 20) * 64)))
    return 256


class PrefixCache:
    """Each image set's prefix activations, computed once under the original weights and kept in fp16.

    :attr:`suffix_bundle` runs the rest of the tower on them; :meth:`full_state` / :meth:`suffix_state` convert
    between the full tower's state and the suffix's. :meth:`release` drops the activations at the end of a run.
    """

    def __init__(self, bundle: ClipBundle, cut: TowerCut, batch_size: int | None = None,
                 on_encoded: Callable[[int], None] | None = None):
        self.bundle = bundle
        self.cut = cut
        self.batch_size = batch_size or batch_size_for(bundle.device)
        self._prefix = copy.deepcopy(bundle.model.visual).eval()
        for p in self._prefix.parameters():
            p.requires_grad_(False)
        suffix = suffix_tower(bundle.model.visual, cut).eval()
        layers = tuple(bundle.tower_layers())
        base = {f.name: getattr(bundle, f.name) for f in dataclasses.fields(ClipBundle)}
        self.suffix_bundle = SuffixBundle(**{**base, "model": with_tower(bundle.model, suffix)}, cut=cut,
                                          tower_layers_full=layers)
        # id(pixels) -> (weak reference to the pixels, their activations): the cache never keeps pixels alive
        self._memo: dict[int, tuple[weakref.ref, torch.Tensor]] = {}
        self.images_encoded = 0
        self.on_encoded = on_encoded  # called with the running count of encoded images

    @torch.no_grad()
    def activations(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images ``N,3,S,S`` -> fp16 activations entering the suffix (memoised per tensor)."""
        key = id(images)
        if key in self._memo and self._memo[key][0]() is images:
            return self._memo[key][1]
        parts = []
        for start in range(0, len(images), self.batch_size):
            x = self.bundle.normalize(images[start : start + self.batch_size])
            with autocast(self.bundle):
                h = in_chunks(lambda part: prefix_activations(self._prefix, self.cut, part),
                              x.contiguous(memory_format=torch.channels_last))
            parts.append(h.to(torch.float16).cpu())
            self.images_encoded += len(x)
            if self.on_encoded:
                self.on_encoded(self.images_encoded)
        out = torch.cat(parts) if parts else torch.zeros((0,), dtype=torch.float16)
        self._memo[key] = (weakref.ref(images), out)
        return out

    def image_set(self, images: ImageSet | None) -> ImageSet | None:
        if images is None:
            return None
        return ImageSet(self.activations(images.images), images.labels, images.paths, images.skipped)

    @property
    def cached_bytes(self) -> int:
        return sum(h.numel() * h.element_size() for _, h in self._memo.values())

    def suffix_state(self, full: State) -> State:
        return {k: v for k, v in full.items() if not self.cut.in_prefix(k)}

    def full_state(self, suffix: State, original: State | None = None) -> State:
        """The full tower's state: the prefix from ``original`` (default: the bundle's), the suffix from ``suffix``."""
        base = original if original is not None else self.bundle.visual_state()
        return {k: (suffix[k] if k in suffix else v) for k, v in base.items()}

    def release(self) -> None:
        self._memo.clear()

"""Stage 1, forgetting: relative Fisher layer ranking, LoRA (peft) on the top layers, a bounded forget loss.

Eq. 3 as implemented is bounded (complementary cross-entropy + a cosine hinge), so forgotten images stop pulling and
the model cannot collapse; choices and measurements: docs/decisions.md D1, D2.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from clipforget.core.progress import ProgressFn, no_progress
from clipforget.data.task import UnlearningTask, batches, reference_batches
from clipforget.models.encode import encode_images, encode_text, image_features, logits, text_classifier
from clipforget.models.factory import ClipBundle
from clipforget.models.layers import VisualOnly


@dataclass
class ForgetConfig:
    top_k: int = 3  # layers that get LoRA
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lr: float = 3e-3
    steps: int = 30  # at most; stops earlier once forgotten (stop_prob and stop_hinge; decisions D10)
    batch_size: int = 64
    fisher_samples: int = 128  # images per set for the Fisher estimate
    fisher_micro_batch: int = 8
    eps: float = 1e-4  # clamp of the complementary cross-entropy
    layers: list[str] | None = None  # explicit LoRA targets (ablations); None = top_k of the relative Fisher ranking
    # the ranking's candidates: the last ``candidate_share`` of the adaptable layers in forward order (1.0: all;
    # docs/decisions.md D10)
    candidate_share: float = 0.33
    similarity_weight: float = 10.0  # weight of the cosine hinge (retrieval-side forgetting), 0 disables it
    stop_prob: float = 0.02  # stop early once the mean p(y_c | x) of a forget batch falls below this
    stop_hinge: float = 1e-3  # ... and the cosine hinge of that batch is below this (retrieval forgotten too)
    # similarity anchor: retain images keep their original cosine to the forget label text(s), so forgetting cannot
    # work by moving every image away from that text (which leaves the ranking, i.e. retrieval, unchanged; D9)
    anchor_weight: float = 200.0
    seed: int = 0


@dataclass
class LayerImportance:
    name: str
    fisher_forget: float
    fisher_retain: float
    relative: float
    parameters: int


def layer_fisher(model: nn.Module, layer_names: list[str], loss_fn, inputs: torch.Tensor, targets: torch.Tensor,
                 micro_batch: int = 8) -> dict[str, float]:
    """Empirical Fisher per layer: mean over micro-batches of squared gradients, averaged over parameters."""
    modules = dict(model.named_modules())
    params = {name: list(modules[name].parameters(recurse=False)) for name in layer_names}
    flags = {p: p.requires_grad for name in layer_names for p in params[name]}
    for p in flags:
        p.requires_grad_(True)
    totals = dict.fromkeys(layer_names, 0.0)
    chunks = 0
    for start in range(0, len(inputs), micro_batch):
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model, inputs[start : start + micro_batch], targets[start : start + micro_batch])
        grads = torch.autograd.grad(loss, [p for name in layer_names for p in params[name]], allow_unused=True)
        it = iter(grads)
        for name in layer_names:
            sq, count = 0.0, 0
            for p in params[name]:
                g = next(it)
                if g is not None:
                    sq += float(g.float().pow(2).sum())
                count += p.numel()
            totals[name] += sq / max(count, 1)
        chunks += 1
    for p, flag in flags.items():
        p.requires_grad_(flag)
    return {name: value / max(chunks, 1) for name, value in totals.items()}


def rank_layers(fisher_forget: dict[str, float], fisher_retain: dict[str, float], model: nn.Module,
                eps: float = 1e-30, ratio_floor: float = 1e-3) -> list[LayerImportance]:
    """Sort layers by relative Fisher information ``F_f / F_r``, highest first (the ratio is capped at
    ``1 / ratio_floor`` where the retain Fisher vanishes)."""
    modules = dict(model.named_modules())
    # per-layer floor (docs/decisions.md D1): a floor shared by all layers swamps the late layers' retain Fisher;
    # capping the ratio only guards against F_r ~ 0.
    ranking = [LayerImportance(name, fisher_forget[name], fisher_retain[name],
                               fisher_forget[name] / max(fisher_retain[name], ratio_floor * fisher_forget[name], eps),
                               sum(p.numel() for p in modules[name].parameters(recurse=False)))
               for name in fisher_forget]
    return sorted(ranking, key=lambda r: r.relative, reverse=True)


def zero_shot_ce(bundle: ClipBundle, classifier: torch.Tensor):
    """Loss function (model, uint8 images, label ids) -> zero-shot cross-entropy, for Fisher estimates."""

    def loss_fn(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        feats = image_features(bundle, images, model if hasattr(model, "visual") else VisualOnly(model))
        return F.cross_entropy(logits(bundle, feats, classifier), targets.to(feats.device))

    return loss_fn


@torch.no_grad()
def text_thresholds(bundle: ClipBundle, task: UnlearningTask, texts: torch.Tensor, samples: int = 256) -> torch.Tensor:
    """Per text, the mean cosine similarity of (up to ``samples``) retain images to it under the original model:
    where forget images are pushed down to (the hinge's τ, docs/decisions.md D2)."""
    idx = torch.randperm(len(task.retain), generator=torch.Generator().manual_seed(0))[:samples]
    sims = encode_images(bundle, task.retain.images[idx]) @ texts.to(bundle.device).T
    return sims.mean(0).cpu()


def forget_texts(bundle: ClipBundle, task: UnlearningTask, classifier: torch.Tensor) -> torch.Tensor:
    """``T,D``: the forget images' label texts (rows of ``classifier``) and the task's extra forget prompts."""
    rows = classifier[torch.tensor(sorted(set(task.label_ids(task.forget).tolist())))]
    if not task.forget_prompts:
        return rows
    return torch.cat([rows, encode_text(bundle, list(task.forget_prompts)).to(rows.device)])


class ForgetLoss:
    """Eq. 3 as implemented, shared by the forget and remind stages (docs/decisions.md D2, D9).

    ``forget_term``: complementary cross-entropy of the forget images' coarse label, plus ``similarity_weight`` x
    a cosine hinge ``max(0, cos(image, text) - tau_text)`` over the forget texts (the label, and the task's extra
    forget prompts) with ``tau`` from the retain images under the original model; both bounded. ``anchor_term``:
    retain images keep their original cosine to the forget texts, ``anchor_weight x mean (cos - cos_original)^2``.
    """

    def __init__(self, bundle: ClipBundle, task: UnlearningTask, classifier: torch.Tensor, cfg: ForgetConfig):
        self.bundle = bundle
        self.classifier = classifier
        self.cfg = cfg
        self.texts = forget_texts(bundle, task, classifier)
        self.tau = text_thresholds(bundle, task, self.texts) if cfg.similarity_weight > 0 else None

    def hinge(self, feats: torch.Tensor) -> torch.Tensor:
        """Mean over forget images and texts of ``max(0, cos - tau)``: zero once no forget image is closer to a
        forget text than the retain images typically are."""
        sims = feats @ self.texts.to(feats.device).T
        return F.relu(sims - self.tau.to(feats.device)).mean()

    def forget_term(self, feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        student = logits(self.bundle, feats, self.classifier)
        loss = complementary_ce(student, targets.to(feats.device), self.cfg.eps)
        if self.tau is not None:
            loss = loss + self.cfg.similarity_weight * self.hinge(feats)
        return loss

    @torch.no_grad()
    def forgotten(self, feats: torch.Tensor, targets: torch.Tensor) -> bool:
        """Early stop: the batch's mean p(label) is below ``stop_prob`` and its hinge below ``stop_hinge``."""
        probs = F.softmax(logits(self.bundle, feats, self.classifier), -1)
        p_label = probs.gather(1, targets.view(-1, 1).to(feats.device))
        if float(p_label.mean()) >= self.cfg.stop_prob:
            return False
        return self.tau is None or float(self.hinge(feats)) < self.cfg.stop_hinge

    def anchor_term(self, retain_feats: torch.Tensor, original_feats: torch.Tensor) -> torch.Tensor:
        if self.cfg.anchor_weight <= 0:
            return torch.zeros((), device=retain_feats.device)
        texts = self.texts.to(retain_feats.device)
        drift = retain_feats @ texts.T - original_feats.detach() @ texts.T
        return self.cfg.anchor_weight * drift.pow(2).mean()


def complementary_ce(logit: torch.Tensor, targets: torch.Tensor, eps: float) -> torch.Tensor:
    """``-log(1 - p(y|x))``: bounded forget loss (docs/decisions.md D2)."""
    p = F.softmax(logit, dim=-1).gather(1, targets.view(-1, 1)).squeeze(1)
    return -torch.log((1.0 - p).clamp_min(eps)).mean()


def candidate_layers(tower_layers: list[str], cfg: ForgetConfig) -> list[str]:
    """The ranking's candidates: the last ``candidate_share`` of the tower's adaptable layers, at least ``top_k``
    (decisions D10)."""
    return tower_layers[len(tower_layers) - max(cfg.top_k, round(len(tower_layers) * cfg.candidate_share)):]


def touched_layers(tower_layers: list[str], cfg: ForgetConfig) -> list[str]:
    """Every layer the forget stage reads gradients of or adapts: the candidates and the explicit ``cfg.layers``."""
    return list(dict.fromkeys([*candidate_layers(tower_layers, cfg), *(cfg.layers or [])]))


def relative_fisher(bundle: ClipBundle, task: UnlearningTask, cfg: ForgetConfig) -> list[LayerImportance]:
    """Rank the image tower's adaptable layers by relative Fisher information (forget vs retain)."""
    rng = np.random.default_rng(cfg.seed)
    classifier = text_classifier(bundle, task.classnames)
    visual = bundle.model.visual
    visual.eval()
    names = candidate_layers(bundle.tower_layers(), cfg)
    loss_fn = zero_shot_ce(bundle, classifier)

    def sample(images):
        idx = rng.permutation(len(images))[: cfg.fisher_samples]
        return images.images[torch.from_numpy(idx)], task.label_ids(images)[torch.from_numpy(idx)]

    f_in, f_t = sample(task.forget)
    r_in, r_t = sample(task.retain)
    fisher_f = layer_fisher(visual, names, loss_fn, f_in, f_t, cfg.fisher_micro_batch)
    task.check_cancelled()
    fisher_r = layer_fisher(visual, names, loss_fn, r_in, r_t, cfg.fisher_micro_batch)
    visual.zero_grad(set_to_none=True)
    return rank_layers(fisher_f, fisher_r, visual)


def apply_lora(visual: nn.Module, layer_names: list[str], cfg: ForgetConfig) -> nn.Module:
    """peft LoRA on exactly ``layer_names`` of a copy of the image tower (everything else frozen)."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=layer_names,
                        bias="none")
    return get_peft_model(copy.deepcopy(visual), config)


def forget(bundle: ClipBundle, task: UnlearningTask, cfg: ForgetConfig | None = None,
           progress: ProgressFn = no_progress) -> tuple[nn.Module, list[LayerImportance], dict]:
    """Return (unlearned image tower with LoRA merged, layer ranking, stage log)."""
    cfg = cfg or ForgetConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    progress("forget", 0.0, "ranking layers by relative Fisher information")
    ranking = relative_fisher(bundle, task, cfg)
    chosen = list(cfg.layers) if cfg.layers else [r.name for r in ranking[: cfg.top_k]]
    progress("forget", 0.2, f"LoRA on {', '.join(chosen)}")
    classifier = text_classifier(bundle, task.classnames)
    peft_visual = apply_lora(bundle.model.visual, chosen, cfg)
    peft_visual.eval()  # BatchNorm statistics stay the pre-training ones
    trainable = [p for p in peft_visual.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=cfg.lr)
    labels = task.label_ids(task.forget)
    objective = ForgetLoss(bundle, task, classifier, cfg)
    wrapper = VisualOnly(peft_visual)
    retain_batches = batches(task.retain, task.label_ids(task.retain), cfg.batch_size, rng, cfg.steps)
    references = reference_batches(task, cfg.batch_size, rng, cfg.steps)
    losses = []
    for step, (images, targets, _) in enumerate(batches(task.forget, labels, cfg.batch_size, rng, cfg.steps)):
        task.check_cancelled()
        feats = image_features(bundle, images, wrapper)
        loss = objective.forget_term(feats, targets)
        if cfg.anchor_weight > 0:
            retain_images = next(retain_batches)[0]
            if references is not None:
                retain_images = torch.cat([retain_images, next(references)])
            with torch.no_grad():
                original = image_features(bundle, retain_images)
            loss = loss + objective.anchor_term(image_features(bundle, retain_images, wrapper), original)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        progress("forget", 0.2 + 0.8 * (step + 1) / cfg.steps, f"step {step + 1}/{cfg.steps} loss {losses[-1]:.4f}")
        if objective.forgotten(feats.detach(), targets):
            break
    merged = peft_visual.merge_and_unload()
    for p in merged.parameters():
        p.requires_grad_(False)
    log = {"config": asdict(cfg), "lora_layers": chosen, "losses": losses,
           "thresholds": None if objective.tau is None else objective.tau.tolist()}
    return merged, ranking, log

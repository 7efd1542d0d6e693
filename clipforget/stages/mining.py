"""Forget texts found automatically: the names a model retrieves the forget images by, and the retain images not.

A person forgetting "marmosets inside monkeys" names the coarse label ("monkey"); the model also knows the
subgroup as "marmoset" (and maybe "titi"), and a retrieval audit for those names must come up empty too. The miner
scores every name of a vocabulary (ImageNet-1k's WordNet synonyms and Tiny-ImageNet's names, plus the task's classes)
under the *original* model: a name qualifies when the forget images hold most of its top ranks among forget + retain
(+ reference) images and are, on average, clearly closer to it than the retain images. The forget stage then pushes
the forget images below the retain images' typical similarity to each mined text, while the anchor keeps the retain
images where they were. Choice and measurements: docs/decisions.md D13.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clipforget.core.errors import DataError
from clipforget.data.cifar10 import CIFAR10_CLASSES
from clipforget.data.imagenet import imagenet_classes
from clipforget.data.task import UnlearningTask
from clipforget.data.tiny_imagenet import tiny_imagenet_names
from clipforget.data.wordnet import load_wordnet
from clipforget.models.encode import encode_images, encode_text
from clipforget.models.factory import ClipBundle
from clipforget.retrieval.paraphrases import TRAINING_TEMPLATES, folder_name, related_names

MINING_TEMPLATE = "a photo of a {}."


@dataclass
class MinedText:
    text: str  # the prompt the forget stage uses
    name: str  # the vocabulary name in it
    precision: float  # share of forget images in the name's top ranks (forget + retain + reference images)
    gap: float  # mean cosine of the forget images minus that of the retain images


@dataclass
class MiningConfig:
    max_texts: int = 5  # at most this many mined texts (0: none)
    min_precision: float = 0.8  # forget images' share of the name's top ranks among forget + retain + reference
    min_gap: float = 0.05  # forget minus retain mean cosine, at least ...
    relative_gap: float = 0.6  # ... and at least this share of the best name's gap
    samples: int = 256  # images per set scored
    # other names of the mined ones and of the forget images' folder names (WordNet synonyms and hyponyms in a few
    # templates), kept where they pass the same precision test: the forget stage trains against them too. Off by
    # default: deeper forgetting of every name, paid by the siblings (D34); `--set mining.max_paraphrases=32`
    max_paraphrases: int = 0


def mining_vocabulary(root=None, extra: list[str] | None = None) -> list[str]:
    """Candidate names: ``extra``, CIFAR-10's classes, ImageNet-1k's WordNet synonyms, Tiny-ImageNet's names; those
    the data root lacks are left out."""
    names: list[str] = [*(extra or []), *CIFAR10_CLASSES]
    try:
        for c in imagenet_classes(root):
            names += [n.strip() for n in str(c["name"]).split(",")]
    except (DataError, OSError):
        pass
    try:
        names += tiny_imagenet_names(root)
    except (DataError, OSError):
        pass
    return list(dict.fromkeys(n.replace("_", " ").strip().lower() for n in names if n and n.strip()))


_NAME_CACHE: dict[tuple[str, tuple[str, ...]], torch.Tensor] = {}


@torch.no_grad()
def name_embeddings(bundle: ClipBundle, names: tuple[str, ...]) -> torch.Tensor:
    """The vocabulary's prompt embeddings, kept per model (unlearning never changes the text tower, so a worker
    encodes the ~1,850 names once, not once per run)."""
    key = (str(bundle.spec), names)
    if key not in _NAME_CACHE:
        _NAME_CACHE.clear()  # one vocabulary of one model at a time
        _NAME_CACHE[key] = torch.cat([encode_text(bundle, [MINING_TEMPLATE.format(n) for n in names[i:i + 256]])
                                      .float().cpu() for i in range(0, len(names), 256)])
    return _NAME_CACHE[key]


class _Scorer:
    """Sampled forget, retain and negative (retain + reference) embeddings under the original model, and the
    precision / gap of any texts against them."""

    def __init__(self, bundle: ClipBundle, task: UnlearningTask, cfg: MiningConfig):
        generator = torch.Generator().manual_seed(0)

        def sample(images) -> torch.Tensor:
            idx = torch.randperm(len(images), generator=generator)[: cfg.samples]
            return encode_images(bundle, images.images[idx]).float()

        self.forget, self.retain = sample(task.forget), sample(task.retain)
        self.negatives = torch.cat([self.retain, sample(task.reference)]) \
            if task.reference is not None and len(task.reference) else self.retain

    def score(self, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per text: the forget images' share of its top ranks among forget + negatives, and the forget minus
        retain mean cosine."""
        texts = texts.to(self.forget.device)
        sims_f, sims_n = self.forget @ texts.T, self.negatives.to(texts.device) @ texts.T  # F,V and N,V
        top = min(len(self.forget), 20)
        ranked = torch.cat([sims_f, sims_n]).topk(top, dim=0).indices  # top,V: rows < len(forget) are forget images
        precision = (ranked < len(self.forget)).float().mean(0)
        gap = sims_f.mean(0) - (self.retain.to(texts.device) @ texts.T).mean(0)
        return precision, gap


@torch.no_grad()
def mine_paraphrases(bundle: ClipBundle, task: UnlearningTask, names: list[str],
                     cfg: MiningConfig | None = None) -> list[MinedText]:
    """Other texts of ``names`` (the mined names) and of the forget images' folder names: WordNet synonyms and
    hyponyms (not hypernyms: they name the siblings too) in :data:`TRAINING_TEMPLATES`, kept where they pass the
    miner's precision and gap tests (best first, at most ``cfg.max_paraphrases``)."""
    cfg = cfg or MiningConfig()
    if cfg.max_paraphrases <= 0:
        return []
    folders = [n for n in dict.fromkeys(folder_name(p.replace("\\", "/").rsplit("/", 2)[-2])
                                        for p in task.forget.paths if "/" in p.replace("\\", "/")) if n]
    labels = {str(x).lower() for x in [*task.forget.labels, *task.retain.labels]}
    related = related_names(dict.fromkeys([*names, *folders]), load_wordnet())
    candidates = [(t.format(n), n) for n, family in related.items() if family != "hypernym" and n not in labels
                  for t in TRAINING_TEMPLATES]
    if not candidates:
        return []
    scorer = _Scorer(bundle, task, cfg)
    texts = torch.cat([encode_text(bundle, [c[0] for c in candidates[i:i + 256]]).float()
                       for i in range(0, len(candidates), 256)])
    precision, gap = scorer.score(texts)
    keep = (precision >= cfg.min_precision) & (gap >= cfg.min_gap)
    order = torch.argsort(gap * precision, descending=True)
    found = [MinedText(candidates[i][0], candidates[i][1], float(precision[i]), float(gap[i]))
             for i in order.tolist() if keep[i]]
    return found[: cfg.max_paraphrases]


@torch.no_grad()
def mine_forget_texts(bundle: ClipBundle, task: UnlearningTask, vocabulary: list[str],
                      cfg: MiningConfig | None = None) -> list[MinedText]:
    """The vocabulary names the forget images are retrieved by and the retain images are not (best first)."""
    cfg = cfg or MiningConfig()
    forget_labels = {str(x).lower() for x in task.forget.labels}
    retain_labels = {str(x).lower() for x in task.retain.labels}
    names = [n for n in vocabulary if n not in forget_labels and n not in retain_labels]
    if cfg.max_texts <= 0 or not names:
        return []
    scorer = _Scorer(bundle, task, cfg)
    precision, gap = scorer.score(name_embeddings(bundle, tuple(names)))
    best = float(gap[precision >= cfg.min_precision].max()) if bool((precision >= cfg.min_precision).any()) else 0.0
    keep = (precision >= cfg.min_precision) & (gap >= max(cfg.min_gap, cfg.relative_gap * best))
    order = torch.argsort(gap * precision, descending=True)
    found = [MinedText(MINING_TEMPLATE.format(names[i]), names[i], float(precision[i]), float(gap[i]))
             for i in order.tolist() if keep[i]]
    return found[: cfg.max_texts]

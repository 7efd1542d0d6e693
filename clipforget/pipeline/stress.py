"""Is it really gone? The stress test of a finished run, over held-out photos of a gallery index.

Three tests, each with a verdict a stakeholder can read (forgotten / partly / not) and the numbers behind it: *other
names* (the worst of the texts the subgroup could be found by, :mod:`clipforget.retrieval.paraphrases`),
*relearning* (steps of plain fine-tuning from theta(alpha), beside the same attack on the original) and *unseen
photos* (the share forgotten on the photos the run trained on versus held-out ones). Everything is computed from
prefix activations: each gallery image goes once through the frozen layers before the first layer the run changed,
and every model runs only the rest. The result is written to the run folder (``stress.json``), where the report and
the app read it. What each test does and why: docs/decisions.md D34.
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from clipforget.core.atomic import read_json, write_atomic, write_json
from clipforget.core.errors import DataError
from clipforget.core.paths import cache_dir
from clipforget.core.progress import ProgressFn, no_progress
from clipforget.data.images import read_images
from clipforget.data.task import UnlearningTask
from clipforget.data.wordnet import load_wordnet
from clipforget.models.encode import encode_text, logits, text_classifier, tower_features
from clipforget.models.factory import ClipBundle, weights_fingerprint
from clipforget.models.prefix import PrefixCache, plan_cut
from clipforget.models.weights import State, soup
from clipforget.retrieval.index import GalleryIndex
from clipforget.retrieval.paraphrases import Paraphrase, expand, folder_name, nearest_names, related_names
from clipforget.settings import get_setting
from clipforget.stages.mining import MINING_TEMPLATE, mining_vocabulary, name_embeddings

from .folder import RunFolder

STRESS_FILE = "stress.json"
MAX_STORED_BYTES = 1 << 30  # gallery activations kept in the cache up to this size


@dataclass
class StressConfig:
    k: int = 20
    optimised: int = 10  # names chosen against the unlearned model
    min_before: int = 10  # a text counts for the verdict when the original found at least this many
    worst_bound: int = 3  # forgotten: no counted text finds more than this many after ...
    mean_bound: float = 1.0  # ... and they find at most this many on average
    relearn_steps: tuple[int, ...] = (0, 25, 100, 400)
    relearn_batch: int = 32
    relearn_lr: float = 1e-4  # the learning rate of the paper's fine-tuning baselines on the whole tower
    attack_images: int = 5
    zero_shot_bound: float = 0.2  # relearning: the subgroup's zero-shot accuracy stays <= this share of the original
    unseen_tolerance: float = 0.05
    seed: int = 0


def _changed_layers(theta_u: State, theta_0: State) -> list[str]:
    """Module names of the parameters the run changed."""
    keys = [k for k, v in theta_0.items() if v.is_floating_point() and not torch.equal(v, theta_u[k])]
    return sorted({k.rsplit(".", 1)[0] for k in keys})


class _Encoder:
    """Prefix activations of image sets, and their embeddings under any state of the tower's suffix."""

    def __init__(self, bundle: ClipBundle, layers: list[str]):
        self.original = bundle
        cut = plan_cut(bundle.model.visual, bundle.example_input(), layers)
        self.cache = PrefixCache(bundle, cut) if cut is not None else None
        self.bundle = self.cache.suffix_bundle if self.cache is not None else bundle
        self.visual = copy.deepcopy(self.bundle.model.visual).eval()

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        return self.cache.activations(images) if self.cache is not None else images

    def state(self, full: State) -> State:
        return self.cache.suffix_state(full) if self.cache is not None else full

    @torch.no_grad()
    def embed(self, inputs: torch.Tensor, state: State | None = None, batch: int = 512) -> torch.Tensor:
        if state is not None:
            self.visual.load_state_dict(state)
        self.visual.eval()
        out = [tower_features(self.bundle, self.visual, self.bundle.normalize(inputs[i:i + batch]))
               for i in range(0, len(inputs), batch)]
        return torch.cat(out) if out else torch.zeros((0, 1))


def _gallery_inputs(encoder: _Encoder, gallery: GalleryIndex, image_size: int, progress: ProgressFn,
                    chunk: int = 1024) -> torch.Tensor:
    """Every gallery image's prefix activations (decoded a chunk at a time: the pixels are never all in memory),
    kept in the cache per gallery, model and cut, so that a second stress test of the same gallery takes seconds."""
    cut = encoder.cache.cut if encoder.cache is not None else None
    key = hashlib.sha1(json.dumps([str(gallery.path.resolve()), gallery.info.get("count", len(gallery)),
                                   (gallery.path / "metadata.jsonl").stat().st_mtime if
                                   (gallery.path / "metadata.jsonl").is_file() else 0,
                                   weights_fingerprint(encoder.original), image_size,
                                   cut.first_suffix_stage if cut else None]).encode()).hexdigest()[:16]
    stored = cache_dir() / "stress" / f"{key}.safetensors"
    if stored.is_file():
        try:
            return load_file(str(stored))["inputs"]
        except (OSError, RuntimeError, KeyError):
            pass  # damaged: computed again
    out = _read_gallery(encoder, gallery, image_size, progress, chunk)
    if out.numel() * out.element_size() <= MAX_STORED_BYTES:
        write_atomic(stored, lambda tmp: save_file({"inputs": out.contiguous()}, tmp))
    return out


def _read_gallery(encoder: _Encoder, gallery: GalleryIndex, image_size: int, progress: ProgressFn,
                  chunk: int) -> torch.Tensor:
    files = [Path(p) for p in gallery.paths]
    parts = []
    for start in range(0, len(files), chunk):
        part = files[start:start + chunk]
        images = read_images(part, image_size, [""] * len(part))
        if len(images) != len(part):
            raise DataError(f"gallery files changed since the index was built: {len(part) - len(images)} unreadable")
        parts.append(encoder.inputs(images.images))
        progress("stress", 0.3 * min(start + chunk, len(files)) / len(files),
                 f"reading the gallery: {min(start + chunk, len(files))} / {len(files)} photos")
    return torch.cat(parts)


def _mask(paths: Sequence[str], parts: Sequence[str]) -> np.ndarray:
    norm = [p.replace("\\", "/") for p in paths]
    return np.array([any(part in p for part in parts) for p in norm], dtype=bool)


def _top_counts(emb: np.ndarray, queries: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Per query, how many of the top-``k`` rows of ``emb`` are in ``mask``."""
    scores = queries @ emb.T
    k = min(k, emb.shape[0])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return mask[top].sum(1)


def rebuild_task(run: RunFolder, image_size: int) -> UnlearningTask | None:
    """The run's task from its recorded setting and options (``None`` where the run did not record them)."""
    config = run.config()
    if "setting" not in config:
        return None
    options = dict(config.get("options") or {})
    try:
        task, _ = get_setting(config["setting"]).build(image_size, int(config.get("seed", 0)),
                                                       config.get("size", "paper"), **options)
    except (DataError, OSError, TypeError):
        return None
    return task


# ------------------------------------------------------------------------------------------------- test 1: names
def name_sweep(bundle: ClipBundle, task: UnlearningTask | None, run: RunFolder, before: np.ndarray,
               after: np.ndarray, subgroup: np.ndarray, forget_after: np.ndarray | None, cfg: StressConfig,
               names: Sequence[str] = (), prompts: Sequence[str] = ()) -> dict[str, Any]:
    """Counts of the subgroup in every text's top-k before / after, the worst counted text first."""
    base = [*names, *run.forgotten_names()]
    if task is not None:
        base += [n for n in (folder_name(Path(p).parent.name) for p in task.forget.paths) if n]
    wordnet = load_wordnet()
    related = related_names(dict.fromkeys(base), wordnet)
    texts: list[Paraphrase] = expand(related)
    texts += [Paraphrase(p, p, "user") for p in prompts]
    if forget_after is not None and cfg.optimised > 0:
        vocabulary = list(dict.fromkeys([*mining_vocabulary(), *related]))
        name_emb = name_embeddings(bundle, tuple(vocabulary)).numpy()  # the miner's, kept per model
        rest = after[~subgroup]
        sample = rest[np.random.default_rng(cfg.seed).permutation(len(rest))[:2000]]
        for n in nearest_names(forget_after, sample, name_emb, vocabulary, cfg.optimised):
            texts.append(Paraphrase(MINING_TEMPLATE.format(n), n, "optimised"))
    texts = list({t.text: t for t in texts}.values())
    queries = torch.cat([encode_text(bundle, [t.text for t in texts[i:i + 128]]).float().cpu()
                         for i in range(0, len(texts), 128)]).numpy()
    b = _top_counts(before, queries, subgroup, cfg.k)
    a = _top_counts(after, queries, subgroup, cfg.k)
    rows = sorted(({"text": t.text, "name": t.name, "family": t.family, "before": int(x), "after": int(y)}
                   for t, x, y in zip(texts, b, a, strict=True)), key=lambda r: (-r["after"], -r["before"]))
    counted = [r for r in rows if r["before"] >= cfg.min_before]
    worst = counted[0] if counted else None
    mean = float(np.mean([r["after"] for r in counted])) if counted else 0.0
    verdict = "untested" if not counted else "forgotten" if worst["after"] <= cfg.worst_bound \
        and mean <= cfg.mean_bound else "partly" if worst["after"] <= cfg.k // 2 else "not"
    # where the forgotten photos went: texts that find more of them after than before (not part of the verdict,
    # which asks whether the subgroup can still be found by what found it; shown beside it)
    gained = sorted((r for r in rows if r["after"] > r["before"] and r["after"] > cfg.worst_bound),
                    key=lambda r: -(r["after"] - r["before"]))
    return {"texts": rows, "counted": len(counted), "worst": worst, "mean_after": mean, "gained": gained[:5],
            "families": sorted({r["family"] for r in rows}), "wordnet": wordnet is not None, "verdict": verdict}


# ------------------------------------------------------------------------------------------ test 3: unseen photos
def _label_accuracy(feats: torch.Tensor, classifier: torch.Tensor, bundle: ClipBundle, label_id: int) -> float:
    if len(feats) == 0:
        return float("nan")
    return float((logits(bundle, feats, classifier).argmax(1) == label_id).float().mean())


def forgotten_share(acc: float, acc_original: float) -> float:
    """1 - acc / acc_original, in [0, 1] (1: nothing of it is recognised any more)."""
    if not acc_original or np.isnan(acc_original):
        return float("nan")
    return float(min(max(1.0 - acc / acc_original, 0.0), 1.0))


def unseen_verdict(trained: float, heldout: float, cfg: StressConfig) -> str:
    """Did it forget the subgroup or the pictures? Both shares must be high, the held-out one close behind."""
    if np.isnan(trained) or np.isnan(heldout):
        return "untested: the original did not give these photos the label either"
    if min(trained, heldout) < 0.5:
        return "not: the subgroup is still recognised"
    if trained - heldout <= cfg.unseen_tolerance:
        return "subgroup forgotten" if heldout >= 0.8 else "partly: less than 0.8 forgotten"
    return "partly: held-out photos less forgotten" if trained - heldout <= 0.25 else \
        "not: the pictures, not the subgroup"


# ------------------------------------------------------------------------------------------- test 2: relearning
def relearn(encoder: _Encoder, start: State, inputs: torch.Tensor, targets: torch.Tensor, classifier: torch.Tensor,
            cfg: StressConfig, on_step) -> None:
    """Plain fine-tuning of every suffix parameter from ``start`` (zero-shot cross-entropy, Adam); ``on_step(step,
    state)`` at each of ``cfg.relearn_steps``."""
    visual = copy.deepcopy(encoder.visual)
    visual.load_state_dict(start)
    visual.eval()  # BatchNorm statistics stay those of the model under attack
    params = [p for p in visual.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=cfg.relearn_lr)
    gen = torch.Generator().manual_seed(cfg.seed)
    bundle = encoder.bundle
    last = max(cfg.relearn_steps)
    for step in range(last + 1):
        if step in cfg.relearn_steps:
            on_step(step, {k: v.detach().clone() for k, v in visual.state_dict().items()})
        if step == last:
            break
        idx = torch.randint(len(inputs), (min(cfg.relearn_batch, len(inputs)),), generator=gen)
        feats = F.normalize(visual(bundle.normalize(inputs[idx])).float(), dim=-1)
        loss = F.cross_entropy(logits(bundle, feats, classifier), targets[idx].to(feats.device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def weight_distance(theta: State, theta_0: State) -> float:
    """||theta - theta_0|| / ||theta_0|| over the float parameters that differ."""
    num = den = 0.0
    for k, v in theta_0.items():
        if v.is_floating_point() and not torch.equal(v, theta[k]):
            num += float((theta[k].float() - v.float()).pow(2).sum())
            den += float(v.float().pow(2).sum())
    return (num / den) ** 0.5 if den else 0.0


# ---------------------------------------------------------------------------------------------------------- all
def stress_test(run: RunFolder, gallery: GalleryIndex, subgroup_parts: Sequence[str] = (), alpha: float | None = None,
                names: Sequence[str] = (), prompts: Sequence[str] = (), relearning: bool = True,
                cfg: StressConfig | None = None, device: str | torch.device = "cpu",
                progress: ProgressFn = no_progress, write: bool = True) -> dict[str, Any]:
    """The three tests of one run at ``alpha`` (default: the run's alpha*) over held-out photos: the subgroup's are
    the photos of ``gallery`` whose paths contain one of ``subgroup_parts`` or, without them, the run's own held-out
    forget photos (its calibration split) added to the gallery with its held-out retain photos. Written to
    ``run/stress.json`` when ``write``."""
    cfg = cfg or StressConfig()
    started = time.perf_counter()
    run.require_done()
    alpha = run.chosen_alpha if alpha is None else float(alpha)
    subgroup = _mask(gallery.paths, subgroup_parts) if subgroup_parts else np.zeros(len(gallery), bool)
    if subgroup_parts and not subgroup.any():
        raise DataError(f"no gallery photo matches the subgroup {', '.join(subgroup_parts)}")
    bundle = run.original_model(device)
    theta_0 = bundle.visual_state()
    theta_u = run.unlearned_state(device)
    theta_a = soup(theta_u, theta_0, alpha)
    task = rebuild_task(run, bundle.image_size)
    if not subgroup_parts and (task is None or not task.calibration_forget):
        raise DataError("name the subgroup's photos in the gallery (--subgroup): this run did not record held-out "
                        "photos of its own")
    encoder = _Encoder(bundle, _changed_layers(theta_u, theta_0))
    progress("stress", 0.0, "reading the gallery")
    gallery_inputs = _gallery_inputs(encoder, gallery, bundle.image_size, progress)
    source = "gallery"
    if not subgroup_parts:  # the run's own held-out photos join the gallery
        own = [encoder.inputs(task.calibration_forget.images)]
        if task.calibration_retain:
            own.append(encoder.inputs(task.calibration_retain.images))
        gallery_inputs = torch.cat([gallery_inputs, *own])
        subgroup = np.concatenate([subgroup, np.ones(len(task.calibration_forget), bool),
                                   np.zeros(len(gallery_inputs) - len(subgroup) - len(task.calibration_forget), bool)])
        source = "the run's held-out photos"
    before = encoder.embed(gallery_inputs, encoder.state(theta_0)).numpy()
    after = encoder.embed(gallery_inputs, encoder.state(theta_a)).numpy()
    forget_inputs = encoder.inputs(task.forget.images) if task is not None else None
    forget_after = encoder.embed(forget_inputs, encoder.state(theta_a)).numpy() if forget_inputs is not None \
        else after[subgroup]

    progress("stress", 0.35, "other names: sweeping the texts the subgroup could be found by")
    sweep = name_sweep(bundle, task, run, before, after, subgroup, forget_after, cfg, names, prompts)

    classnames = list(run.config().get("classnames") or (task.classnames if task else []))
    label = task.forget.labels[0] if task is not None and len(task.forget) else classnames[0]
    classifier = text_classifier(bundle, classnames).float().cpu()
    label_id = classnames.index(label)
    unseen: dict[str, Any] = {"label": label}
    held_b = _label_accuracy(torch.from_numpy(before[subgroup]), classifier, bundle, label_id)
    held_a = _label_accuracy(torch.from_numpy(after[subgroup]), classifier, bundle, label_id)
    unseen["heldout"] = {"images": int(subgroup.sum()), "acc_original": held_b, "acc": held_a,
                         "forgotten": forgotten_share(held_a, held_b)}
    if task is not None:
        trained_b = _label_accuracy(encoder.embed(forget_inputs, encoder.state(theta_0)), classifier, bundle, label_id)
        trained_a = _label_accuracy(torch.from_numpy(forget_after), classifier, bundle, label_id)
        unseen["trained"] = {"images": len(task.forget), "acc_original": trained_b, "acc": trained_a,
                             "forgotten": forgotten_share(trained_a, trained_b)}
        unseen["gap"] = unseen["trained"]["forgotten"] - unseen["heldout"]["forgotten"]
        unseen["verdict"] = unseen_verdict(unseen["trained"]["forgotten"], unseen["heldout"]["forgotten"], cfg)
    else:
        unseen["verdict"] = "untested: the run did not record its training folders"

    result: dict[str, Any] = {"run": run.name, "alpha": alpha, "gallery": gallery.name, "k": cfg.k,
                              "subgroup": list(subgroup_parts), "subgroup_source": source,
                              "subgroup_images": int(subgroup.sum()),
                              "config": asdict(cfg), "names": sweep, "unseen": unseen,
                              "weight_distance": weight_distance(theta_a, theta_0),
                              "method_mining": (run.config().get("config") or {}).get("mining") or {}}
    if relearning and task is not None:
        result["relearning"] = _relearning(encoder, task, gallery_inputs, torch.from_numpy(before), forget_inputs,
                                           subgroup, sweep, theta_0, theta_a, classifier, label_id, bundle, cfg,
                                           progress)
    elif relearning:
        result["relearning"] = {"verdict": "untested: the run did not record its training folders"}
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["verdicts"] = verdicts(result)
    if write:
        write_json(run.path / STRESS_FILE, result)
    progress("stress", 1.0, "done")
    return result


def _relearning(encoder: _Encoder, task: UnlearningTask, gallery_inputs: torch.Tensor, before: torch.Tensor,
                forget_inputs: torch.Tensor, subgroup: np.ndarray, sweep: dict[str, Any], theta_0: State,
                theta_a: State, classifier: torch.Tensor, label_id: int, bundle: ClipBundle, cfg: StressConfig,
                progress: ProgressFn) -> dict[str, Any]:
    """Attacks (a) retain-only and (b) five forget images, from theta(alpha) and, as the control, from the original
    (``before``: the gallery's embeddings under the original).

    Two zero-shot measures: the coarse label's and the subgroup's *own names'* (a held-out photo counts when one of
    the subgroup's names beats every class of the task). Where the retain images share the forget images' label, both
    move for the original as much (fine-tuning teaches every look-alike the label), so there the verdict reads the
    retrieval count alone (docs/decisions.md D34)."""
    probe = sweep["texts"][0]["text"] if sweep["worst"] is None else sweep["worst"]["text"]
    primary = next((r["text"] for r in sweep["texts"] if r["family"] == "base" and r["text"].startswith("a photo")),
                   probe)
    queries = encode_text(bundle, [primary, probe]).float().cpu().numpy()
    own = list(dict.fromkeys(r["name"] for r in sweep["texts"] if r["family"] == "base"))
    names_classifier = torch.cat([encode_text(bundle, [MINING_TEMPLATE.format(n) for n in own]).float().cpu(),
                                  classifier])
    retain_inputs = encoder.inputs(task.retain.images)
    retain_targets = task.label_ids(task.retain)
    order = torch.randperm(len(task.forget), generator=torch.Generator().manual_seed(cfg.seed))[:cfg.attack_images]
    forget_inputs = forget_inputs[order]
    forget_targets = task.label_ids(task.forget)[order]
    held = torch.from_numpy(np.flatnonzero(subgroup))
    shared_label = bool(set(task.forget.labels) & set(task.retain.labels))

    def measure(emb: torch.Tensor) -> tuple[float, float]:
        sub = emb[held]
        by_name = float((logits(bundle, sub, names_classifier).argmax(1) < len(own)).float().mean())
        return _label_accuracy(sub, classifier, bundle, label_id), by_name

    original_acc, original_name = measure(before)
    attacks = {"retain only": (retain_inputs, retain_targets), "5 forget images": (forget_inputs, forget_targets)}
    starts = {"unlearned": encoder.state(theta_a), "original": encoder.state(theta_0)}
    rows: list[dict[str, Any]] = []
    done, total = 0, len(attacks) * len(starts) * len(cfg.relearn_steps)
    for attack, (inputs, targets) in attacks.items():
        for model, start in starts.items():
            def on_step(step: int, state: State, attack=attack, model=model) -> None:
                nonlocal done
                emb = encoder.embed(gallery_inputs, state)
                acc, by_name = measure(emb)
                counts = _top_counts(emb.numpy(), queries, subgroup, cfg.k)
                rows.append({"attack": attack, "model": model, "steps": step, "zero_shot": acc,
                             "zero_shot_ratio": acc / original_acc if original_acc else float("nan"),
                             "name_zero_shot": by_name,
                             "name_zero_shot_ratio": by_name / original_name if original_name else float("nan"),
                             "top_k": int(counts[0]), "top_k_worst_text": int(counts[1])})
                done += 1
                progress("relearning", done / total, f"{attack}, from the {model} model: step {step}")

            relearn(encoder, start, inputs, targets, classifier, cfg, on_step)
    measure_key = "name_zero_shot_ratio" if shared_label else "zero_shot_ratio"
    at = {r["steps"]: r for r in rows if r["attack"] == "retain only" and r["model"] == "unlearned"}
    check = at.get(100) or at[max(at)]
    early = at.get(25, check)

    def holds(row: dict[str, Any]) -> bool:
        return (shared_label or row[measure_key] <= cfg.zero_shot_bound) and row["top_k"] <= cfg.worst_bound

    verdict = "resists" if holds(check) else "partly: comes back between 25 and 100 steps" if holds(early) \
        else "not: comes back within 25 steps"
    return {"rows": rows, "texts": [primary, probe], "own_names": own, "original_zero_shot": original_acc,
            "original_name_zero_shot": original_name, "shared_label": shared_label, "measure": measure_key,
            "verdict": verdict, "lr": cfg.relearn_lr, "batch": cfg.relearn_batch}


def verdicts(result: dict[str, Any]) -> list[dict[str, str]]:
    """One line per test for a stakeholder: the test, the verdict, the numbers behind it."""
    out = []
    s = result["names"]
    if s["worst"] is not None:
        w = s["worst"]
        gained = s.get("gained") or []
        moved = f"; the photos now answer \"{gained[0]['text']}\" ({gained[0]['before']} → {gained[0]['after']})" \
            if gained else ""
        # the run trained against its mined sentences only: the setting that also trains against the subgroup's
        # other names is the next step (D34), with its price said
        deeper = "; the run trained against its mined names only: `--set mining.max_paraphrases=32` also trains " \
                 "against their synonyms and kinds (D34; the siblings may pay)" \
            if s["verdict"] != "forgotten" and result.get("method_mining", {}).get("max_paraphrases") == 0 else ""
        out.append({"test": "other names", "verdict": s["verdict"],
                    "numbers": f"worst of {s['counted']} texts: \"{w['text']}\" finds {w['after']} of "
                               f"{result['k']} (before {w['before']}); mean {s['mean_after']:.1f}{moved}{deeper}"})
    else:
        out.append({"test": "other names", "verdict": "untested",
                    "numbers": f"no text found {result['config']['min_before']} or more of the subgroup before"})
    r = result.get("relearning")
    if r and "rows" in r:
        at = {x["steps"]: x for x in r["rows"] if x["attack"] == "retain only" and x["model"] == "unlearned"}
        x = at.get(100) or at[max(at)]
        control = {y["steps"]: y for y in r["rows"] if y["attack"] == "retain only" and y["model"] == "original"}
        base = control.get(x["steps"])
        beside = f" (the original after the same steps: {base['top_k']})" if base else ""
        out.append({"test": "relearning (retain images only)", "verdict": r["verdict"],
                    "numbers": f"after {x['steps']} steps: top-{result['k']} {x['top_k']}{beside}; label's "
                               f"zero-shot {x['zero_shot_ratio']:.2f} of the original"})
    elif r:
        out.append({"test": "relearning", "verdict": r["verdict"], "numbers": ""})
    u = result["unseen"]

    def share(x: float) -> str:
        return "n/a" if x != x else f"{x:.2f}"  # NaN: the original did not give them the label either

    held = f"{share(u['heldout']['forgotten'])} of {u['heldout']['images']} held-out photos"
    trained = f"{share(u['trained']['forgotten'])} of the trained photos, " if "trained" in u else ""
    out.append({"test": "unseen photos", "verdict": u["verdict"], "numbers": f"forgotten {trained}{held}"})
    return out


def read_stress(run: RunFolder) -> dict[str, Any]:
    """The run's last stress test (empty when it has none)."""
    return read_json(run.path / STRESS_FILE)

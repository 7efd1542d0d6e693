"""Training: projection init on teacher features (LP), then fine-tuning; export with a report.

Deterministic for a seed and a thread count; a training state is kept in the output folder after every epoch and
resumed from (it is removed once the model is exported).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from clipforget.core.atomic import write_json
from clipforget.core.paths import cache_dir
from clipforget.data.prompts import EMBEDDED_TEMPLATES, fill
from clipforget.data.styles import STYLES
from clipforget.models.factory import ClipBundle, save_checkpoint

from ..common import readers as dr
from ..common.evaluate import evaluate
from ..common.text import PooledText
from ..common.vocabulary import imagenet_display_names
from .config import RecipeConfig
from .model import build_bundle, model_config, set_train_mode, set_trainable
from .objective import Objective
from .training_data import TrainingData, augment, epoch_order, training_data

STATE_FILE = "train_state.pt"
REPORT_FILE = "training_report.json"


def resolve_cache(cfg: RecipeConfig) -> Path:
    """The recipe's cache folder: ``cfg.cache``, else ``<clipforget cache>/embedded-pretrain``."""
    return Path(cfg.cache).resolve() if cfg.cache else cache_dir() / "embedded-pretrain"


def _lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def init_projections(bundle: ClipBundle, objective: Objective, data: TrainingData, cfg: RecipeConfig) -> dict:
    """Initialise the projections before fine-tuning (LP-FT: linear probe, then fine-tune).

    ``lp_mode="head"``: the image projection is the top-``D`` right singular vectors of the ImageNet head ``W``
    (``cos(P w_c, P f)`` ranks classes almost like the head: 63.6 / 65.8 % vs 68.5 % on the ImageNet samples at
    160 px for D = 256 / 384), kept fixed here; the text projection (and the scales) are fitted so that every class
    text lies near its projected head row (cosine regression + InfoNCE over the 1000 rows), together with the
    distillation and caption losses on the cached teacher features of the training images.
    ``lp_mode="features"``: both projections from scratch on the teacher features (distillation + captions only).
    """
    model = bundle.model
    proj = model.visual.head.proj
    if cfg.lp_mode == "head":
        _, _, vh = torch.linalg.svd(objective.head_w, full_matrices=False)
        with torch.no_grad():
            proj.weight.copy_(vh[: proj.weight.shape[0]])
    image_side = [] if cfg.lp_mode == "head" else list(model.visual.head.parameters())
    params = [*image_side, model.text.proj.weight, model.logit_scale, objective.kd_scale, objective.row_scale]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.lp_lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses = []
    for step in range(cfg.lp_steps):
        idx = torch.randint(0, len(data.group), (cfg.lp_batch,), generator=gen)
        sty = torch.zeros(len(idx), dtype=torch.long)
        img = F.normalize(model.visual.head(data.teacher_feats[idx].float()), dim=-1)
        parts = objective(img, idx, sty, data)
        if cfg.lp_mode == "head":
            parts["rows"] = objective.rows()
        loss = parts["cap"] + cfg.kd_weight * parts["kd"] + parts.get("rows", torch.zeros(()))
        for g in opt.param_groups:
            g["lr"] = cfg.lp_lr * 0.5 * (1 + math.cos(math.pi * step / cfg.lp_steps))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append({k: round(float(v.detach()), 4) for k, v in parts.items()})
    for p, flag in zip(params, flags, strict=True):
        p.requires_grad_(flag)
    return {
        "mode": cfg.lp_mode,
        "steps": cfg.lp_steps,
        "first": losses[0] if losses else None,
        "last": losses[-1] if losses else None,
    }


def train(cfg: RecipeConfig, out_dir: str | os.PathLike, run_eval: bool = True) -> Path:
    """Train, evaluate and export the model to ``out_dir``; resumes from ``out_dir/train_state.pt``."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = resolve_cache(cfg)
    started = time.time()
    config = model_config(cfg)
    bundle = build_bundle(config)
    model = bundle.model
    text = PooledText(bundle, cache / "text" / "minilm_pooled.pt")

    t0 = time.time()
    data = training_data(cfg, cache)
    prep_seconds = time.time() - t0
    bank = data.bank
    imagenet, _ = dr.class_names(cfg.data_root)
    kd_names = imagenet_display_names(imagenet)
    cap_pooled = text(bank.captions)
    kd_pooled = text([fill(t, n) for n in kd_names for t in EMBEDDED_TEMPLATES])
    print(f"data ready in {prep_seconds:.0f}s: {len(data.group)} images, {len(bank.captions)} captions", flush=True)

    objective = Objective(bundle, bank, cap_pooled, kd_pooled, cfg)
    state_path = out / STATE_FILE
    resume = torch.load(state_path, weights_only=False) if state_path.is_file() else None
    if resume is not None and (resume["key"] != cfg.key() or resume["epochs"] != cfg.epochs):
        print("training state in the output folder is from another config: starting afresh", flush=True)
        resume = None
    lp_log: dict[str, Any] = {}
    if resume is None and cfg.lp_steps:
        t_lp = time.time()
        lp_log = init_projections(bundle, objective, data, cfg)
        lp_log["seconds"] = round(time.time() - t_lp, 1)
        print(json.dumps({"projection_init": lp_log}), flush=True)

    trained = set_trainable(bundle, cfg.trainable)
    visual_params = [p for p in model.visual.parameters() if p.requires_grad]
    proj_ids = {id(p) for p in model.visual.head.parameters()}
    groups = [
        {
            "params": [p for p in visual_params if id(p) not in proj_ids and p.ndim > 1],
            "lr": cfg.trunk_lr,
            "weight_decay": cfg.weight_decay,
        },
        {
            "params": [p for p in visual_params if id(p) not in proj_ids and p.ndim <= 1],
            "lr": cfg.trunk_lr,
            "weight_decay": 0.0,
        },
        {
            "params": [*model.visual.head.parameters(), model.text.proj.weight],
            "lr": cfg.lr,
            "weight_decay": cfg.weight_decay,
        },
        {"params": [model.logit_scale, objective.kd_scale, objective.row_scale], "lr": cfg.lr, "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.AdamW(groups)

    orders = [epoch_order(data, cfg, np.random.default_rng([cfg.seed, e])) for e in range(cfg.epochs)]
    steps_per_epoch = len(orders[0]) // cfg.batch_size if orders else 0
    total = steps_per_epoch * cfg.epochs
    history: list[dict[str, Any]] = []
    evals: dict[str, Any] = {}
    start_epoch = 0
    train_seconds = 0.0
    if resume is not None:
        model.load_state_dict(resume["model"], strict=False)
        objective.load_state_dict(resume["objective"], strict=False)
        opt.load_state_dict(resume["opt"])
        start_epoch, history, evals = resume["epoch"], resume["history"], resume["evals"]
        train_seconds, lp_log = resume["train_seconds"], resume.get("lp", {})
        print(f"resumed after epoch {start_epoch}", flush=True)

    model.visual.to(memory_format=torch.channels_last)
    style_probs = [cfg.photo_share] + [(1 - cfg.photo_share) / (len(STYLES) - 1)] * (len(STYLES) - 1)
    for epoch in range(start_epoch, cfg.epochs):
        t_epoch = time.time()
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        rng = np.random.default_rng([cfg.seed, epoch, 1])
        order = orders[epoch]
        styles = rng.choice(len(STYLES), size=len(order), p=style_probs)
        set_train_mode(bundle, trained, cfg.frozen_bn)
        sums: dict[str, float] = {}
        for b in range(steps_per_epoch):
            step = epoch * steps_per_epoch + b
            idx = torch.from_numpy(order[b * cfg.batch_size : (b + 1) * cfg.batch_size])
            sty = torch.from_numpy(styles[b * cfg.batch_size : (b + 1) * cfg.batch_size])
            batch = torch.empty((len(idx), 3, cfg.image_size, cfg.image_size), dtype=torch.uint8)
            for s_id, s_name in enumerate(STYLES):
                sel = torch.nonzero(sty == s_id).flatten()
                if len(sel):
                    batch[sel] = data.images[s_name][idx[sel]]
            x = (augment(batch, cfg, gen) - 0.5) / 0.5
            factor = _lr_factor(step, total, cfg.warmup_steps)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * factor

            pooled = model.visual.trunk(x.contiguous(memory_format=torch.channels_last)).float()
            img = F.normalize(model.visual.head(pooled), dim=-1)
            parts = objective(img, idx, sty, data)
            style_w = torch.where(sty == 0, 1.0, cfg.kd_style_weight)
            if cfg.fd_weight:
                t_feat = data.teacher_feats[idx].float()
                parts["fd"] = (style_w * (1 - F.cosine_similarity(pooled, t_feat, dim=-1))).mean()
            if cfg.row_weight:
                parts["rows"] = objective.rows()
            loss = (
                parts["cap"]
                + cfg.kd_weight * parts["kd"]
                + cfg.fd_weight * parts.get("fd", torch.zeros(()))
                + cfg.row_weight * parts.get("rows", torch.zeros(()))
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in {"loss": loss, **parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if b % 50 == 0:
                rate = (b + 1) * cfg.batch_size / (time.time() - t_epoch)
                detail = " ".join(f"{k} {float(v.detach()):.3f}" for k, v in parts.items())
                print(
                    f"epoch {epoch + 1}/{cfg.epochs} step {b}/{steps_per_epoch} loss {float(loss.detach()):.3f} "
                    f"({detail}) {rate:.0f} img/s",
                    flush=True,
                )
        epoch_seconds = time.time() - t_epoch
        train_seconds += epoch_seconds
        row: dict[str, Any] = {k: round(v / max(1, steps_per_epoch), 4) for k, v in sums.items()}
        row.update(
            epoch=epoch + 1,
            seconds=round(epoch_seconds, 1),
            logit_scale=round(float(model.logit_scale.detach().exp()), 2),
            kd_scale=round(float(objective.kd_scale.detach().exp()), 2),
        )
        history.append(row)
        print(json.dumps(row), flush=True)
        if epoch + 1 in cfg.eval_at and epoch + 1 < cfg.epochs:
            model.eval()
            evals[str(epoch + 1)] = evaluate(bundle, text, cfg.data_root, cache / "readers", quick=True)
            print(json.dumps({"eval_epoch": epoch + 1, **evals[str(epoch + 1)]}), flush=True)
        trained_state = {k: v for k, v in model.state_dict().items() if not k.startswith(bundle.frozen_prefixes)}
        tmp = state_path.with_name(STATE_FILE + ".tmp")
        torch.save(
            {
                "key": cfg.key(),
                "epochs": cfg.epochs,
                "epoch": epoch + 1,
                "model": trained_state,
                "objective": {k: v.detach().clone() for k, v in objective.state_dict().items()},
                "opt": opt.state_dict(),
                "history": history,
                "evals": evals,
                "train_seconds": train_seconds,
                "lp": lp_log,
            },
            tmp,
        )
        os.replace(tmp, state_path)

    model.eval()
    model.visual.to(memory_format=torch.contiguous_format)
    for p in model.parameters():
        p.requires_grad_(False)
    report: dict[str, Any] = {
        "config": asdict(cfg),
        "config_key": cfg.key(),
        "threads": cfg.threads,
        "torch": torch.__version__,
        "prep_seconds": round(prep_seconds, 1),
        "train_seconds": round(train_seconds, 1),
        "projection_init": lp_log,
        "history": history,
        "evals_during_training": evals,
        "data": data.stats,
        "captions": len(bank.captions),
        "caption_names": len(bank.names),
    }
    t_eval = time.time()
    report["eval"] = evaluate(bundle, text, cfg.data_root, cache / "readers") if run_eval else {}
    report["eval_seconds"] = round(time.time() - t_eval, 1)
    report["total_seconds"] = round(time.time() - started, 1)
    meta = {
        "trained_by": "clipforget.pretraining.embedded_v2",
        "config_key": cfg.key(),
        **{k: v for k, v in report["eval"].items() if isinstance(v, float)},
    }
    save_checkpoint(bundle, out, metadata=meta, dtype=torch.float16)
    report["weights_mb"] = round((out / "open_clip_model.safetensors").stat().st_size / 2**20, 2)
    write_json(out / REPORT_FILE, report)
    state_path.unlink(missing_ok=True)
    if run_eval:
        print(json.dumps(report["eval"], indent=1), flush=True)
    return out

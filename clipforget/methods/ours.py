"""The paper's three-stage method: forget -> remind -> restore."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

from clipforget.core.progress import ProgressFn
from clipforget.data.task import UnlearningTask
from clipforget.methods.registry import MethodOutput, register
from clipforget.models.encode import text_classifier
from clipforget.models.factory import ClipBundle
from clipforget.models.weights import clone_state, soup
from clipforget.stages.forget import ForgetConfig, forget, forget_texts, touched_layers
from clipforget.stages.mining import MiningConfig, mine_forget_texts, mine_paraphrases, mining_vocabulary
from clipforget.stages.remind import RemindConfig, remind
from clipforget.stages.restore import RestoreConfig, RetrievalProbe, alpha_curve, select_alpha


@dataclass
class ThreeStageConfig:
    forget: ForgetConfig = field(default_factory=ForgetConfig)
    remind: RemindConfig = field(default_factory=RemindConfig)
    restore: RestoreConfig = field(default_factory=RestoreConfig)
    skip_remind: bool = False
    mining: MiningConfig = field(default_factory=MiningConfig)  # forget texts found from the images (D13)


def touched(cfg: ThreeStageConfig, bundle: ClipBundle) -> list[str]:
    """The forget stage's candidate layers (LoRA and the remind stage's training stay within them)."""
    return touched_layers(bundle.tower_layers(), cfg.forget)


@register("ours", ThreeStageConfig, "relative-Fisher LoRA forgetting, BN-aligned KD reminding with EMA, model soup",
          layers=touched)
def three_stage(bundle: ClipBundle, task: UnlearningTask, cfg: ThreeStageConfig, progress: ProgressFn) -> MethodOutput:
    seconds: dict[str, float] = {}
    theta_0 = clone_state(bundle.model.visual)

    start = time.perf_counter()
    mined, paraphrases = [], []
    # a subgroup under a label the retain images share ("marmoset" in "monkey") needs its own names found; a class
    # forgotten under its own name (CIFAR-10 "airplane") is forgotten under that name already, and mining would add
    # its other domains' names ("airliner"), which the setting keeps (D13)
    subgroup = bool(set(task.forget.labels) & set(task.retain.labels))
    if cfg.mining.max_texts > 0 and subgroup:
        progress("forget", 0.0, "finding the names the model knows the forget images by")
        mined = mine_forget_texts(bundle, task, mining_vocabulary(extra=task.classnames), cfg.mining)
        # the subgroup's other names (D34): what a person may type instead of the one mined sentence
        paraphrases = mine_paraphrases(bundle, task, [m.name for m in mined], cfg.mining)
        known = set(task.forget_prompts)
        extra = tuple(dict.fromkeys(m.text for m in [*mined, *paraphrases] if m.text not in known))
        task = replace(task, forget_prompts=(*task.forget_prompts, *extra), cancel=task.cancel)
    forgotten, ranking, forget_log = forget(bundle, task, cfg.forget, progress)
    seconds["forget"] = time.perf_counter() - start

    start = time.perf_counter()
    if cfg.skip_remind:
        unlearned, remind_log = forgotten, {"skipped": True}
    else:
        unlearned, remind_log = remind(bundle, forgotten, task, forget_log["lora_layers"], cfg.remind, progress,
                                       cfg.forget)
    seconds["remind"] = time.perf_counter() - start

    start = time.perf_counter()
    theta_u = clone_state(unlearned)
    calibration = {"forget": (task.calibration_forget or task.forget, task.classnames),
                   "retain": (task.calibration_retain or task.retain, task.classnames)}
    probe = None
    if cfg.restore.retrieval_tolerance is not None:
        texts = forget_texts(bundle, task, text_classifier(bundle, task.classnames))
        probe = RetrievalProbe("forget", "retain", texts)
    curve = alpha_curve(bundle, theta_u, theta_0, calibration, cfg.restore.alphas, progress, task.cancel, probe)
    alpha = select_alpha(curve, "forget", "retain", cfg.restore.tolerance, cfg.restore.retrieval_tolerance)
    final = soup(theta_u, theta_0, alpha)
    seconds["restore"] = time.perf_counter() - start

    log = {"config": asdict(cfg), "forget_texts": list(task.forget_prompts), "mined_texts": [asdict(m) for m in mined],
           "paraphrases": [asdict(m) for m in paraphrases], "forget": forget_log, "remind": remind_log,
           "calibration_sizes": {k: len(v[0]) for k, v in calibration.items()},
           "calibration_is_training_data": task.calibration_forget is None or task.calibration_retain is None}
    return MethodOutput(visual_state=final, log=log, unlearned_state=theta_u, alpha=alpha, alpha_curve=curve,
                        ranking=[asdict(r) for r in ranking], stage_seconds=seconds)

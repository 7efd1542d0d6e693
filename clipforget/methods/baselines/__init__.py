"""Baselines of the paper (appendix A.1) and two extra ones, as method plug-ins.

Every baseline has the signature of ``ours``: ``fn(bundle, task, config, progress) -> MethodOutput``. Methods built
for classifiers use the zero-shot probabilities over ``task.classnames`` as their logits (the paper's surrogate).
All work on a deep copy of the image tower, with BatchNorm in eval mode; ``bundle.model`` is never changed.

* ``ft`` -- fine-tune the image tower on the retain set.
* ``ga`` -- gradient ascent on the forget set.
* ``fisher`` -- Gaussian noise on the weights, variance scaled by the forget-set Fisher information.
* ``lip`` -- Lipschitz regularisation over noisy copies of the forget images (embeddings and similarities).
* ``emmn`` -- maximise the forget loss while minimising the retain loss.
* ``clip_lip`` -- Kravets & Namboodiri's zero-shot class forgetting (image side): synthetic samples + Lipschitz.
* ``slug`` -- single layer, single gradient step (Cai et al.), layer on the importance / alignment Pareto front.
* ``nullspace`` -- training-free: project the target text direction out of the image tower's output projection.
"""

from . import clip_lip, emmn, fisher, ft, ga, lip, nullspace, slug  # noqa: F401  (registers the methods)

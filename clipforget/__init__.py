"""clipforget: make a CLIP model forget a subgroup of images while keeping the rest.

The three stages of "Targeted Forgetting of Image Subgroups in CLIP Models" live in one module each
(:mod:`clipforget.forget`, :mod:`clipforget.remind`, :mod:`clipforget.restore`) and are chained by
:mod:`clipforget.pipeline`. :func:`clipforget.models.create_model` is the single entry point for models.
"""

import os

# Nothing may be fetched from a model hub at run time: fail fast and clearly instead of hanging.
# Users with network who want hub downloads can export HF_HUB_OFFLINE=0 before starting.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", os.environ["HF_HUB_OFFLINE"])
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"

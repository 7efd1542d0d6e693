"""Stand-in weights for open_clip's own architectures: deterministic random weights saved as a local checkpoint.

No pretrained CLIP weights are on the project's machines, yet ``RN50:openai`` or a LAION ``ViT-B-32`` is what users
bring. A stand-in file makes ``--model RN50:/path/RN50-standin.pt`` go through exactly the code those specs do
(open_clip's config, :func:`open_clip.create_model_and_transforms` with a file path, its ``load_checkpoint``) --
only the numbers differ, so it measures speed, memory and layer choice, never accuracy.

open_clip initialises each ResNet bottleneck's last BatchNorm scale (``bn3.weight``) to zero, as is usual for
training from scratch: every residual branch then outputs zero and receives no gradient, so the relative Fisher
ranking saw 0.0 for 17 of RN50's 18 candidate layers and chose by tie-break. A trained network has non-zero scales;
the stand-in sets every all-zero BatchNorm scale to BatchNorm's default of 1, so that the ranking compares real
values (docs/decisions.md D37).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from clipforget.core.atomic import write_atomic

# the paper's architectures; any other name of open_clip.list_models() works too
STANDIN_ARCHS = ("RN50", "ViT-B-32")


def standin_state(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """open_clip's ``arch`` with its own initialisation under ``seed``, as a CPU fp32 state dict.

    open_clip's init (``init_parameters``) draws from the global generator: it is seeded and restored around the
    build, so the weights depend on ``arch`` and ``seed`` only, and the caller's random stream is left as it was.
    """
    import open_clip

    if arch not in open_clip.list_models():
        raise ValueError(f"open_clip has no architecture {arch!r} (see open_clip.list_models())")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(arch, pretrained=None, device="cpu")
        with torch.no_grad():
            for module in model.modules():  # zero-initialised BatchNorm scales (ResNets' bn3), see above
                if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.weight is not None \
                        and not module.weight.any():
                    module.weight.fill_(1.0)
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def write_standin(arch: str, out: str | os.PathLike, seed: int = 0) -> Path:
    """Write the stand-in of ``arch`` to ``out`` (``.pt``: a plain ``torch.save`` of the state dict, the form
    open_clip's ``load_checkpoint`` reads with ``weights_only=True``; ``.safetensors`` also works)."""
    out = Path(out)
    state = standin_state(arch, seed)
    if out.suffix == ".safetensors":
        from safetensors.torch import save_file

        write_atomic(out, lambda tmp: save_file(state, tmp))
    else:
        write_atomic(out, lambda tmp: torch.save(state, tmp))
    return out

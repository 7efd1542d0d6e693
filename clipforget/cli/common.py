"""What every command shares: model / device / folder flags, applying them, and a progress printer."""

from __future__ import annotations

import argparse
import os

from clipforget.core.devices import configure_backends, resolve_device
from clipforget.core.progress import ProgressFn
from clipforget.models.factory import DEFAULT_MODEL, ClipBundle, create_model


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"{DEFAULT_MODEL} (default) | embedded-cifar | open_clip NAME:TAG (RN50:openai) | folder")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")


def add_folder_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=None, help="data folder (else $CLIPFORGET_DATA, else ../shared/data)")
    parser.add_argument("--cache-dir", default=None, help="cache folder (else $CLIPFORGET_CACHE)")


def add_finished_run_args(parser: argparse.ArgumentParser) -> None:
    """What the commands that read a finished run at one alpha share: ``--run``, ``--alpha``, ``-k``, ``--device``."""
    parser.add_argument("--run", required=True, help="finished run folder")
    parser.add_argument("--alpha", type=float, default=None, help="soup coefficient (default: the run's chosen alpha)")
    parser.add_argument("-k", "--k", type=int, default=20, help="top-k")
    parser.add_argument("--device", default="auto")
    add_folder_args(parser)


def apply_folders(args: argparse.Namespace) -> None:
    """Flags win over the environment, for this process and the workers it starts."""
    if getattr(args, "data_root", None):
        os.environ["CLIPFORGET_DATA"] = args.data_root
    if getattr(args, "cache_dir", None):
        os.environ["CLIPFORGET_CACHE"] = args.cache_dir


def load_model(args: argparse.Namespace) -> ClipBundle:
    device = resolve_device(args.device)
    configure_backends(device)
    return create_model(args.model, device=device)


def progress_printer(quiet: bool = False, edges_only: bool = False) -> ProgressFn:
    """Print progress lines (``edges_only``: only each stage's first and last line)."""
    last = {"stage": None}

    def progress(stage: str, fraction: float, message: str) -> None:
        if quiet or (edges_only and 0.0 < fraction < 1.0):
            return
        if stage != last["stage"]:
            last["stage"] = stage
            print(f"[{stage}]", flush=True)
        print(f"  {fraction * 100:5.1f}%  {message}", flush=True)

    return progress

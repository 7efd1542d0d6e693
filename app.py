"""clipforget web app: ``python app.py`` serves the Gradio UI on http://127.0.0.1:7860 (see docs/app.md)."""

from __future__ import annotations

import argparse
import os

from clipforget.app.config import AppConfig
from clipforget.jobs.profiles import PROFILES
from clipforget.jobs.registry import BACKENDS
from clipforget.models.factory import DEFAULT_MODEL


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = AppConfig()
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default=os.environ.get("CLIPFORGET_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("CLIPFORGET_PORT", "7860")))
    p.add_argument("--share", action="store_true", help="create a public gradio.live link (off by default)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="default model: a bundled name, NAME:TAG or a folder")
    p.add_argument("--data-root", default=None, help="datasets folder (default $CLIPFORGET_DATA or ../shared/data)")
    p.add_argument("--cache-dir", default=None, help="cache + runs folder (default $CLIPFORGET_CACHE)")
    p.add_argument("--imagenet", default=None, help="ImageNet folder (<wnid>/*.JPEG) for the LIVING-17 preset")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--gallery", action="append", default=[], metavar="NAME=DIR[:DIR...]",
                   help="extra retrieval gallery (repeatable)")
    p.add_argument("--default-gallery", default=None, help="gallery selected at start")
    p.add_argument("--max-upload-mb", type=float, default=defaults.max_upload_mb, help="per image file")
    p.add_argument("--max-total-upload-mb", type=float, default=defaults.max_total_upload_mb, help="per gallery")
    p.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="per image (larger are skipped)")
    p.add_argument("--profile", choices=list(PROFILES), default="fast", help="run profile selected at start")
    # security (docs/security.md)
    p.add_argument("--allow-model", action="append", default=[], metavar="SPEC",
                   help="also offer this model spec to clients (repeatable; bundled models and --model always are)")
    p.add_argument("--allow-any-model", action="store_true",
                   help="accept any model spec from clients, server paths included (trusted single-user use only)")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="also answer cross-origin calls from this origin, e.g. https://tools.example.org "
                        "(repeatable; by default only the app's own origin may call it)")
    p.add_argument("--workspace-quota-mb", type=float, default=defaults.workspace_quota_mb,
                   help="disk per workspace: uploads, exports and runs (0: no quota)")
    p.add_argument("--workspace-ttl-days", type=float, default=defaults.workspace_ttl_days,
                   help="a workspace unused this long is deleted with its runs (0: never)")
    p.add_argument("--explore-concurrency", type=int, default=defaults.explore_concurrency,
                   help="explore events (open, alpha, retrieval) served at once (default: 4 x CPU cores)")
    p.add_argument("--backend", choices=BACKENDS, default=defaults.backend,
                   help="where runs train: local worker processes (default), a ray cluster, or a thread of this app")
    p.add_argument("--workers", type=int, default=None,
                   help="local: worker processes (default: one per GPU, else 1; 0: only `python -m clipforget "
                        "worker` processes started apart on the same --cache-dir)")
    p.add_argument("--ray-address", default=None, help="ray: auto | ray://host:port (default: a local Ray cluster)")
    p.add_argument("--no-warm-up", action="store_true",
                   help="do not prepare the default preset's first run at start (gallery index, data, class texts)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.cache_dir:  # decoded datasets and unpacked zips follow the flag too (clipforget.core.paths.cache_dir)
        os.environ["CLIPFORGET_CACHE"] = args.cache_dir
    if args.data_root:
        os.environ["CLIPFORGET_DATA"] = args.data_root
    config = AppConfig(
        model=args.model, data_root=args.data_root, cache_dir=args.cache_dir, imagenet_root=args.imagenet,
        device=args.device, max_upload_mb=args.max_upload_mb, max_total_upload_mb=args.max_total_upload_mb,
        max_pixels=args.max_pixels, galleries=dict(g.split("=", 1) for g in args.gallery),
        allowed_models=args.allow_model, allow_any_model=args.allow_any_model, allowed_origins=args.allow_origin,
        workspace_quota_mb=args.workspace_quota_mb, workspace_ttl_days=args.workspace_ttl_days,
        backend=args.backend, workers=args.workers, ray_address=args.ray_address,
        explore_concurrency=max(1, args.explore_concurrency), warm_up=not args.no_warm_up,
    )
    if args.default_gallery:
        config.default_gallery = args.default_gallery
    from clipforget.app.service import AppServices
    from clipforget.app.ui import build_ui, launch_kwargs

    services = AppServices.create(config)
    demo = build_ui(services, default_profile=args.profile)
    demo.launch(**launch_kwargs(services, args.host, args.port, args.share))


if __name__ == "__main__":
    main()

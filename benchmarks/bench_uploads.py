"""Uploads: how long "Check uploads" takes on many files, and what a refused zip bomb leaves on disk.

    nice -n 10 .venv/bin/python benchmarks/bench_uploads.py [--files 2000]

1. ``--files`` CIFAR-10 training images (names clashing across classes) copied into a workspace and read back the
   way the check does (``save_uploads`` + ``inspect_upload``, the server's work of ``/check_uploads``).
2. A ~0.5 MB zip of 26 members x 19.9 MB of zeros sent three times to ``/check_uploads`` and ``/start_upload``
   through the HTTP API: the reply, the time to refuse, the bytes under the cache before and after, and this
   process's peak resident memory (server and client run in it).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import zipfile
from pathlib import Path

from common import launch, peak_rss_mb, timed

from clipforget.app.config import AppConfig
from clipforget.app.service import AppServices
from clipforget.app.workspaces import folder_bytes
from clipforget.core.paths import data_root
from clipforget.models.factory import DEFAULT_MODEL


def zeros_zip(path: Path, members: int = 26, size: int = 19_900_000) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for i in range(members):
            with zf.open(f"z{i:02d}.png", "w", force_zip64=True) as out:
                left = size
                while left > 0:
                    out.write(bytes(min(left, 1 << 20)))
                    left -= 1 << 20
    return path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--port", type=int, default=7863)
    args = p.parse_args(argv)
    from gradio_client import Client, handle_file

    tmp = Path(tempfile.mkdtemp(prefix="bench_uploads_"))
    services = AppServices.create(AppConfig(model=DEFAULT_MODEL, cache_dir=str(tmp / "cache")))
    root = data_root() / "cifar10" / "train"
    files = [f for c in sorted(root.iterdir()) for f in sorted(c.glob("*.jpg"))[: args.files // 10 + 1]][: args.files]
    owner = services.workspaces.new_id()
    folder, save_s = timed(services.runs.save_uploads, owner, "forget", files, "bench")
    report, inspect_s = timed(services.runs.inspect_upload, folder, "x")
    print(f"{len(files)} files ({len({f.name for f in files})} distinct names): copy {save_s:.1f} s, read back "
          f"{inspect_s:.1f} s; report: {report.summary('forget')}")

    bomb = zeros_zip(tmp / "bomb.zip")
    demo = launch(services, "quick", args.port)
    try:
        client = Client(demo.local_url, verbose=False)
        client.predict([], [], [], "", "", api_name="/check_uploads")
        before, peak_before = folder_bytes(services.cache), peak_rss_mb()
        for attempt in range(3):
            for endpoint, extra in (("/check_uploads", ()), ("/start_upload", (DEFAULT_MODEL, "quick"))):
                t0 = time.perf_counter()
                try:
                    client.predict([handle_file(str(bomb))], [], [], "x", "", *extra, api_name=endpoint)
                    reply = "accepted (!)"
                except Exception as err:
                    reply = str(err).splitlines()[0][:140]
                print(f"try {attempt + 1} {endpoint}: refused in {time.perf_counter() - t0:.1f} s: {reply}")
        after = folder_bytes(services.cache)
    finally:
        demo.close()
        services.close()
    print(f"zip {bomb.stat().st_size / 1e3:.0f} kB (unpacks to 517 MB); bytes under the cache before {before:,}, "
          f"after {after:,} (change {after - before:+,}); peak RSS {peak_before:.0f} -> {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()

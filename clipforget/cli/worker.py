"""``worker``: run the app's queued runs on this machine (docs/backends.md).

    python -m clipforget worker --cache-dir /shared/clipforget            # one worker per GPU (else one on the CPU)
    python -m clipforget worker --cache-dir /shared/clipforget --workers 2 --device cpu
    python -m clipforget worker --cache-dir /shared/clipforget --status   # what waits, who works on what
    python -m clipforget worker --one --device cuda:0 ...                 # a single worker (what the pool starts)

The queue is the folder ``<cache>/queue`` (``--queue`` to override) that the app's ``local`` backend writes; point
the app and the workers at the same cache folder (shared storage when they are on different machines) and start the
app with ``--workers 0`` when only these workers should run its runs.
"""

from __future__ import annotations

import argparse
import json
import signal
import time
from pathlib import Path

from clipforget.core.paths import cache_dir
from clipforget.jobs.pool import WorkerPool, plan_slots
from clipforget.jobs.worker import Worker, WorkerConfig
from clipforget.jobs.workqueue import WorkQueue

from .common import add_folder_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="run queued runs of the app on this machine (worker processes)")
    p.add_argument("--queue", default=None, help="queue folder (default: <cache>/queue)")
    p.add_argument("--device", default="auto", help="auto (one worker per GPU, else CPU) | cpu | cuda | cuda:N")
    p.add_argument("--workers", type=int, default=None, help="how many (default: one per visible GPU, else 1)")
    p.add_argument("--plugin", action="append", default=[], help="module or .py file registering settings/methods")
    p.add_argument("--status", action="store_true", help="print the queue and its workers, then exit")
    p.add_argument("--one", action="store_true", help="be a single worker instead of supervising a pool")
    p.add_argument("--slot", default="w0", help=argparse.SUPPRESS)
    p.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--device-label", default=None, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None, help="CPU threads per worker (default: cores / workers)")
    p.add_argument("--nice", type=int, default=None,
                   help="niceness added to workers (default: 10 under a pool, 0 for --one)")
    p.add_argument("--max-runs", type=int, default=None, help="with --one: exit after this many runs")
    p.add_argument("--idle-exit", type=float, default=None, help="with --one: exit after this many idle seconds")
    add_folder_args(p)
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    queue_dir = Path(args.queue) if args.queue else cache_dir(args.cache_dir) / "queue"
    if args.status:
        return _status(WorkQueue(queue_dir))
    if args.one:
        config = WorkerConfig(queue_dir, None if args.device == "auto" else args.device, args.slot,
                              args.device_label, args.parent_pid, args.threads or None, args.cache_dir,
                              max_runs=args.max_runs, idle_exit=args.idle_exit, plugins=args.plugin,
                              nice=args.nice or 0)
        return Worker(config).serve()
    slots = plan_slots(None if args.device == "auto" else args.device, args.workers)
    if args.threads:
        for slot in slots:
            slot.threads = args.threads
    pool = WorkerPool(WorkQueue(queue_dir), slots, args.cache_dir, args.plugin,
                      nice=10 if args.nice is None else args.nice)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: pool.request_stop())
    print(f"supervising {len(slots)} worker(s) on {queue_dir}: "
          + ", ".join(f"{s.name} ({s.device})" for s in slots), flush=True)
    try:
        pool.serve_forever()
    finally:
        pool.stop()
    return 0


def _status(queue: WorkQueue) -> int:
    now = time.time()
    pending = queue.pending_tickets()
    print(f"queue {queue.root}: {len(pending)} waiting")
    for t in pending:
        print(f"  waiting  {t.run_id} (owner {t.owner[:8]}, {now - t.created:.0f} s)")
    for beat in queue.heartbeats():
        alive = "alive" if queue.is_alive(beat, 60.0) else "DEAD"
        print(f"  worker   {beat.get('label', beat['id'])} {alive}, {beat.get('device')}, "
              f"run {beat.get('run') or '-'}, {beat.get('runs', 0)} done, heartbeat "
              f"{now - float(beat.get('updated') or now):.0f} s ago")
    print(json.dumps({"waiting": len(pending), "workers": len(queue.heartbeats())}))
    return 0

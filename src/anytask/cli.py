"""The ``anytask`` command.

::

    anytask demo [--host 127.0.0.1] [--port 8000] [--db anytask-demo.db]
    anytask inspect --db tasks.db [--status failed] [--name NAME] [--limit 20] [--json]
    anytask show --db tasks.db TASK_ID
    anytask replay --db tasks.db TASK_ID [TASK_ID ...]
    anytask purge --db tasks.db --older-than 7d [--status success --status cancelled]
    anytask worker module:manager [--backend asyncio|trio]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import anyio

from ._codec import clean_text
from ._errors import AnytaskError
from ._manager import PURGE_BATCH, TaskManager, purge_in_batches
from ._models import TaskQuery, TaskRecord, TaskStatus

__all__ = ["main"]


def _iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z") if value is not None else "-"


def _row(rec: TaskRecord) -> dict[str, Any]:
    return {
        "task_id": rec.id,
        "func_name": rec.name,
        "status": rec.status.value,
        "priority": rec.priority,
        "attempts": rec.attempts,
        "created_at": _iso(rec.created_at),
        "ended_at": _iso(rec.ended_at),
        "duration": rec.duration,
        "error": rec.error,
        "replay_of": rec.replay_of,
    }


async def _inspect(args: argparse.Namespace) -> int:
    from .stores.sqlite import SQLiteStore

    # only reads: a file of an older schema is left as it is, for the older anytask that
    # may still be using it (an upgraded file locks it out)
    store = SQLiteStore(args.db, upgrade=False)
    await store.open()
    try:
        statuses = frozenset({TaskStatus(args.status)}) if args.status else None
        page = await store.list(TaskQuery(statuses=statuses, name=args.name, limit=args.limit))
        counts = await store.counts()
    finally:
        await store.close()
    rows = [_row(r) for r in page.items]
    if args.json:
        print(json.dumps({"counts": {k.value: v for k, v in counts.items()}, "items": rows}))
        return 0
    print("  ".join(f"{k.value}={v}" for k, v in counts.items()))
    for row in rows:
        print(
            f"{row['task_id']}  {row['status']:<11} {row['func_name']:<30} "
            f"attempts={row['attempts']} created={row['created_at']}"
            + (f"  error={row['error']!r}" if row["error"] else "")
        )
    return 0


async def _show(args: argparse.Namespace) -> int:
    from .stores.sqlite import SQLiteStore

    store = SQLiteStore(args.db, upgrade=False)  # only reads (see _inspect)
    await store.open()
    try:
        rec = await store.fetch(args.task_id)
    finally:
        await store.close()
    if rec is None:
        print(f"no task with id {clean_text(args.task_id)}", file=sys.stderr)
        return 1
    row = _row(rec)
    row.update(
        args=rec.args,
        kwargs=rec.kwargs,
        result=rec.result,
        traceback=rec.traceback,
        logs=rec.logs,
        tags=rec.tags,
    )
    print(json.dumps(row, indent=2, default=str))
    return 0


async def _replay(args: argparse.Namespace) -> int:
    from .stores.sqlite import SQLiteStore

    store = SQLiteStore(args.db)
    await store.open()
    try:
        # The replays are written straight to the store; the app's running instances
        # pick them up. Nothing runs in this process.
        builder = TaskManager(store=store)
        status = 0  # 1 when an id names no task
        wanted = list(dict.fromkeys(args.task_ids))
        found = {r.id: r for r in await store.fetch_many(wanted)}
        for task_id in wanted:
            rec = found.get(task_id)
            if rec is None:
                print(f"{clean_text(task_id)}: no such task", file=sys.stderr)
                status = 1
            elif not rec.status.dead:
                print(f"{task_id}: {rec.status.value}, not replayed (only failed/interrupted)")
            else:
                generations: dict[str, int] = {}
                if not await builder._not_replayed([rec], generations):
                    # a dead task is replayed once (TaskManager.replay)
                    replay_id = (await builder.replays_of([task_id])).get(task_id, "?")
                    print(f"{task_id}: already replayed as {replay_id}, not replayed again")
                    continue
                new = builder._replay_record(rec, generations[task_id])
                if (await store.insert([new]))[0]:
                    print(f"{task_id} -> {new.id}")
                else:  # another process replayed it meanwhile
                    print(f"{task_id}: already replayed as {new.id}, not replayed again")
    finally:
        await store.close()
    return status


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")


def _duration(text: str) -> float:
    """``30s``, ``15m``, ``12h``, ``7d`` or plain seconds, for ``--older-than``."""
    match = _DURATION.fullmatch(text.strip())
    seconds = float(match[1]) * _UNITS[match[2] or "s"] if match else 0.0
    if not match or seconds <= 0 or seconds == float("inf"):
        raise argparse.ArgumentTypeError(
            f"expected a positive duration such as 30s, 15m, 12h or 7d, got {text!r}"
        )
    return seconds


async def _purge(args: argparse.Namespace) -> int:
    from ._clock import from_ts
    from .stores.sqlite import SQLiteStore

    statuses = frozenset(TaskStatus(s) for s in args.status or ("success", "cancelled"))
    cutoff = time.time() - args.older_than
    if cutoff <= 0:
        print("nothing ended that long ago")
        return 0
    before = from_ts(cutoff)
    store = SQLiteStore(args.db)
    await store.open()
    try:
        # small transactions: the app's instances keep committing meanwhile. Passes
        # until one deletes nothing: a replay kept while the dead task it replays was
        # stored goes in the pass after the one that deleted that task.
        total = 0
        while n := await purge_in_batches(store, before, statuses, PURGE_BATCH):
            total += n
    finally:
        await store.close()
    names = "/".join(sorted(s.value for s in statuses))
    print(f"deleted {total} {names} task(s) that ended before {_iso(before)}")
    return 0


def _worker(args: argparse.Namespace) -> int:
    module_name, _, attr = args.target.partition(":")
    if not attr:
        print("worker target must look like 'package.module:manager'", file=sys.stderr)
        return 2
    sys.path.insert(0, ".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name != missing and not module_name.startswith(missing + "."):
            raise  # a module the target imports is missing: its traceback says where
        print(
            f"anytask: no module named {missing!r} (worker target {args.target!r})", file=sys.stderr
        )
        return 2
    tm = getattr(module, attr, None)
    if tm is None:
        print(f"anytask: module {module_name!r} has no attribute {attr!r}", file=sys.stderr)
        return 2
    if not isinstance(tm, TaskManager):
        print(f"{args.target} is not a TaskManager", file=sys.stderr)
        return 2

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(tm.run)
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    tm.stop()
                    break

    anyio.run(serve, backend=args.backend)
    return 0


def _demo(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from .demo import create_app
    except ImportError as exc:
        print(f"the demo needs the fastapi extra: pip install 'anytask[fastapi]' ({exc})")
        return 2
    app = create_app(args.db)
    print(f"anytask demo: http://{args.host}:{args.port}/  (dashboard: /tasks/dashboard)")
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anytask", description=__doc__.split("::")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the demo app with the dashboard")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--db", default="anytask-demo.db")
    p = sub.add_parser("inspect", help="list tasks in a SQLite store")
    p.add_argument("--db", required=True)
    p.add_argument("--status", choices=[s.value for s in TaskStatus])
    p.add_argument("--name")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("show", help="print one task record as JSON")
    p.add_argument("--db", required=True)
    p.add_argument("task_id")
    p = sub.add_parser("replay", help="replay dead tasks (the app's instances run them)")
    p.add_argument("--db", required=True)
    p.add_argument("task_ids", nargs="+")
    p = sub.add_parser(
        "purge",
        help="delete ended tasks older than a duration (by default successes and "
        "cancellations; dead letters only when named with --status)",
    )
    p.add_argument("--db", required=True)
    p.add_argument("--older-than", type=_duration, required=True, help="e.g. 30s, 15m, 12h, 7d")
    p.add_argument(
        "--status",
        action="append",
        choices=sorted(s.value for s in TaskStatus if s.terminal),
        help="an ended status to delete (repeat for several)",
    )
    p = sub.add_parser("worker", help="run a TaskManager defined in a module, until SIGINT")
    p.add_argument("target", help="package.module:manager")
    p.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "worker":
        return _worker(args)
    handler = {"inspect": _inspect, "show": _show, "replay": _replay, "purge": _purge}[args.command]
    if not os.path.isfile(args.db):  # these read or change an existing store, never make one
        print(f"anytask: no database file at {args.db!r}", file=sys.stderr)
        return 2
    try:
        result: int = anyio.run(handler, args)
    except AnytaskError as exc:  # (a locked, damaged or newer file: the message names it)
        print(f"anytask: {exc}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    raise SystemExit(main())

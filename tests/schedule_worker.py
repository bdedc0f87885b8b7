"""One instance of an app with a 1-second schedule, for ``test_schedule_processes.py``.

Not a test module. ``schedule_worker.py DB BACKEND SECONDS`` runs a manager on the SQLite
file DB (on the anyio backend BACKEND, "asyncio" or "trio") with the schedule ``tick``
(every second, catching up every missed fire), prints ``ready`` once the manager runs,
and exits after SECONDS unless it is killed first. It writes nothing but the store.
"""

from __future__ import annotations

import sys

import anyio

from anytask import TaskManager


async def main(db: str, seconds: float) -> None:
    tm = TaskManager(snapshot_db=db, lease=3.0, poll_interval=0.1, shutdown_grace=1.0)

    @tm.schedule(every=1, id="tick", misfire="catch_up", max_catch_up=1000, overlap="allow")
    async def tick() -> None:
        pass

    async with tm:
        print("ready", flush=True)
        await anyio.sleep(seconds)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], float(sys.argv[3]), backend=sys.argv[2])

"""Arguments a SQLite row cannot hold, second review: the size check counts what the row
holds (the JSON of the argument list and dict, with their brackets, commas and keyword
names), and a keyword name UTF-8 cannot encode is refused like any other text. Either
one stored would fail the group commit that holds it, and every later write with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from anytask import PayloadError, TaskManager
from test_limits_review import LIMIT, _still_writes, small_sqlite  # noqa: F401 (a fixture)

pytestmark = pytest.mark.anyio


async def test_keyword_names_count_against_the_limit(small_sqlite: Path) -> None:  # noqa: F811
    tm = TaskManager(snapshot_db=small_sqlite)

    @tm.task()
    async def f(*args: Any, **kwargs: Any) -> int:
        return 1

    async with tm:
        # one long name (the value is small), without and with per-call options
        with pytest.raises(PayloadError, match="more than the store takes"):
            tm.add_task(f, **{"k" * LIMIT: 1})
        with pytest.raises(PayloadError, match="more than the store takes"):
            tm.add_task(f, priority=1, **{"k" * LIMIT: 1})
        # many short names: each value is one byte, each entry about ten
        many = {f"k{i:06d}": 0 for i in range(LIMIT // 8)}
        with pytest.raises(PayloadError, match="more than the store takes"):
            tm.add_task(f, **many)
        await _still_writes(tm)
        assert await tm.store.count() == 1  # the small task only


async def test_commas_and_brackets_count_against_the_limit(small_sqlite: Path) -> None:  # noqa: F811
    tm = TaskManager(snapshot_db=small_sqlite)

    @tm.task()
    async def f(*args: Any) -> None:
        raise ValueError("e" * LIMIT)

    async with tm:
        half = tm.store.max_record_bytes
        assert half is not None
        half //= 2
        # each zero takes one byte, the list twice as many: stored, the row took all of
        # the limit, and the (cut) error and traceback of its failure overflowed it
        with pytest.raises(PayloadError, match="more than the store takes"):
            tm.add_task(f, *([0] * half))
        with pytest.raises(PayloadError, match="more than the store takes"):
            tm.add_task(f, *([0] * half), tags=["t"])
        # what does fit runs, fails and is recorded
        with anyio.fail_after(30):
            record = await tm.wait(await tm.enqueue(f, *([0] * (half // 2 - 10))))
        assert record.status.value == "failed"
        assert record.error is not None
        assert record.error.endswith("more characters not stored]")
        await _still_writes(tm)


async def test_keyword_name_with_lone_surrogate_is_refused(tmp_path: Path) -> None:
    tm = TaskManager(snapshot_db=tmp_path / "tasks.db")

    @tm.task()
    async def f(**kwargs: Any) -> int:
        return 1

    async with tm:
        with pytest.raises(PayloadError, match="lone surrogate"):
            tm.add_task(f, **{"\ud800": 1})
        with pytest.raises(PayloadError, match="lone surrogate"):
            tm.add_task(f, priority=1, **{"a\udcff": 1})
        with anyio.fail_after(30):
            record = await tm.wait(await tm.enqueue(f, **{"é": 1}))
        assert record.kwargs == {"é": 1}
        await _still_writes(tm)

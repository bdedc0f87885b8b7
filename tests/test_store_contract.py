"""The store contract (``anytask.stores.abc``), checked against every store.

A new backend plugs in by adding one entry to ``STORES``.
"""

from __future__ import annotations

import dataclasses
import random
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from anytask import MemoryStore, TaskQuery, TaskRecord, TaskStatus
from anytask._models import Outcome, ScheduleState
from anytask.stores.abc import Store
from anytask.stores.sqlite import SQLiteStore

STORES: dict[str, Callable[[Path], Store]] = {
    "memory": lambda tmp: MemoryStore(),
    "sqlite": lambda tmp: SQLiteStore(tmp / "contract.db"),
}

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
LEASE = timedelta(seconds=30)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make(**fields: Any) -> TaskRecord:
    fields.setdefault("id", uuid.uuid4().hex)
    fields.setdefault("name", "job")
    fields.setdefault("args", [])
    fields.setdefault("kwargs", {})
    fields.setdefault("created_at", T0)
    fields.setdefault("run_after", T0)
    return TaskRecord(**fields)


def as_dict(rec: TaskRecord) -> dict[str, Any]:
    return {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec)}


@pytest.fixture(params=list(STORES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    st = STORES[request.param](tmp_path)
    await st.open()
    try:
        yield st
    finally:
        await st.close()


async def claim_all(store: Store, owner: str = "w1", now: datetime = T0) -> list[TaskRecord]:
    return await store.claim(owner, 1000, now, now + LEASE)


# -- insert and read -------------------------------------------------------------------


async def test_every_field_round_trips_through_fetch_and_get(store: Store) -> None:
    rec = TaskRecord(
        id="t-1",
        name="billing.charge",
        args=[1, "two", [3.5, None], {"k": True}],
        kwargs={"amount": 12.25, "note": "café ☕", "deep": {"a": [1, {"b": 2}]}},
        created_at=at(0),
        run_after=at(1.5),
        status=TaskStatus.FAILED,
        priority=7,
        tags=["billing", "eu"],
        idempotency_key="charge-42",
        started_at=at(2),
        ended_at=at(3.000001),
        attempts=3,
        max_attempts=4,
        timeout=12.5,
        requeue_on_interrupt=True,
        error="card declined",
        error_type="PaymentError",
        traceback="Traceback (most recent call last): ...",
        result={"partial": [1, 2]},
        logs=[{"ts": 1.5, "level": "info", "msg": "hello"}],
        schedule_id="nightly",
        fire_at=at(-60),
        owner="instance-a",
        lease_expires_at=at(30),
        token=5,
        cancel_requested=True,
        replay_of="t-0",
    )
    assert await store.insert([rec]) == [True]
    fetched = await store.fetch("t-1")
    got = store.get("t-1")
    assert fetched is not None
    assert got is not None
    assert fetched.seq > 0
    expected = as_dict(rec) | {"seq": fetched.seq}
    assert as_dict(fetched) == expected
    assert as_dict(got) == expected
    assert fetched.created_at.tzinfo is not None


async def test_new_and_used_records_round_trip_in_one_batch(store: Store) -> None:
    # a store may write a record that only a new task could be (pending, never run) in a
    # shorter form than one that carries a history; every field survives either way, also
    # when one batch holds both kinds
    new = make(
        id="new-1",
        priority=-3,
        tags=["a", "b"],
        idempotency_key="k-1",
        max_attempts=5,
        timeout=2.5,
        requeue_on_interrupt=True,
        schedule_id="every-5",
        fire_at=at(-5),
        replay_of="old-1",
        args=[1, {"x": [2]}],
        kwargs={"y": "é"},
        run_after=at(9),
    )
    used = make(
        id="used-1",
        status=TaskStatus.INTERRUPTED,
        attempts=2,
        token=3,
        started_at=at(1),
        ended_at=at(2),
        error="stopped",
        error_type="Interrupted",
        logs=[{"ts": 1.0, "level": "info", "msg": "m"}],
        result=[1],
    )
    plain = [make(id=f"plain-{i}") for i in range(3)]
    assert await store.insert([new, plain[0]]) == [True, True]  # new ones only
    assert await store.insert([plain[1], used]) == [True, True]  # both kinds
    assert await store.insert([plain[2]]) == [True]
    for rec in [new, used, *plain]:
        got = store.get(rec.id)
        assert got is not None
        assert as_dict(got) == as_dict(rec) | {"seq": got.seq}


async def test_unknown_id_reads_as_none(store: Store) -> None:
    assert store.get("nope") is None
    assert await store.fetch("nope") is None
    assert await store.fetch_many(["nope"]) == []


async def test_a_lookup_by_text_utf8_cannot_encode_finds_nothing(store: Store) -> None:
    # a lone surrogate (what os.fsdecode and sys.argv make of bytes that are not UTF-8)
    # is in no stored id or name: the lookup answers as for any unknown one
    await store.insert([make(id="t")])
    (running,) = await claim_all(store)
    bad = "\udcff"
    assert store.get(bad) is None
    assert await store.fetch(bad) is None
    assert [r.id for r in await store.fetch_many([bad, "t"])] == ["t"]
    assert await store.cancel(bad, at(1)) is None
    for query in (TaskQuery(name=bad), TaskQuery(tag=bad), TaskQuery(search=bad)):
        assert (await store.list(query)).items == []
        assert await store.count(query) == 0
    hb = await store.heartbeat("w1", at(30), {bad, "t"})
    assert hb.held == {"t"}
    assert running.id == "t"


async def test_fetch_many_returns_the_existing_ones(store: Store) -> None:
    a, b = make(), make()
    await store.insert([a, b])
    found = await store.fetch_many([a.id, "missing", b.id])
    assert sorted(r.id for r in found) == sorted([a.id, b.id])


async def test_records_handed_out_are_snapshots(store: Store) -> None:
    rec = make(args=[1])
    await store.insert([rec])
    rec.args.append(2)
    got = store.get(rec.id)
    assert got is not None
    assert got.args == [1]
    got.status = TaskStatus.FAILED
    again = store.get(rec.id)
    assert again is not None
    assert again.status is TaskStatus.PENDING


async def test_statuses_may_be_given_by_name(store: Store) -> None:
    await store.insert([make(id="p"), make(id="f", status=TaskStatus.FAILED)])
    for statuses in (frozenset({"failed"}), {"failed"}, ["failed"], "failed"):
        page = await store.list(TaskQuery(statuses=statuses))  # type: ignore[arg-type]
        assert [r.id for r in page.items] == ["f"], statuses
    page = await store.list(TaskQuery(statuses=frozenset({TaskStatus.PENDING, "failed"})))  # type: ignore[arg-type]
    assert sorted(r.id for r in page.items) == ["f", "p"]


def _mutate_nested(rec: TaskRecord) -> None:
    """Change every nested value of a record in place (as careless caller code might)."""
    rec.args[0].append("changed")
    rec.args.append("more")
    rec.kwargs["deep"]["k"] = "changed"
    rec.kwargs["new"] = 1
    rec.tags.append("changed")
    rec.logs[0]["msg"] = "changed"
    rec.logs[0]["extra"].append("changed")
    rec.logs.append({"msg": "added"})
    rec.result["items"].append("changed")
    rec.result["new"] = 1


async def test_nested_values_are_never_shared_with_callers(store: Store) -> None:
    """What the store hands out, and what it was handed, shares no list or dict with
    what it keeps: changing one in place, nested values included, changes nothing in the
    store (as with a store that encodes and decodes every value)."""

    def nested(**fields: Any) -> TaskRecord:
        return make(
            args=[[1, 2], "x"],
            kwargs={"deep": {"k": "v"}},
            tags=["a"],
            logs=[{"ts": 1.0, "level": "info", "msg": "m", "extra": [1]}],
            result={"items": [1]},
            **fields,
        )

    expected = as_dict(nested(id="x", status=TaskStatus.SUCCESS))
    del expected["id"], expected["seq"]

    def unchanged(rec: TaskRecord | None) -> None:
        assert rec is not None
        got = as_dict(rec)
        del got["id"], got["seq"]
        assert got == expected

    given = nested(id="given", status=TaskStatus.SUCCESS)
    await store.insert([given])
    _mutate_nested(given)  # what the caller handed over
    unchanged(store.get("given"))

    for read in (
        lambda: anyio.to_thread.run_sync(store.get, "given"),
        lambda: store.fetch("given"),
        lambda: _first(store.fetch_many(["given"])),
        lambda: _first_item(store.list(TaskQuery())),
    ):
        rec = await read()
        assert rec is not None
        _mutate_nested(rec)  # what a reader got
        unchanged(store.get("given"))

    await store.insert([nested(id="claimed")])
    claimed = await claim_all(store)
    assert [r.id for r in claimed] == ["claimed"]
    _mutate_nested(claimed[0])  # what a claim handed out
    fresh = store.get("claimed")
    assert fresh is not None
    assert fresh.args == [[1, 2], "x"]
    assert fresh.tags == ["a"]
    assert fresh.kwargs == {"deep": {"k": "v"}}

    logs = [{"ts": 2.0, "level": "info", "msg": "done", "extra": [2]}]
    result = {"items": [3]}
    out = Outcome(
        "claimed", claimed[0].token, TaskStatus.SUCCESS, ended_at=at(1), logs=logs, result=result
    )
    assert await store.complete([out]) == [True]
    logs[0]["extra"].append("changed")  # what the caller of complete() keeps
    logs.append({"msg": "added"})
    result["items"].append("changed")
    done = store.get("claimed")
    assert done is not None
    assert done.logs == [{"ts": 2.0, "level": "info", "msg": "done", "extra": [2]}]
    assert done.result == {"items": [3]}


async def _first(found: Any) -> TaskRecord | None:
    records = await found
    return records[0] if records else None


async def _first_item(page: Any) -> TaskRecord | None:
    items = (await page).items
    return items[-1] if items else None


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param({"id": "same"}, {"id": "same"}, id="id"),
        pytest.param({"idempotency_key": "k"}, {"idempotency_key": "k"}, id="idempotency-key"),
        pytest.param(
            {"schedule_id": "s", "fire_at": at(60)},
            {"schedule_id": "s", "fire_at": at(60)},
            id="schedule-fire",
        ),
    ],
)
async def test_conflicting_insert_returns_false_and_writes_nothing(
    store: Store, first: dict[str, Any], second: dict[str, Any]
) -> None:
    original = make(name="original", **first)
    assert await store.insert([original]) == [True]
    intruder = make(name="intruder", priority=9, **second)
    other = make(name="other")
    assert await store.insert([intruder, other]) == [False, True]
    assert await store.count() == 2
    kept = store.get(original.id)
    assert kept is not None
    assert kept.name == "original"
    assert kept.priority == 0
    if intruder.id != original.id:
        assert store.get(intruder.id) is None


async def test_conflict_inside_one_batch(store: Store) -> None:
    a = make(idempotency_key="once")
    b = make(idempotency_key="once")
    assert await store.insert([a, b]) == [True, False]


async def test_same_schedule_other_fire_time_does_not_conflict(store: Store) -> None:
    recs = [
        make(schedule_id="s", fire_at=at(0)),
        make(schedule_id="s", fire_at=at(1)),
        make(schedule_id="t", fire_at=at(0)),
        make(),
        make(),
    ]
    assert await store.insert(recs) == [True] * 5


# -- claim -----------------------------------------------------------------------------


async def test_claim_takes_highest_priority_first_then_fifo(store: Store) -> None:
    recs = [make(name=f"n{i}", priority=p) for i, p in enumerate([0, 5, 0, 5, -1, 9])]
    await store.insert(recs)
    claimed = await claim_all(store)
    assert [r.name for r in claimed] == ["n5", "n1", "n3", "n0", "n2", "n4"]


async def test_claim_order_is_fifo_across_batches(store: Store) -> None:
    for i in range(3):
        await store.insert([make(name=f"b{i}-{j}") for j in range(2)])
    claimed = await claim_all(store)
    assert [r.name for r in claimed] == ["b0-0", "b0-1", "b1-0", "b1-1", "b2-0", "b2-1"]


@pytest.mark.parametrize("seed", range(4))
async def test_claim_order_follows_priority_then_seq_through_delays_retries_and_cancels(
    store: Store, seed: int
) -> None:
    # Every claim must take the due pending record with the highest priority, and among
    # those the lowest seq (the oldest), also when records become due out of seq order
    # (a delayed task, a retry) or stop being pending while they wait (a cancel). The
    # reference is computed from the records themselves before each claim.
    rng = random.Random(seed)
    now = T0
    ids: list[str] = []
    claims = 0
    for step in range(300):
        op = rng.random()
        if op < 0.4:
            batch = [
                make(
                    id=f"r{step}-{i}",
                    priority=rng.choice([0, 0, 0, 1, 5, -2]),
                    created_at=now,
                    run_after=now + timedelta(seconds=rng.choice([0, 0, 0, 1, 2, 5])),
                    max_attempts=3,
                )
                for i in range(rng.randint(1, 3))
            ]
            await store.insert(batch)
            ids += [r.id for r in batch]
        elif op < 0.5 and ids:
            await store.cancel(rng.choice(ids), now)
        elif op < 0.6:
            now += timedelta(seconds=rng.choice([1, 2, 3]))
        else:
            records = await store.fetch_many(ids)
            due = [r for r in records if r.status is TaskStatus.PENDING and r.run_after <= now]
            expected = min(due, key=lambda r: (-r.priority, r.seq), default=None)
            claimed = await store.claim("w1", 1, now, now + LEASE)
            assert [r.id for r in claimed] == ([] if expected is None else [expected.id]), step
            claims += bool(claimed)
            for rec in claimed:
                if rng.random() < 0.5:  # a retry: due again later, behind younger records
                    wait = timedelta(seconds=rng.choice([0, 1, 3]))
                    out = Outcome(rec.id, rec.token, TaskStatus.PENDING, ended_at=now)
                    out.run_after = now + wait
                else:
                    out = Outcome(rec.id, rec.token, TaskStatus.SUCCESS, ended_at=now)
                assert await store.complete([out]) == [True]
    assert claims > 50  # the walk claimed often enough to mean something


async def test_claim_order_holds_across_many_distinct_priorities(store: Store) -> None:
    rng = random.Random(7)
    for batch in range(5):
        prios = rng.sample(range(-100, 100), 40)
        await store.insert([make(id=f"{batch}:{p}", priority=p) for p in prios])
        claimed = await claim_all(store)
        assert [r.priority for r in claimed] == sorted(prios, reverse=True)
    if isinstance(store, MemoryStore):
        # the queues of priorities no longer in use do not pile up
        await store.insert([make(id="last", priority=1000)])
        assert store._ready._prios == [1000]


async def test_claim_respects_limit(store: Store) -> None:
    await store.insert([make(name=f"n{i}") for i in range(5)])
    first = await store.claim("w1", 2, T0, T0 + LEASE)
    rest = await store.claim("w1", 10, T0, T0 + LEASE)
    assert [r.name for r in first] == ["n0", "n1"]
    assert [r.name for r in rest] == ["n2", "n3", "n4"]
    assert await store.claim("w1", 10, T0, T0 + LEASE) == []


async def test_claim_takes_only_due_tasks(store: Store) -> None:
    due = make(run_after=at(0))
    later = make(run_after=at(10), priority=100)
    await store.insert([due, later])
    assert [r.id for r in await claim_all(store, now=at(5))] == [due.id]
    assert await claim_all(store, now=at(9.999)) == []
    assert [r.id for r in await claim_all(store, now=at(10))] == [later.id]


async def test_claim_takes_only_pending_tasks(store: Store) -> None:
    await store.insert(
        [
            make(status=TaskStatus.SUCCESS, ended_at=T0),
            make(status=TaskStatus.CANCELLED, ended_at=T0),
        ]
    )
    assert await claim_all(store) == []


async def test_claim_sets_the_running_fields(store: Store) -> None:
    rec = make()
    await store.insert([rec])
    (claimed,) = await store.claim("w1", 1, at(1), at(31))
    stored = store.get(rec.id)
    assert stored is not None
    for view in (claimed, stored):
        assert view.status is TaskStatus.RUNNING
        assert view.owner == "w1"
        assert view.lease_expires_at == at(31)
        assert view.started_at == at(1)
        assert view.attempts == 1
        assert view.token != rec.token
        assert view.cancel_requested is False


async def test_two_claimers_never_get_the_same_task(store: Store) -> None:
    await store.insert([make() for _ in range(200)])
    taken: dict[str, list[str]] = {"a": [], "b": []}

    async def claimer(owner: str) -> None:
        while batch := await store.claim(owner, 7, T0, T0 + LEASE):
            taken[owner].extend(r.id for r in batch)
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(claimer, "a")
        tg.start_soon(claimer, "b")
    assert not set(taken["a"]) & set(taken["b"])
    assert len(taken["a"]) + len(taken["b"]) == 200


# -- complete --------------------------------------------------------------------------


async def test_complete_applies_a_final_outcome(store: Store) -> None:
    await store.insert([make(id="t")])
    (rec,) = await claim_all(store)
    out = Outcome(
        "t",
        rec.token,
        TaskStatus.SUCCESS,
        ended_at=at(2),
        result={"sum": 3, "items": ["é", 1.5]},
        logs=[{"ts": 1.0, "level": "info", "msg": "done"}],
    )
    assert await store.complete([out]) == [True]
    done = store.get("t")
    assert done is not None
    assert done.status is TaskStatus.SUCCESS
    assert done.result == {"sum": 3, "items": ["é", 1.5]}
    assert done.logs == [{"ts": 1.0, "level": "info", "msg": "done"}]
    assert done.ended_at == at(2)
    assert done.owner is None
    assert done.lease_expires_at is None
    assert done.duration == 2.0


async def test_complete_records_a_failure(store: Store) -> None:
    await store.insert([make(id="t")])
    (rec,) = await claim_all(store)
    out = Outcome(
        "t", rec.token, TaskStatus.FAILED, ended_at=at(1), error="boom", error_type="KeyError"
    )
    assert await store.complete([out]) == [True]
    done = store.get("t")
    assert done is not None
    assert done.status is TaskStatus.FAILED
    assert (done.error, done.error_type, done.result) == ("boom", "KeyError", None)


async def test_complete_refuses_a_stale_token(store: Store) -> None:
    await store.insert([make(id="t")])
    (rec,) = await claim_all(store)
    stale = Outcome("t", rec.token - 1, TaskStatus.SUCCESS, ended_at=at(1), result=1)
    assert await store.complete([stale]) == [False]
    still = store.get("t")
    assert still is not None
    assert still.status is TaskStatus.RUNNING
    assert still.result is None


async def test_complete_refuses_a_record_that_is_not_running(store: Store) -> None:
    await store.insert([make(id="t")])
    (rec,) = await claim_all(store)
    ok = Outcome("t", rec.token, TaskStatus.SUCCESS, ended_at=at(1), result=1)
    assert await store.complete([ok]) == [True]
    again = Outcome("t", rec.token, TaskStatus.FAILED, ended_at=at(2), error="late")
    unknown = Outcome("nope", 1, TaskStatus.SUCCESS, ended_at=at(2))
    assert await store.complete([again, unknown]) == [False, False]
    done = store.get("t")
    assert done is not None
    assert done.status is TaskStatus.SUCCESS
    assert done.error is None


async def test_complete_batch_answers_per_outcome(store: Store) -> None:
    await store.insert([make(id="a"), make(id="b")])
    a, b = await claim_all(store)
    outs = [
        Outcome("a", a.token, TaskStatus.SUCCESS, ended_at=at(1)),
        Outcome("b", b.token + 1, TaskStatus.SUCCESS, ended_at=at(1)),
    ]
    assert await store.complete(outs) == [True, False]


async def test_mixed_outcomes_in_one_batch_each_apply(store: Store) -> None:
    # plain successes, successes with logs or an error text, failures, a retry and a
    # second outcome for the same task, all in one call: each is applied (or refused) as
    # it would be alone, in order
    ids = [f"t{i}" for i in range(8)]
    await store.insert([make(id=i) for i in ids])
    recs = {r.id: r for r in await claim_all(store)}

    def out(task_id: str, status: TaskStatus, **fields: Any) -> Outcome:
        rec = recs[task_id]
        return Outcome(task_id, rec.token, status, seq=rec.seq, ended_at=at(5), **fields)

    outs = [
        out("t0", TaskStatus.SUCCESS, result={"n": 0}),
        out("t1", TaskStatus.SUCCESS),
        out("t2", TaskStatus.SUCCESS, logs=[{"ts": 1.0, "level": "info", "msg": "hi"}]),
        out("t3", TaskStatus.FAILED, error="boom", error_type="ValueError", traceback="tb"),
        out("t4", TaskStatus.SUCCESS, result=4),
        out("t5", TaskStatus.PENDING, run_after=at(60), error="again", error_type="E"),
        out("t1", TaskStatus.FAILED, error="late"),  # t1 has ended: refused
        out("t6", TaskStatus.SUCCESS, result=[6]),
        Outcome("t7", recs["t7"].token + 1, TaskStatus.SUCCESS, seq=recs["t7"].seq),
    ]
    assert await store.complete(outs) == [True] * 6 + [False, True, False]
    got = {i: store.get(i) for i in ids}
    assert all(r is not None for r in got.values())
    view = {
        i: (r.status, r.result, r.error, r.error_type, r.traceback, r.logs, r.owner)
        for i, r in got.items()
        if r is not None
    }
    ok = TaskStatus.SUCCESS
    assert view == {
        "t0": (ok, {"n": 0}, None, None, None, [], None),
        "t1": (ok, None, None, None, None, [], None),
        "t2": (ok, None, None, None, None, [{"ts": 1.0, "level": "info", "msg": "hi"}], None),
        "t3": (TaskStatus.FAILED, None, "boom", "ValueError", "tb", [], None),
        "t4": (ok, 4, None, None, None, [], None),
        "t5": (TaskStatus.PENDING, None, "again", "E", None, [], None),
        "t6": (ok, [6], None, None, None, [], None),
        "t7": (TaskStatus.RUNNING, None, None, None, None, [], "w1"),
    }
    assert all(got[i].ended_at == at(5) for i in ("t0", "t1", "t3", "t6"))  # type: ignore[union-attr]


async def test_write_batch_inserts_completes_then_claims(store: Store) -> None:
    await store.insert([make(id="old", priority=1)])
    (old,) = await claim_all(store)
    fresh = [make(id="hi", priority=5), make(id="lo"), make(id="later", run_after=at(10))]
    done = Outcome("old", old.token, TaskStatus.SUCCESS, ended_at=at(1))
    stale = Outcome("old", old.token - 1, TaskStatus.FAILED, ended_at=at(1))
    res = await store.write_batch(fresh, [done, stale], "w2", 5, at(1), at(31))
    assert res.inserted == [True, True, True]
    assert res.completed == [True, False]
    assert [r.id for r in res.claimed] == ["hi", "lo"]  # priority order, only the due ones
    assert all(r.owner == "w2" and r.status is TaskStatus.RUNNING for r in res.claimed)
    finished = store.get("old")
    assert finished is not None
    assert finished.status is TaskStatus.SUCCESS


async def test_write_batch_claims_no_more_than_the_limit(store: Store) -> None:
    res = await store.write_batch([make(name=f"n{i}") for i in range(4)], [], "w1", 3, T0, at(30))
    assert [r.name for r in res.claimed] == ["n0", "n1", "n2"]
    none = await store.write_batch([make(name="n4")], [], "w1", 0, T0, at(30))
    assert (none.inserted, none.claimed) == ([True], [])
    assert [r.name for r in await claim_all(store)] == ["n3", "n4"]


async def test_has_unfinished_follows_pending_and_running(store: Store) -> None:
    assert await store.has_unfinished() is False
    await store.insert([make(id="t"), make(status=TaskStatus.SUCCESS, ended_at=T0)])
    assert await store.has_unfinished() is True  # pending
    (rec,) = await claim_all(store)
    assert await store.has_unfinished() is True  # running
    await store.complete([Outcome("t", rec.token, TaskStatus.SUCCESS, ended_at=at(1))])
    assert await store.has_unfinished() is False


async def test_retry_outcome_requeues_with_run_after(store: Store) -> None:
    await store.insert([make(id="t", max_attempts=3)])
    (first,) = await claim_all(store)
    retry = Outcome(
        "t",
        first.token,
        TaskStatus.PENDING,
        ended_at=at(1),
        error="flaky",
        error_type="IOError",
        run_after=at(60),
    )
    assert await store.complete([retry]) == [True]
    waiting = store.get("t")
    assert waiting is not None
    assert waiting.status is TaskStatus.PENDING
    assert waiting.run_after == at(60)
    assert waiting.owner is None
    assert waiting.error == "flaky"
    assert await claim_all(store, now=at(59)) == []
    (second,) = await claim_all(store, now=at(60))
    assert second.attempts == 2
    assert second.token != first.token
    assert second.started_at == at(60)


async def test_a_hand_back_can_restore_the_attempts(store: Store) -> None:
    # a task handed back without being run (Outcome.attempts) keeps its attempt count
    await store.insert([make(id="t", max_attempts=2)])
    (first,) = await claim_all(store)
    assert first.attempts == 1
    back = Outcome(
        "t",
        first.token,
        TaskStatus.PENDING,
        seq=first.seq,
        ended_at=at(1),
        error="not registered here",
        error_type="TaskNotRegistered",
        run_after=at(5),
        attempts=0,
    )
    assert await store.complete([back]) == [True]
    waiting = store.get("t")
    assert waiting is not None
    assert (waiting.status, waiting.attempts, waiting.run_after) == (
        TaskStatus.PENDING,
        0,
        at(5),
    )
    (again,) = await claim_all(store, now=at(5))
    assert again.attempts == 1
    assert again.token > first.token


@pytest.mark.parametrize("kind", ["retry", "hand-back"])
async def test_a_pending_outcome_after_a_cancel_request_ends_cancelled(
    store: Store, kind: str
) -> None:
    # the owner retries (or hands back) a task that another instance asked to cancel
    # before the owner heard of it: the request wins, the task does not run again
    await store.insert([make(id="t", max_attempts=3)])
    (first,) = await claim_all(store)
    assert await store.cancel("t", at(1)) is TaskStatus.RUNNING
    out = Outcome(
        "t",
        first.token,
        TaskStatus.PENDING,
        seq=first.seq,
        ended_at=at(2),
        error="flaky",
        error_type="IOError",
        run_after=at(60),
        attempts=0 if kind == "hand-back" else None,
    )
    assert await store.complete([out]) == [True]
    rec = store.get("t")
    assert rec is not None
    assert (rec.status, rec.error_type, rec.ended_at) == (
        TaskStatus.CANCELLED,
        "Cancelled",
        at(2),
    )
    assert not rec.cancel_requested
    assert rec.run_after == T0  # the retry's time is not kept: it never runs again
    assert await claim_all(store, now=at(60)) == []
    counts = await store.counts()
    assert counts[TaskStatus.CANCELLED] == 1
    assert counts[TaskStatus.PENDING] == 0


# -- heartbeat and recovery ------------------------------------------------------------


async def test_heartbeat_extends_only_the_owners_leases(store: Store) -> None:
    await store.insert([make(id="a1"), make(id="a2"), make(id="b1")])
    await store.claim("a", 2, T0, at(30))
    await store.claim("b", 1, T0, at(30))
    hb = await store.heartbeat("a", at(90))
    assert hb.held == {"a1", "a2"}
    assert hb.cancel_requested == set()
    leases = {i: r.lease_expires_at for i in ("a1", "a2", "b1") if (r := store.get(i))}
    assert leases == {"a1": at(90), "a2": at(90), "b1": at(30)}


async def test_heartbeat_with_ids_renews_only_those(store: Store) -> None:
    # an instance renews what it holds; what an earlier process left in the same owner's
    # name runs out and is recovered
    await store.insert([make(id="mine"), make(id="left-behind")])
    await store.claim("web-1", 10, T0, at(30))
    assert await store.cancel("mine", at(1)) is TaskStatus.RUNNING
    hb = await store.heartbeat("web-1", at(90), {"mine", "unknown"})
    assert hb.held == {"mine"}
    assert hb.cancel_requested == {"mine"}
    leases = {i: r.lease_expires_at for i in ("mine", "left-behind") if (r := store.get(i))}
    assert leases == {"mine": at(90), "left-behind": at(30)}
    assert (await store.heartbeat("web-1", at(95), set())).held == set()
    res = await store.recover(at(31))
    assert res.interrupted == ["left-behind"]
    assert store.get("mine").status is TaskStatus.RUNNING  # type: ignore[union-attr]


async def test_heartbeat_reports_cancel_requests(store: Store) -> None:
    await store.insert([make(id="a1"), make(id="a2")])
    await claim_all(store, "a")
    assert await store.cancel("a2", at(1)) is TaskStatus.RUNNING
    hb = await store.heartbeat("a", at(60))
    assert hb.held == {"a1", "a2"}
    assert hb.cancel_requested == {"a2"}


async def test_heartbeat_of_an_owner_without_tasks_holds_nothing(store: Store) -> None:
    await store.insert([make()])
    await claim_all(store, "a")
    hb = await store.heartbeat("nobody", at(60))
    assert hb.held == set()
    assert hb.cancel_requested == set()


async def test_recover_requeues_or_interrupts_by_flag(store: Store) -> None:
    await store.insert([make(id="requeue", requeue_on_interrupt=True), make(id="dead")])
    await store.claim("gone", 10, T0, at(30))
    res = await store.recover(at(31))
    assert res.requeued == ["requeue"]
    assert res.interrupted == ["dead"]
    back = store.get("requeue")
    assert back is not None
    assert back.status is TaskStatus.PENDING
    assert back.run_after == at(31)
    assert back.owner is None
    assert back.lease_expires_at is None
    dead = store.get("dead")
    assert dead is not None
    assert dead.status is TaskStatus.INTERRUPTED
    assert dead.status.dead
    assert dead.error_type == "Interrupted"
    assert dead.error
    assert dead.ended_at == at(31)
    assert dead.owner is None
    assert [r.id for r in await claim_all(store, now=at(31))] == ["requeue"]


async def test_recover_ends_a_task_whose_cancel_was_requested_cancelled(store: Store) -> None:
    # The cancel of a task whose instance died before its next heartbeat is not lost: the
    # task is not requeued (it would run again to its end) nor left a dead letter.
    await store.insert(
        [
            make(id="requeue", requeue_on_interrupt=True),
            make(id="plain"),
            make(id="untouched", requeue_on_interrupt=True),
        ]
    )
    await store.claim("gone", 10, T0, at(30))
    assert await store.cancel("requeue", at(5)) is TaskStatus.RUNNING
    assert await store.cancel("plain", at(5)) is TaskStatus.RUNNING
    res = await store.recover(at(31))
    assert sorted(res.cancelled) == ["plain", "requeue"]
    assert res.requeued == ["untouched"]
    assert res.interrupted == []
    for task_id in ("requeue", "plain"):
        rec = store.get(task_id)
        assert rec is not None
        assert (rec.status, rec.error_type, rec.ended_at) == (
            TaskStatus.CANCELLED,
            "Cancelled",
            at(31),
        )
        assert (rec.owner, rec.lease_expires_at, rec.cancel_requested) == (None, None, False)
    assert [r.id for r in await claim_all(store, now=at(31))] == ["untouched"]


async def test_recover_never_touches_live_leases(store: Store) -> None:
    await store.insert([make(id="live"), make(id="edge", requeue_on_interrupt=True)])
    await store.claim("alive", 1, T0, at(100))
    await store.claim("alive", 1, T0, at(30))
    res = await store.recover(at(30))  # a lease that ends exactly now is still live
    assert res.requeued == []
    assert res.interrupted == []
    for task_id in ("live", "edge"):
        rec = store.get(task_id)
        assert rec is not None
        assert rec.status is TaskStatus.RUNNING
        assert rec.owner == "alive"


# -- cancel, interrupt_pending, purge --------------------------------------------------


async def test_cancel_a_pending_task(store: Store) -> None:
    await store.insert([make(id="t")])
    assert await store.cancel("t", at(5)) is TaskStatus.CANCELLED
    rec = store.get("t")
    assert rec is not None
    assert rec.status is TaskStatus.CANCELLED
    assert rec.ended_at == at(5)
    assert await claim_all(store, now=at(6)) == []


async def test_cancel_a_running_task_requests_it(store: Store) -> None:
    await store.insert([make(id="t")])
    await claim_all(store)
    assert await store.cancel("t", at(5)) is TaskStatus.RUNNING
    rec = store.get("t")
    assert rec is not None
    assert rec.cancel_requested
    assert rec.status is TaskStatus.RUNNING


async def test_cancel_a_finished_or_unknown_task_changes_nothing(store: Store) -> None:
    await store.insert([make(id="t", status=TaskStatus.SUCCESS, ended_at=at(1))])
    assert await store.cancel("t", at(5)) is TaskStatus.SUCCESS
    rec = store.get("t")
    assert rec is not None
    assert rec.ended_at == at(1)
    assert not rec.cancel_requested
    assert await store.cancel("unknown", at(5)) is None


async def test_interrupt_pending_marks_only_older_pending_records(store: Store) -> None:
    await store.insert([make(id="running", created_at=at(0))])
    await claim_all(store)
    await store.insert([make(id="old", created_at=at(1)), make(id="new", created_at=at(10))])
    assert await store.interrupt_pending(at(5), at(70)) == 1
    old = store.get("old")
    assert old is not None
    assert old.status is TaskStatus.INTERRUPTED
    assert old.ended_at == at(70)
    assert old.error_type == "Interrupted"
    assert old.error
    new = store.get("new")
    running = store.get("running")
    assert new is not None
    assert new.status is TaskStatus.PENDING
    assert running is not None
    assert running.status is TaskStatus.RUNNING


async def test_purge_deletes_terminal_records_that_ended_before(store: Store) -> None:
    await store.insert(
        [
            make(id="old-ok", status=TaskStatus.SUCCESS, ended_at=at(1), idempotency_key="k"),
            make(id="old-failed", status=TaskStatus.FAILED, ended_at=at(2)),
            make(id="recent", status=TaskStatus.SUCCESS, ended_at=at(20)),
            make(id="pending", ended_at=at(1)),  # a retry waiting keeps its ended_at
        ]
    )
    assert await store.purge(at(10)) == 2
    assert store.get("old-ok") is None
    assert store.get("old-failed") is None
    assert store.get("recent") is not None
    assert store.get("pending") is not None
    assert await store.count() == 2
    assert await store.insert([make(idempotency_key="k")]) == [True]


async def test_purge_takes_given_statuses_oldest_end_first_up_to_a_limit(store: Store) -> None:
    await store.insert(
        [
            make(id="ok-3", status=TaskStatus.SUCCESS, ended_at=at(3)),
            make(id="ok-1", status=TaskStatus.SUCCESS, ended_at=at(1)),
            make(id="cancelled-2", status=TaskStatus.CANCELLED, ended_at=at(2)),
            make(id="failed-0", status=TaskStatus.FAILED, ended_at=at(0)),
            make(id="interrupted-0", status=TaskStatus.INTERRUPTED, ended_at=at(0)),
            make(id="ok-late", status=TaskStatus.SUCCESS, ended_at=at(30)),
        ]
    )
    kept = {TaskStatus.SUCCESS, TaskStatus.CANCELLED}
    assert await store.purge(at(10), statuses=kept, limit=2) == 2
    assert store.get("ok-1") is None
    assert store.get("cancelled-2") is None
    assert store.get("ok-3") is not None  # the third oldest: past the limit
    assert await store.purge(at(10), statuses=kept, limit=2) == 1
    assert store.get("ok-3") is None
    assert await store.purge(at(10), statuses=kept) == 0
    # dead letters were left alone; they go when asked for
    assert {r.id for r in (await store.list(TaskQuery(limit=10))).items} == {
        "failed-0",
        "interrupted-0",
        "ok-late",
    }
    assert await store.purge(at(10), statuses=[TaskStatus.FAILED]) == 1
    assert store.get("interrupted-0") is not None


async def test_purge_keeps_a_replay_while_the_task_it_replays_is_stored(store: Store) -> None:
    # The replay's record is how a dead task is known to have been replayed (replay-once):
    # deleting it while the dead task stays would let the dead task run again.
    await store.insert(
        [
            make(id="dead", status=TaskStatus.FAILED, ended_at=at(1)),
            make(id="replay", status=TaskStatus.SUCCESS, ended_at=at(2), replay_of="dead"),
            make(id="orphan", status=TaskStatus.SUCCESS, ended_at=at(2), replay_of="gone"),
        ]
    )
    kept = [TaskStatus.SUCCESS, TaskStatus.CANCELLED]
    assert await store.purge(at(10), statuses=kept, limit=10) == 1  # the orphan only
    assert store.get("replay") is not None
    assert await store.purge(at(10), statuses=[TaskStatus.FAILED]) == 1
    assert await store.purge(at(10), statuses=kept) == 1  # now the replay goes too
    assert await store.count() == 0


async def test_purge_takes_equal_end_times_in_seq_order(store: Store) -> None:
    await store.insert(
        [
            make(id=f"t{i}", name=f"n{9 - i}", status=TaskStatus.SUCCESS, ended_at=at(1))
            for i in range(6)
        ]
    )
    assert await store.purge(at(10), limit=4) == 4
    left = sorted(r.id for r in (await store.list(TaskQuery(limit=10))).items)
    assert left == ["t4", "t5"]


async def test_an_id_back_after_a_purge_is_a_new_task_to_queues_and_fencing(
    store: Store,
) -> None:
    # Ids come back after a purge (one derived from an idempotency key or a replay).
    # Nothing left of the first task may act on the second: not its place in the queue
    # (a delayed task that became due), not an outcome from its attempt.
    await store.insert([make(id="A", priority=10, run_after=at(2), idempotency_key="k")])
    await store.insert([make(id="B", priority=10)])
    await store.insert([make(id="C", priority=20)])
    [c] = await store.claim("w", 1, at(3), at(100))
    assert c.id == "C"  # (A is due now, after B)
    assert await store.cancel("A", at(3)) is TaskStatus.CANCELLED
    assert await store.purge(at(4), statuses=[TaskStatus.CANCELLED]) == 1
    assert await store.insert([make(id="A", priority=0, idempotency_key="k")]) == [True]
    assert [r.id for r in await store.claim("w", 1, at(5), at(100))] == ["B"]
    # fencing: the first "A", claimed and ended, then purged; the second claimed
    [a2] = await store.claim("w", 1, at(5), at(100))
    assert a2.id == "A"
    stale = Outcome("A", a2.token, TaskStatus.SUCCESS, ended_at=at(6), seq=a2.seq + 1000)
    assert await store.complete([stale]) == [False]
    rec = store.get("A")
    assert rec is not None
    assert rec.status is TaskStatus.RUNNING


async def test_a_purged_schedule_fire_can_be_inserted_again(store: Store) -> None:
    fire = {"schedule_id": "s", "fire_at": at(1)}
    await store.insert([make(id="f1", status=TaskStatus.SUCCESS, ended_at=at(1), **fire)])
    assert await store.insert([make(id="f2", **fire)]) == [False]  # the fire is taken
    assert await store.purge(at(10)) == 1
    assert await store.insert([make(id="f3", **fire)]) == [True]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"statuses": [TaskStatus.PENDING]}, "not pending"),
        ({"statuses": [TaskStatus.RUNNING, TaskStatus.SUCCESS]}, "not running"),
        ({"limit": 0}, "limit"),
        ({"limit": True}, "limit"),
    ],
)
async def test_purge_refuses_unfinished_statuses_and_bad_limits(
    store: Store, options: dict[str, Any], message: str
) -> None:
    await store.insert([make(id="p"), make(id="done", status=TaskStatus.SUCCESS, ended_at=at(0))])
    with pytest.raises(ValueError, match=message):
        await store.purge(at(10), **options)
    assert await store.count() == 2  # nothing deleted


# -- listing and counting --------------------------------------------------------------


async def test_list_pages_newest_first_without_gaps_or_duplicates(store: Store) -> None:
    recs = [make(name=f"n{i}") for i in range(25)]
    for i in range(0, 25, 4):
        await store.insert(recs[i : i + 4])
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await store.list(TaskQuery(limit=10, cursor=cursor))
        seen.extend(r.name for r in page.items)
        pages += 1
        if page.next_cursor is None:
            break
        assert page.next_cursor == page.items[-1].seq
        cursor = page.next_cursor
    assert seen == [f"n{i}" for i in reversed(range(25))]
    assert pages == 3


def _filter_records() -> list[TaskRecord]:
    out: list[TaskRecord] = []
    for i in range(30):
        out.append(
            make(
                name=["mail.Send", "billing.charge", "report"][i % 3],
                status=list(TaskStatus)[i % 6],
                tags=[["red"], ["reddish", "blue"], []][i % 3 if i % 2 else 0],
                created_at=at(i),
                error=["Timeout talking to SMTP", "ÉCHEC du paiement", None][i % 3],
                schedule_id="nightly" if i % 5 == 0 else None,
                fire_at=at(i) if i % 5 == 0 else None,
                ended_at=at(i) if list(TaskStatus)[i % 6].terminal else None,
                replay_of="original" if i % 7 == 3 else None,
            )
        )
    return out


FILTERS = {
    "statuses": TaskQuery(statuses=frozenset({TaskStatus.FAILED, TaskStatus.INTERRUPTED})),
    "no-status": TaskQuery(statuses=frozenset()),
    "name": TaskQuery(name="report"),
    "tag-exact": TaskQuery(tag="red"),
    "tag-none": TaskQuery(tag="re"),
    "schedule": TaskQuery(schedule_id="nightly"),
    "replay-of": TaskQuery(replay_of="original"),
    "created-range": TaskQuery(created_after=at(5), created_before=at(12)),
    "search-name": TaskQuery(search="MAIL.send"),
    "search-error": TaskQuery(search="smtp"),
    "search-unicode": TaskQuery(search="échec"),
    "combined": TaskQuery(
        statuses=frozenset({TaskStatus.PENDING, TaskStatus.SUCCESS}),
        name="mail.Send",
        search="timeout",
    ),
}


@pytest.mark.parametrize("query", list(FILTERS.values()), ids=list(FILTERS))
async def test_list_and_count_filter_like_the_reference(store: Store, query: TaskQuery) -> None:
    recs = _filter_records()
    await store.insert(recs)
    stored = [r for r in (store.get(x.id) for x in recs) if r is not None]
    expected = [r.id for r in sorted(stored, key=lambda r: -r.seq) if query.matches(r)]
    got: list[str] = []
    cursor = None
    while True:
        page = await store.list(dataclasses.replace(query, limit=4, cursor=cursor))
        got.extend(r.id for r in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert got == expected
    assert await store.count(query) == len(expected)


async def test_count_ignores_limit_and_cursor(store: Store) -> None:
    await store.insert([make() for _ in range(5)])
    page = await store.list(TaskQuery(limit=2))
    assert await store.count(TaskQuery(limit=2, cursor=page.next_cursor)) == 5
    assert await store.count() == 5


async def test_counts_include_every_status(store: Store) -> None:
    assert await store.counts() == dict.fromkeys(TaskStatus, 0)
    await store.insert([make(), make(), make(status=TaskStatus.FAILED, ended_at=T0)])
    await store.claim("w", 1, T0, at(30))
    expected = dict.fromkeys(TaskStatus, 0) | {
        TaskStatus.PENDING: 1,
        TaskStatus.RUNNING: 1,
        TaskStatus.FAILED: 1,
    }
    assert await store.counts() == expected


async def test_next_run_after_is_the_earliest_pending(store: Store) -> None:
    assert await store.next_run_after() is None
    await store.insert(
        [
            make(run_after=at(10)),
            make(run_after=at(5)),
            make(run_after=at(1), status=TaskStatus.CANCELLED, ended_at=T0),
            make(run_after=at(20)),
        ]
    )
    assert await store.next_run_after() == at(5)


async def test_next_run_after_is_none_once_all_are_claimed(store: Store) -> None:
    await store.insert([make(run_after=at(1))])
    await claim_all(store, now=at(1))
    assert await store.next_run_after() is None


async def test_metrics_count_ended_tasks_per_bucket(store: Store) -> None:
    s, f = TaskStatus.SUCCESS, TaskStatus.FAILED
    await store.insert(
        [
            make(name="a", status=s, started_at=at(0), ended_at=at(1)),
            make(name="a", status=s, started_at=at(10), ended_at=at(13)),
            make(name="b", status=f, started_at=at(20), ended_at=at(25)),
            make(name="b", status=TaskStatus.INTERRUPTED, ended_at=at(35)),
            make(name="c", status=TaskStatus.CANCELLED, ended_at=at(45)),
            make(name="d", status=s, started_at=at(60), ended_at=at(61)),  # after the window
            make(name="e", ended_at=at(5)),  # a pending retry has not ended
        ]
    )
    m = await store.metrics(at(0), at(60), 6)
    assert [(b.start, b.success, b.failed, b.other) for b in m.series] == [
        (at(0), 1, 0, 0),
        (at(10), 1, 0, 0),
        (at(20), 0, 1, 0),
        (at(30), 0, 1, 0),
        (at(40), 0, 0, 1),
        (at(50), 0, 0, 0),
    ]
    assert [(d.name, d.count, d.p50, d.p99) for d in m.durations] == [
        ("a", 2, 1.0, 3.0),
        ("b", 1, 5.0, 5.0),
    ]
    assert m.counts == await store.counts()
    assert m == await Store.metrics(store, at(0), at(60), 6)  # the generic scan agrees


# -- schedules -------------------------------------------------------------------------


async def test_schedule_state_round_trips(store: Store) -> None:
    assert await store.schedule_states() == {}
    await store.save_schedule_state(ScheduleState("a", at(10), paused=False))
    await store.save_schedule_state(ScheduleState("b", None, paused=True))
    states = await store.schedule_states()
    assert states == {"a": ScheduleState("a", at(10), False), "b": ScheduleState("b", None, True)}


async def test_schedule_last_fire_never_moves_backwards(store: Store) -> None:
    await store.save_schedule_state(ScheduleState("a", at(10)))
    await store.save_schedule_state(ScheduleState("a", at(5), paused=True))
    await store.save_schedule_state(ScheduleState("a", None))
    assert (await store.schedule_states())["a"] == ScheduleState("a", at(10), False)
    await store.save_schedule_state(ScheduleState("a", at(11)))
    assert (await store.schedule_states())["a"].last_fire_at == at(11)


# -- payloads --------------------------------------------------------------------------


async def test_json_payloads_keep_their_exact_values(store: Store) -> None:
    args = [
        2**63 + 1,
        -(2**80),
        0.1,
        1e-300,
        1.7976931348623157e308,
        "emoji 🚀 and 中文 and \u0000 nul",
        {"nested": [[[{"x": None}]]], "": "empty key"},
        True,
        False,
        None,
    ]
    kwargs = {"ключ": "значение", "list": [1, 2.5, "three"]}
    rec = make(args=args, kwargs=kwargs)
    await store.insert([rec])
    got = store.get(rec.id)
    assert got is not None
    assert got.args == args
    assert got.kwargs == kwargs
    assert [type(x) for x in got.args] == [type(x) for x in args]

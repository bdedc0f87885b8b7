"""Run synchronous task functions in daemon threads.

anyio's worker threads are not daemon threads on asyncio. A sync task abandoned at
shutdown (blocked in ``time.sleep(30)``, say) would then keep the interpreter from
exiting until it returns, long after the manager recorded it ``interrupted``. Sync tasks
therefore run in a small pool of daemon threads of our own: cancelling the waiter
abandons the call, exactly like ``anyio.to_thread.run_sync(..., abandon_on_cancel=True)``,
and an abandoned call never delays the exit of the process. Idle threads are reused (a new
thread per call costs about 8x in throughput) and end after ``IDLE_TIMEOUT`` seconds.

The task's context variables are copied into the thread, so ``get_task_context()`` and
``task_log()`` work there. To call back into the event loop from a sync task, pass the
loop's token explicitly (``anyio.from_thread.run(fn, token=...)``).
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel
from anyio.lowlevel import EventLoopToken

try:
    import sniffio
except ImportError:  # optional: anyio no longer requires it
    sniffio = None  # type: ignore[assignment]

__all__ = ["SerialThread", "call_soon_in_loop", "run_in_daemon_thread"]

IDLE_TIMEOUT = 10.0

_Job = Callable[[], Callable[[], None]]  # runs the call, returns how to report it
_lock = threading.Lock()
_idle: list[queue.SimpleQueue[_Job]] = []  # the job queues of idle threads, LIFO


def _serve(jobs: queue.SimpleQueue[_Job]) -> None:
    while True:
        try:
            job: _Job | None = jobs.get(timeout=IDLE_TIMEOUT)
        except queue.Empty:
            with _lock:
                if jobs in _idle:
                    _idle.remove(jobs)
                    return
            continue  # a submitter took this thread just now: its job is on the way
        assert job is not None
        report = job()
        job = None  # hold no result while idle
        with _lock:
            _idle.append(jobs)  # idle before the caller hears of it: the next call reuses us
        report()
        del report


def _submit(job: _Job) -> None:
    with _lock:
        jobs = _idle.pop() if _idle else None
    if jobs is None:
        jobs = queue.SimpleQueue()
        thread = threading.Thread(
            target=_serve, args=(jobs,), name="anytask sync task", daemon=True
        )
        thread.start()
    jobs.put(job)


def call_soon_in_loop(token: EventLoopToken, fn: Callable[[], object]) -> None:
    """Schedule ``fn()`` in the event loop of ``token`` from any thread, without waiting
    (unlike ``anyio.from_thread.run_sync``). Does nothing once that loop has finished."""
    try:
        token.backend_class.run_sync_soon(fn, (), token.native_token)
    except Exception:  # the loop has finished: nobody is waiting any more
        pass


async def _call_through(
    submit: Callable[[_Job], None],
    fn: Callable[[], Any],
    token: EventLoopToken,
    *,
    shield: bool,
    on_abandoned: Callable[[], Callable[[], None]] | None = None,
) -> Any:
    """Hand ``fn`` to a thread through ``submit`` and return its result (or raise its
    error). ``shield``: the caller waits for the end even when cancelled (the call is
    never abandoned); otherwise cancelling the caller abandons the call. When it does
    while the thread still runs, ``on_abandoned()`` is called at once, and the callable it
    returns when the thread's call ends (both in the event loop thread)."""
    done = anyio.Event()
    box: list[tuple[bool, Any]] = []
    late: list[Callable[[], None]] = []  # what to call when an abandoned call ends

    def ended() -> None:
        done.set()
        if late:
            late.pop()()

    def report() -> None:
        call_soon_in_loop(token, ended)

    def job() -> Callable[[], None]:
        try:
            box.append((True, fn()))
        except BaseException as exc:  # handed to the awaiting task
            box.append((False, exc))
        return report

    submit(job)
    if shield:
        with anyio.CancelScope(shield=True):
            await done.wait()
    else:
        try:
            await done.wait()
        except BaseException:
            # abandoned; ``box`` fills in the thread before ``ended`` is scheduled here,
            # so an empty box means the call has not returned yet
            if not box and on_abandoned is not None:
                late.append(on_abandoned())
            raise
    ok, value = box.pop()
    if ok:
        return value
    try:
        raise value
    finally:
        del value  # no reference cycle through the traceback


async def run_in_daemon_thread(
    fn: Callable[[], Any],
    *,
    limiter: anyio.CapacityLimiter,
    token: EventLoopToken,
    on_abandoned: Callable[[], Callable[[], None]] | None = None,
) -> Any:
    """Call ``fn()`` in a daemon thread and return its result (or raise its error).

    Cancelling the caller abandons the call; its eventual result is discarded. If the
    thread still runs then, ``on_abandoned()`` is called at once and the callable it
    returns once the call ends (both in the event loop thread).
    """
    async with limiter:
        context = contextvars.copy_context()
        if sniffio is not None:  # like anyio's threads: no async library runs in there
            context.run(sniffio.current_async_library_cvar.set, None)
        return await _call_through(
            _submit, lambda: context.run(fn), token, shield=False, on_abandoned=on_abandoned
        )


class SerialThread:
    """One daemon thread of its own that runs calls one after the other, in order (the
    writer of a SQLite store). Started by the first call, ended by :meth:`stop`.

    A round trip through it costs about half of ``anyio.to_thread.run_sync``'s (measured
    on asyncio). Like ``run_sync`` without ``abandon_on_cancel``, a call always runs to its
    end and hands its result back; a cancellation of the caller takes effect after."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[_Job | None] | None = None

    def _put(self, job: _Job) -> None:
        jobs = self._jobs
        if jobs is None:
            jobs = self._jobs = queue.SimpleQueue()
            self.thread = threading.Thread(
                target=self._serve, args=(jobs,), name=self.name, daemon=True
            )
            self.thread.start()
        jobs.put(job)

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[_Job | None]) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            report = job()
            job = None  # hold nothing while idle
            report()
            del report

    async def call(self, fn: Callable[[], Any]) -> Any:
        return await _call_through(self._put, fn, anyio.lowlevel.current_token(), shield=True)

    def stop(self) -> None:
        """The thread ends after the calls already handed to it; a later call starts a
        new one."""
        jobs, self._jobs = self._jobs, None
        if jobs is not None:
            jobs.put(None)

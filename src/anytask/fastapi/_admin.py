"""TaskAdmin: mounts the JSON API, the live event stream and the dashboard, and wires the
task manager into the app (lifespan, managed BackgroundTasks, durable responses)."""

from __future__ import annotations

import inspect
import json
import logging
import math
import re
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import anyio
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from starlette.applications import Starlette
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from .._errors import (
    ConfigurationError,
    ManagerStateError,
    StoreError,
    TaskNotFound,
    TaskStateError,
)
from .._manager import RunState, TaskManager, _made_after
from .._models import DEAD, TaskQuery, TaskStatus
from ._auth import Authenticator, AuthSpec, Throttle, same_origin
from ._models import (
    CancelResult,
    HealthOut,
    MetricsOut,
    ReplayItem,
    ReplayOneResult,
    ReplayRequest,
    ReplayResult,
    ScheduleList,
    SessionOut,
    TaskDetail,
    TaskPage,
    TaskSummary,
    event_json,
    schedule_json,
)
from ._wiring import TaskMiddleware, install, lifespan, split_root

__all__ = ["TaskAdmin"]

log = logging.getLogger("anytask")

STATIC_DIR = Path(__file__).parent / "static"
_WINDOWS = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
_MAX_LIST = 500
#: What TaskAdmin's prefix may be: segments of unreserved URL characters, none of them
#: "." or "..".
_PREFIX = re.compile(r"(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._~-]+)+")
#: A trusted origin: scheme://host[:port], nothing after it.
_ORIGIN = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#\s]+")
_SEND_GRACE = 2.0  # seconds a send of the event stream may take past its max_age
MIN_SESSION_TTL = 60.0  # seconds: shorter, a login would expire before the dashboard loads


def _parse_time(value: str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace(" ", "+"))
    except ValueError:
        raise HTTPException(422, f"{name} must be an ISO-8601 time, got {value!r}") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _statuses(value: str | None) -> frozenset[TaskStatus] | None:
    """``status=a,b``. Empty (``status=``, as an empty form field sends) means no filter;
    a value that names no status (``status=,``) is an error rather than an empty list."""
    if not value:
        return None
    allowed = ", ".join(s.value for s in TaskStatus)
    names = [s.strip() for s in value.split(",") if s.strip()]
    if not names:
        raise HTTPException(422, f"status names no status, got {value!r}; use some of: {allowed}")
    try:
        return frozenset(TaskStatus(name) for name in names)
    except ValueError:
        raise HTTPException(422, f"status must be a list of: {allowed}") from None


def _session_seconds(value: object) -> int:
    """``session_ttl`` as whole seconds: a number of seconds or a timedelta, finite and at
    least :data:`MIN_SESSION_TTL` (the cookie's ``Max-Age`` and the signature's age
    limit are whole seconds)."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < MIN_SESSION_TTL
    ):
        raise ConfigurationError(
            f"session_ttl must be a number of seconds or a timedelta, finite and at least "
            f"{MIN_SESSION_TTL:g} s, got {value!r}"
        )
    return int(seconds)


def _printable(value: Any) -> Any:
    """``value`` with every str made encodable: a lone surrogate (a JSON ``"\\ud800"``
    escape decodes to one) becomes its ``\\ud800`` escape."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


class _Route(APIRoute):
    """The admin's routes: a validation error echoes the input it refused, and the 422
    response (JSON without ASCII escapes) could not encode a lone surrogate in it: the
    client got a 500. The errors are made printable first (the app's own handler for
    ``RequestValidationError``, if any, still answers).

    A manager that is not running (before the lifespan started it, after it stopped, or
    ``manage_lifespan=False`` with nobody running it) and a store that cannot answer (not
    open, locked past its busy timeout...) are a ``503`` that says so, not a 500."""

    def get_route_handler(self) -> Any:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                raise RequestValidationError(_printable(list(exc.errors()))) from None
            except ManagerStateError as exc:
                raise HTTPException(503, str(exc)) from None
            except StoreError as exc:
                log.warning("admin API %s: the store failed: %s", request.url.path, exc)
                raise HTTPException(503, f"the task store is unavailable: {exc}") from None

        return route


class _EventStream(Response):
    """``text/event-stream`` of committed task events, a ``: ping`` comment every
    ``ping`` seconds; ends when the client disconnects, the manager stops, or after
    ``max_age`` seconds. The last keeps a server's graceful shutdown short (ASGI servers
    wait for open responses before the lifespan shutdown, so an endless stream would hold
    it for as long as a dashboard stays open); the browser reconnects at once (``retry``)
    and the dashboard reloads its view."""

    media_type = "text/event-stream"

    def __init__(self, manager: TaskManager, ping: float, max_age: float = 60.0) -> None:
        super().__init__(
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
            media_type=self.media_type,
        )
        # an endless body: no Content-Length (Response set "0", which real servers enforce)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        self.manager = manager
        self.ping = ping
        self.max_age = max_age

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def pump(cancel: anyio.CancelScope) -> None:
            nonlocal started
            async with self.manager.events.subscribe() as stream:
                deadline = anyio.current_time() + self.max_age
                # A client that stopped reading (or vanished without closing) holds a send
                # until the server's write buffer drains, never noticing the deadline: end
                # the stream at the deadline all the same, a moment later.
                cancel.deadline = deadline + _SEND_GRACE
                # headers only once subscribed: a client that saw the stream open must not
                # miss an event published in between
                start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                await send(start)
                started = True
                hello = b": ok\nretry: 1000\n\n"
                await send({"type": "http.response.body", "body": hello, "more_body": True})
                while self.manager.state is RunState.RUNNING:
                    left = deadline - anyio.current_time()
                    if left <= 0:
                        break
                    with anyio.move_on_after(min(self.ping, left)) as timer:
                        event = await stream.receive()
                    if timer.cancelled_caught:
                        if anyio.current_time() >= deadline:
                            break
                        chunk = b": ping\n\n"
                    else:
                        data = json.dumps(event_json(event), separators=(",", ":"))
                        chunk = f"event: task\ndata: {data}\n\n".encode()
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            cancel.cancel()

        async def disconnect(cancel: anyio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            cancel.cancel()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(pump, tg.cancel_scope)
                tg.start_soon(disconnect, tg.cancel_scope)
        except OSError:
            return  # the client went away mid-write
        if not started:
            return
        with anyio.move_on_after(_SEND_GRACE):  # (the client may not be reading)
            try:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            except OSError:
                pass


class TaskAdmin:
    """Mount anytask's JSON API and dashboard under ``prefix`` and wire ``manager`` into
    ``app`` (FastAPI or plain Starlette).

    * the manager starts after the startup of any lifespan the app already has, unless
      that lifespan runs it itself, and stops after its shutdown (see
      :func:`anytask.fastapi.lifespan`; ``manage_lifespan=False`` to wire it yourself);
    * ``BackgroundTasks.add_task`` and ``Depends(manager.get_tasks)`` return task ids
      (``BackgroundTasks`` only for callables anytask can find again by name: a lambda or
      a closure runs after the response, as in stock Starlette);
    * no response leaves before the tasks its request queued are committed;
    * ``auth``: ``("user", "password")``, a list of such pairs, or a callable
      ``async (request) -> str | None`` (the user name, or None when not signed in).
    """

    def __init__(
        self,
        app: Starlette,
        manager: TaskManager,
        auth: AuthSpec = None,
        prefix: str = "/tasks",
        *,
        secret: str | bytes | None = None,
        session_ttl: float | timedelta = 12 * 3600,
        login_attempts: int = 5,
        login_window: float = 60.0,
        public_health: bool = True,
        trusted_origins: tuple[str, ...] = (),
        manage_lifespan: bool = True,
        sse_ping: float = 15.0,
        sse_max_age: float = 60.0,
        static_dir: str | Path | None = None,
    ) -> None:
        if not isinstance(app, Starlette):
            raise ConfigurationError(f"app must be a FastAPI or Starlette app, got {app!r}")
        if not isinstance(manager, TaskManager):
            raise ConfigurationError(f"manager must be a TaskManager, got {manager!r}")
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            # (the session cookie's Path is the prefix as written: a non-ASCII character,
            # a ";" or a space there made browsers drop or never send the cookie)
            raise ConfigurationError(
                f"prefix must look like '/tasks' (ASCII letters, digits and -._~ in each "
                f"segment), got {prefix!r}"
            )
        if not isinstance(trusted_origins, str):
            try:  # (an iterator is read once: checked and kept from the same items)
                trusted_origins = tuple(trusted_origins)
            except TypeError:
                pass
        if (
            isinstance(trusted_origins, str)
            or not isinstance(trusted_origins, tuple)
            or not all(
                isinstance(o, str) and _ORIGIN.fullmatch(o.rstrip("/")) for o in trusted_origins
            )
        ):
            raise ConfigurationError(
                "trusted_origins must be a sequence of origins such as "
                f"('https://admin.example.com',), got {trusted_origins!r}"
            )
        if not (isinstance(sse_ping, int | float) and math.isfinite(sse_ping) and sse_ping > 0):
            raise ConfigurationError(f"sse_ping must be a positive number, got {sse_ping!r}")
        if not (
            isinstance(sse_max_age, int | float) and math.isfinite(sse_max_age) and sse_max_age > 0
        ):
            raise ConfigurationError(f"sse_max_age must be a positive number, got {sse_max_age!r}")
        ttl = _session_seconds(session_ttl)
        self.app = app
        self.manager = manager
        self.prefix = prefix
        # plain Starlette: the API is a sub-app mounted at the prefix, so inside it the
        # prefix is already part of the request's root_path (see _base)
        self._mounted = not isinstance(app, FastAPI)
        self.public_health = public_health
        self.trusted_origins = frozenset(o.rstrip("/") for o in trusted_origins)
        self.sse_ping = float(sse_ping)
        self.sse_max_age = float(sse_max_age)
        self.static_dir = Path(static_dir) if static_dir is not None else STATIC_DIR
        self.auth = Authenticator(
            auth,
            secret=secret,
            session_ttl=ttl,
            throttle=Throttle(login_attempts, login_window),
        )
        install()
        router = self._router()
        if isinstance(app, FastAPI):
            app.include_router(router, prefix=prefix)
            app.add_route(prefix, self._to_dashboard, include_in_schema=False)
            app.mount(prefix + "/static", StaticFiles(directory=self.static_dir), "anytask_static")
        else:
            sub = FastAPI(docs_url=None, redoc_url=None, title="anytask")
            sub.include_router(router)
            sub.add_route("/", self._to_dashboard, include_in_schema=False)
            sub.mount("/static", StaticFiles(directory=self.static_dir), "anytask_static")
            app.mount(prefix, sub)
        app.add_middleware(TaskMiddleware, manager=manager, prefix=prefix)
        if manage_lifespan:
            current = app.router.lifespan_context
            if getattr(current, "__anytask_manager__", None) is not manager:
                app.router.lifespan_context = lifespan(manager, current)

    def _base(self, request: Request) -> str:
        """The prefix as the browser sees it: below the app's ``root_path`` when the app is
        mounted inside another one or served with ``--root-path`` behind a proxy. Every
        URL sent to the browser (redirects, the cookie's Path) starts with it."""
        root = split_root(request.scope)[0]
        return root if self._mounted else root + self.prefix

    async def _to_dashboard(self, request: Request) -> Response:
        return RedirectResponse(f"{self._base(request)}/dashboard", status_code=303)

    # ------------------------------------------------------------------ guards
    async def require_user(self, request: Request) -> str:
        user = await self.auth.user(request)
        if user is None:
            raise HTTPException(401, "authentication required")
        return user

    async def require_change(self, request: Request) -> str:
        """For state-changing requests: signed in, same origin, valid CSRF token."""
        user = await self.require_user(request)
        self._check_csrf(request, request.headers.get("x-csrf-token"))
        return user

    def _check_csrf(self, request: Request, token: str | None) -> None:
        if not same_origin(request, self.trusted_origins):
            raise HTTPException(403, "cross-origin request refused")
        if not self.auth.csrf_ok(self.auth.session(request), token):
            raise HTTPException(403, "missing or invalid CSRF token")

    def _html(self, name: str, status: int = 200) -> Response:
        path = self.static_dir / name
        if not path.is_file():
            raise HTTPException(404, f"{name} is missing from the static directory")
        return FileResponse(path, status_code=status, media_type="text/html; charset=utf-8")

    def _login_redirect(self, request: Request) -> RedirectResponse:
        root = split_root(request.scope)[0]
        path = request.url.path  # with the root in it, unless the server left it out
        if root and not (path == root or path.startswith(root + "/")):
            path = root + path
        target = path + (f"?{request.url.query}" if request.url.query else "")
        base = self._base(request)
        return RedirectResponse(f"{base}/login?next={quote(target)}", status_code=303)

    def _safe_next(self, request: Request, value: str | None) -> str:
        base = self._base(request)
        default = f"{base}/dashboard"
        if not value:
            return default
        try:
            value.encode("utf-8")  # a lone surrogate (from a JSON body) cannot go in a URL
            parts = urlsplit(value)
        except ValueError:  # that (UnicodeEncodeError), or "//[" (an unclosed IPv6 bracket)
            return default
        if parts.scheme or parts.netloc or not value.startswith(base + "/"):
            return default
        if "\\" in value or value.startswith("//"):
            return default
        # a "." or ".." segment (also percent-encoded: browsers resolve "%2e%2e" too) would
        # take the browser out of the prefix: "/tasks/../other" is "/other"
        if any(unquote(seg) in (".", "..") for seg in parts.path.split("/")):
            return default
        return value

    # ------------------------------------------------------------------ routes
    def _router(self) -> APIRouter:
        tm = self.manager
        user_dep = Depends(self.require_user)
        change_dep = Depends(self.require_change)
        router = APIRouter(tags=["anytask"], route_class=_Route)
        api = APIRouter(tags=["anytask"], dependencies=[user_dep], route_class=_Route)
        change = APIRouter(tags=["anytask"], dependencies=[change_dep], route_class=_Route)

        async def page(query: TaskQuery) -> TaskPage:
            found = await tm.list(query)
            total = await tm.store.count(query)
            return TaskPage(
                items=[TaskSummary.of(r) for r in found.items],
                next_cursor=found.next_cursor,
                total=total,
            )

        async def detail(task_id: str) -> TaskDetail:
            rec = await tm.get(task_id)
            if rec is None:
                raise HTTPException(404, f"no task with id {task_id!r}")
            replays = await tm.list(TaskQuery(replay_of=rec.id, limit=100))
            # a replay stored before this task replays an earlier task with its id, deleted
            # since (ids derived from idempotency keys and replays come back after a
            # purge): not one of this task's, as replays_of (replayed_as) says too
            mine = [r.id for r in replays.items if _made_after(r, rec)]
            found = TaskDetail.of(rec, mine)
            if rec.status in DEAD:
                found.replayed_as = (await tm.replays_of([rec.id])).get(rec.id)
            return found

        @api.get("/api/tasks", response_model=TaskPage, summary="List tasks, newest first")
        async def list_tasks(
            status: str | None = None,
            name: str | None = None,
            tag: str | None = None,
            since: str | None = None,
            until: str | None = None,
            q: Annotated[str | None, Query(max_length=200)] = None,
            limit: Annotated[int, Query(ge=1, le=_MAX_LIST)] = 50,
            cursor: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
        ) -> TaskPage:
            return await page(
                TaskQuery(
                    statuses=_statuses(status),
                    name=name or None,
                    tag=tag or None,
                    created_after=_parse_time(since, "since"),
                    created_before=_parse_time(until, "until"),
                    search=q or None,
                    limit=limit,
                    cursor=cursor,
                )
            )

        @api.get("/api/tasks/{task_id}", response_model=TaskDetail, summary="One task")
        async def get_task(task_id: str) -> TaskDetail:
            return await detail(task_id)

        @api.get("/api/dead-letters", response_model=TaskPage, summary="Failed and interrupted")
        async def dead_letters(
            since: str | None = None,
            until: str | None = None,
            limit: Annotated[int, Query(ge=1, le=_MAX_LIST)] = 50,
            cursor: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
        ) -> TaskPage:
            found = await page(
                TaskQuery(
                    statuses=DEAD,
                    created_after=_parse_time(since, "since"),
                    created_before=_parse_time(until, "until"),
                    limit=limit,
                    cursor=cursor,
                )
            )
            replays = await tm.replays_of(item.task_id for item in found.items)
            for item in found.items:
                item.replayed_as = replays.get(item.task_id)
            return found

        @api.get("/api/metrics", response_model=MetricsOut, summary="Counts, throughput, p50/95/99")
        async def metrics(
            window: Annotated[float, Query(ge=1, le=90 * 86400)] = 3600,
            buckets: Annotated[int, Query(ge=1, le=500)] = 30,
        ) -> MetricsOut:
            now = tm.clock.now()
            m = await tm.metrics(since=now - timedelta(seconds=window), until=now, buckets=buckets)
            return MetricsOut.of(m, now)

        @api.get("/api/schedules", response_model=ScheduleList, summary="Schedules")
        async def schedules() -> ScheduleList:
            getter = getattr(tm, "schedules", None)
            if not callable(getter):
                return ScheduleList(items=[])
            result = getter()
            if inspect.isawaitable(result):
                result = await result
            if isinstance(result, dict):
                result = list(result.values())
            return ScheduleList(items=[schedule_json(s) for s in result or []])

        @api.get("/api/events", summary="Server-sent events of task changes")
        async def events() -> Response:
            if tm.state is not RunState.RUNNING:
                raise HTTPException(503, "the task manager is not running")
            return _EventStream(tm, self.sse_ping, self.sse_max_age)

        @change.post("/api/tasks/{task_id}/cancel", response_model=CancelResult, summary="Cancel")
        async def cancel(task_id: str) -> CancelResult:
            try:
                status = await tm.cancel(task_id)
            except TaskNotFound:
                raise HTTPException(404, f"no task with id {task_id!r}") from None
            return CancelResult(task_id=task_id, status=status.value)

        @change.post(
            "/api/tasks/{task_id}/replay",
            response_model=ReplayOneResult,
            summary="Replay a task",
            description="Enqueue a failed or interrupted task again. A task is replayed "
            "once: asking again answers the same new_task_id and writes nothing.",
        )
        async def replay(task_id: str) -> ReplayOneResult:
            try:
                new_id = await tm.replay(task_id)
            except TaskNotFound:
                raise HTTPException(404, f"no task with id {task_id!r}") from None
            except TaskStateError as exc:
                raise HTTPException(409, str(exc)) from None
            except ManagerStateError as exc:
                raise HTTPException(503, str(exc)) from None
            return ReplayOneResult(task_id=task_id, new_task_id=new_id)

        @change.post(
            "/api/replay",
            response_model=ReplayResult,
            summary="Replay dead tasks",
            description="Replay the failed and interrupted tasks selected by ids or by "
            "creation window, leaving out those replayed already. A dry run lists exactly "
            "what would be enqueued and writes nothing.",
        )
        async def replay_many(body: ReplayRequest) -> ReplayResult:
            chosen = sum(
                x is not None for x in (body.ids, body.window, body.since or body.until or None)
            )
            if chosen != 1:
                raise HTTPException(422, "pass exactly one of ids, window or since/until")
            since, until = _aware(body.since), _aware(body.until)
            if body.window is not None:
                since, until = tm.clock.now() - _WINDOWS[body.window], None
            try:
                pairs = await tm.replay_many(
                    ids=body.ids, since=since, until=until, dry_run=body.dry_run
                )
            except TaskNotFound as exc:
                raise HTTPException(404, str(exc)) from None
            except ManagerStateError as exc:
                raise HTTPException(503, str(exc)) from None
            items = [
                ReplayItem(
                    task_id=rec.id,
                    func_name=rec.name,
                    status=rec.status.value,
                    created_at=TaskSummary.of(rec).created_at,
                    error=rec.error,
                    new_task_id=new_id,
                )
                for rec, new_id in pairs
            ]
            return ReplayResult(dry_run=body.dry_run, count=len(items), items=items)

        @change.post("/api/schedules/{schedule_id:path}/{action}", summary="Pause/resume/trigger")
        async def schedule_action(schedule_id: str, action: str) -> dict[str, Any]:
            if action not in ("pause", "resume", "trigger"):
                raise HTTPException(404, f"unknown schedule action {action!r}")
            method = getattr(tm, f"{action}_schedule", None)
            if not callable(method):
                raise HTTPException(404, "this task manager has no schedules API")
            try:
                result = method(schedule_id)
                if inspect.isawaitable(result):
                    result = await result
            except LookupError:
                raise HTTPException(404, f"no schedule {schedule_id!r}") from None
            except ManagerStateError as exc:
                raise HTTPException(503, str(exc)) from None
            out: dict[str, Any] = {"schedule_id": schedule_id, "action": action}
            if isinstance(result, str):
                out["task_id"] = result
            return out

        # -- public: health, session, login -------------------------------------------
        @router.get("/api/health", response_model=HealthOut, summary="Liveness and counts")
        async def health(request: Request) -> HealthOut:
            if not self.public_health:
                await self.require_user(request)
            counts: dict[str, int] = {}
            ok = tm.state is RunState.RUNNING
            try:
                counts = {s.value: n for s, n in (await tm.counts()).items()}
            except Exception:
                ok = False
            return HealthOut(
                status="ok" if ok else "degraded",
                state=tm.state.value,
                instance_id=tm.instance_id,
                counts=counts,
            )

        @router.get("/api/session", response_model=SessionOut, summary="Who am I, CSRF token")
        async def session(request: Request) -> JSONResponse:
            user = await self.auth.user(request)
            sess = self.auth.session(request)
            response = JSONResponse({})
            if sess is None:
                sess = self.auth.set_session(response, request, None, self._base(request))
            body = SessionOut(
                user=user or None,
                csrf_token=self.auth.csrf_token(sess),
                auth=self.auth.enabled,
            )
            response.body = response.render(body.model_dump())
            response.headers["content-length"] = str(len(response.body))
            return response

        @router.get("/login", include_in_schema=False)
        async def login_page() -> Response:
            return self._html("login.html")

        @router.post("/login", include_in_schema=False)
        async def login(request: Request) -> Response:
            return await self._login(request)

        @router.post("/logout", include_in_schema=False)
        async def logout(request: Request) -> Response:
            form = await _form(request)
            self._check_csrf(request, request.headers.get("x-csrf-token") or form.get("csrf_token"))
            response = RedirectResponse(f"{self._base(request)}/login", status_code=303)
            self.auth.clear_session(response, request, self._base(request))
            return response

        @router.get("/dashboard", include_in_schema=False)
        async def dashboard(request: Request) -> Response:
            if await self.auth.user(request) is None:
                if self.auth.form_login:
                    return self._login_redirect(request)
                raise HTTPException(401, "authentication required")
            return self._html("dashboard.html")

        router.include_router(api)
        router.include_router(change)

        # last: the seed article's ``GET /tasks/{id}``
        @router.get(
            "/{task_id}",
            response_model=TaskDetail,
            summary="One task (short form)",
            dependencies=[user_dep],
        )
        async def task_short(task_id: str) -> TaskDetail:
            return await detail(task_id)

        return router

    async def _login(self, request: Request) -> Response:
        auth = self.auth
        if not auth.form_login:
            raise HTTPException(404, "login by password is not configured")
        form = await _form(request)
        self._check_csrf(request, request.headers.get("x-csrf-token") or form.get("csrf_token"))
        username = form.get("username") or ""
        password = form.get("password") or ""
        wants_html = "text/html" in request.headers.get("accept", "")
        ip_key = "ip:" + (request.client.host if request.client else "?")
        user_key = "user:" + username
        waits = [
            w
            for w in (auth.throttle.retry_after(ip_key), auth.throttle.retry_after(user_key))
            if w is not None
        ]
        if waits:
            retry = str(max(1, math.ceil(max(waits))))
            if wants_html:
                response = self._html("login.html", status=429)
                response.headers["retry-after"] = retry
                return response
            return JSONResponse(
                {"detail": "too many failed logins; try again later"},
                status_code=429,
                headers={"retry-after": retry},
            )
        if not auth.check_password(username, password):
            auth.throttle.failed(ip_key)
            auth.throttle.failed(user_key)
            if wants_html:
                return self._html("login.html", status=401)
            return JSONResponse({"detail": "invalid user name or password"}, status_code=401)
        auth.throttle.reset(user_key)
        target = self._safe_next(request, form.get("next") or request.query_params.get("next"))
        response = RedirectResponse(target, status_code=303)
        auth.set_session(response, request, username, self._base(request))
        return response


_MAX_FORM = 16_384  # bytes: login and logout forms are tiny


async def _form(request: Request) -> dict[str, str]:
    """Fields of a urlencoded or JSON body (no python-multipart needed)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > _MAX_FORM:
        raise HTTPException(413, "request body too large")
    chunks: list[bytes] = []
    size = 0
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:  # stop reading as soon as it is too large
            size += len(chunk)
            if size > _MAX_FORM:
                raise HTTPException(413, "request body too large")
            chunks.append(chunk)
    body = b"".join(chunks)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("application/json"):
        try:
            data = json.loads(body or b"{}")
        except (ValueError, RecursionError):  # (a body nested thousands deep: RecursionError)
            raise HTTPException(422, "invalid JSON body") from None
        if not isinstance(data, dict):
            raise HTTPException(422, "expected a JSON object")
        return {str(k): v for k, v in data.items() if isinstance(v, str)}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}

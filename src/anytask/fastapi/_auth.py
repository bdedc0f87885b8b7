"""Sessions, login checks, CSRF tokens and login throttling for the admin routes.

A session is a signed cookie (itsdangerous) holding the user name (None before login)
and a random nonce. The CSRF token is an HMAC of that nonce, so it is bound to the
session and changes at each login. Nothing is kept on the server except the throttle's
recent failures, so sessions work across instances sharing a ``secret``.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from .._errors import ConfigurationError

__all__ = ["AuthCallable", "AuthSpec", "Authenticator", "Session", "Throttle"]

#: ``async def auth(request) -> str | None``: the user name, or None when not signed in.
#: It may also be a plain function, and may raise ``HTTPException`` (e.g. for Basic auth).
AuthCallable: TypeAlias = Callable[[Request], "Awaitable[str | None] | str | None"]
AuthSpec: TypeAlias = "tuple[str, str] | Iterable[tuple[str, str]] | AuthCallable | None"

COOKIE = "anytask_session"


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Session:
    user: str | None
    nonce: str


class Throttle:
    """At most ``limit`` failures per key within ``window`` seconds."""

    def __init__(self, limit: int = 5, window: float = 60.0, max_keys: int = 10_000) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        times = self._failures.get(key)
        if times is None:
            return None
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            del self._failures[key]
            return None
        return times

    def retry_after(self, key: str) -> float | None:
        """Seconds until ``key`` may try again, or None when it may try now."""
        now = time.monotonic()
        times = self._recent(key, now)
        if times is None or len(times) < self.limit:
            return None
        return times[0] + self.window - now

    def failed(self, key: str) -> None:
        now = time.monotonic()
        times = self._recent(key, now)
        if times is None:
            if len(self._failures) >= self.max_keys:
                self._make_room(now)
            times = self._failures[key] = deque()
        times.append(now)

    def _make_room(self, now: float) -> None:
        """Forget expired keys; if none expired, the oldest key that is not throttled. A
        throttled key is never forgotten, so flooding the table with junk keys cannot
        lift a lock-out."""
        for key in list(self._failures):
            self._recent(key, now)
        if len(self._failures) < self.max_keys:
            return
        for key, times in self._failures.items():
            if len(times) < self.limit:
                del self._failures[key]
                return
        # every key is throttled: the table may grow by one (bounded by limit * max_keys
        # failures per window, which the throttle itself slows down)

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)


class Authenticator:
    """Who is asking, and may they change things."""

    def __init__(
        self,
        auth: Any,
        *,
        secret: str | bytes | None,
        session_ttl: int,
        throttle: Throttle,
    ) -> None:
        self.users: dict[str, bytes] = {}
        self.callable: AuthCallable | None = None
        if auth is None:
            pass
        elif callable(auth):
            self.callable = auth
        elif isinstance(auth, tuple) and len(auth) == 2 and all(isinstance(a, str) for a in auth):
            self._add_user(auth)  # one pair: checked like each pair of a list
        else:
            try:
                pairs = list(auth)
            except TypeError:
                raise ConfigurationError(
                    f"auth must be (user, password), a list of them or a callable, got {auth!r}"
                ) from None
            for pair in pairs:
                self._add_user(pair)
            if not self.users:
                raise ConfigurationError("auth is an empty list: nobody could sign in")
        if secret is None:
            key = secrets.token_bytes(32)  # sessions end when the process does
        elif isinstance(secret, str | bytes) and len(secret) >= 16:
            key = secret.encode() if isinstance(secret, str) else secret
        else:
            raise ConfigurationError("secret must be a str or bytes of at least 16 characters")
        self._key = key
        self._serializer = URLSafeTimedSerializer(key, salt="anytask.session")
        self._dummy = _digest(secrets.token_hex(16))
        self.session_ttl = session_ttl
        self.throttle = throttle

    def _add_user(self, pair: object) -> None:
        """An empty user name or password would let anyone in with empty fields."""
        if not (
            isinstance(pair, tuple)
            and len(pair) == 2
            and all(isinstance(p, str) and p for p in pair)
        ):
            raise ConfigurationError(
                f"auth pairs must be (user, password), both non-empty str, got {pair!r}"
            )
        self.users[pair[0]] = _digest(pair[1])

    @property
    def enabled(self) -> bool:
        return bool(self.users) or self.callable is not None

    @property
    def form_login(self) -> bool:
        return bool(self.users)

    # -- sessions ----------------------------------------------------------------------
    def session(self, request: Request) -> Session | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=self.session_ttl)
        except BadSignature:
            return None
        if not isinstance(data, dict):
            return None
        user, nonce = data.get("u"), data.get("n")
        if not isinstance(nonce, str) or not (user is None or isinstance(user, str)):
            return None
        if user is not None and user not in self.users:
            return None  # the user was removed from the configuration
        return Session(user, nonce)

    def set_session(
        self, response: Response, request: Request, user: str | None, path: str
    ) -> Session:
        """A new session cookie for ``path``: the admin's prefix as the browser sees it."""
        session = Session(user, secrets.token_urlsafe(18))
        response.set_cookie(
            COOKIE,
            self._serializer.dumps({"u": user, "n": session.nonce}),
            max_age=self.session_ttl,
            path=path,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return session

    def clear_session(self, response: Response, request: Request, path: str) -> None:
        response.delete_cookie(
            COOKIE,
            path=path,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._key, b"csrf:" + session.nonce.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session | None, token: str | None) -> bool:
        if session is None or not token:
            return False
        # (a token from a JSON form may hold a lone surrogate: a wrong token, not a 500)
        given = token.encode("utf-8", "surrogatepass")
        return hmac.compare_digest(self.csrf_token(session).encode(), given)

    # -- identity ----------------------------------------------------------------------
    async def user(self, request: Request) -> str | None:
        """The signed-in user; ``""`` when auth is off (everyone may use the admin)."""
        if not self.enabled:
            return ""
        if self.callable is not None:
            result = self.callable(request)
            if inspect.isawaitable(result):
                result = await result
            if result is not None and not isinstance(result, str):
                raise TypeError(f"the auth callable must return str or None, got {result!r}")
            return result
        session = self.session(request)
        return None if session is None else session.user

    def check_password(self, username: str, password: str) -> bool:
        """Constant-time: an unknown user costs the same as a wrong password."""
        expected = self.users.get(username, self._dummy)
        ok = hmac.compare_digest(_digest(password), expected)
        return ok and username in self.users


def same_origin(request: Request, trusted: frozenset[str]) -> bool:
    """True when the request's ``Origin`` (or, without one, ``Referer``) is this host."""
    source = request.headers.get("origin")
    if source is None or source == "null":
        source = request.headers.get("referer") if source is None else None
    if not source:
        return False
    try:
        parts = urlsplit(source)
    except ValueError:  # e.g. "http://[" (an unclosed IPv6 bracket): not this host
        return False
    origin = f"{parts.scheme}://{parts.netloc}"
    if origin in trusted:
        return True
    host = request.headers.get("host")
    return bool(host) and parts.netloc == host and parts.scheme in ("http", "https")

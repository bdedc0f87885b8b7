"""Start a test app under a real server in a subprocess on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

TESTS = Path(__file__).parent
KINDS = ["uvicorn", "hypercorn-trio"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def command(kind: str, port: int, app: str = "server_app:app", workers: int = 1) -> list[str]:
    if kind == "uvicorn":
        return [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--timeout-graceful-shutdown",
            "2",
            "--log-level",
            "warning",
            *(["--workers", str(workers)] if workers > 1 else []),
        ]
    if kind == "hypercorn-trio":
        return [
            sys.executable,
            "-m",
            "hypercorn",
            "--worker-class",
            "trio",
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "2",
            *(["--workers", str(workers)] if workers > 1 else []),
            app,
        ]
    raise ValueError(kind)


def signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    """Send ``signum`` to the server and every process it started (its session)."""
    try:
        os.killpg(proc.pid, signum)
    except ProcessLookupError:
        pass


@contextmanager
def running_server(
    kind: str, env: dict[str, str] | None = None, workers: int = 1
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """Yield (base url, process) once the server answers its health check; stop it after
    (SIGTERM, then SIGKILL if it lingers). The caller may SIGKILL it earlier."""
    port = free_port()
    # the caller's PYTHONPATH stays after tests/: a run against a checkout's src/ (not the
    # installed package) starts its servers on that checkout too
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    full_env = {**os.environ, "PYTHONPATH": path, **(env or {})}
    proc = subprocess.Popen(
        command(kind, port, workers=workers),
        cwd=TESTS,
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # hypercorn serves from a child process: kill the group
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"{kind} exited with {proc.returncode}: {err}")
            try:
                if httpx.get(base + "/tasks/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} did not start within 20 s")
            time.sleep(0.05)
        yield base, proc
    finally:
        if proc.poll() is None:
            signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        signal_group(proc, signal.SIGKILL)  # whatever is left of the group, workers included
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


class EventStreamReader:
    """Reads ``text/event-stream`` lines over a plain TCP connection (HTTP/1.1), without
    async generators, so that leaving early needs no cleanup on any backend."""

    def __init__(self, base: str, path: str, headers: dict[str, str] | None = None) -> None:
        url = httpx.URL(base)
        self.host, self.port, self.path = url.host, url.port or 80, path
        self.headers = headers or {}
        self.buffer = b""
        self.status = 0
        self.content_type = ""

    async def __aenter__(self) -> EventStreamReader:
        import anyio

        self.stream = await anyio.connect_tcp(self.host, self.port)
        extra = "".join(f"{k}: {v}\r\n" for k, v in self.headers.items())
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Accept: text/event-stream\r\n{extra}\r\n"
        )
        await self.stream.send(request.encode())
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += await self.stream.receive()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode().split("\r\n")
        self.status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-type":
                self.content_type = value.strip()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stream.aclose()

    async def line(self) -> str:
        """The next SSE line (chunked-encoding size lines are skipped)."""
        while True:
            while b"\n" not in self.buffer:
                self.buffer += await self.stream.receive()
            raw, self.buffer = self.buffer.split(b"\n", 1)
            text = raw.decode().rstrip("\r")
            if text and all(c in "0123456789abcdefABCDEF" for c in text):
                continue  # a chunk size
            if text:
                return text

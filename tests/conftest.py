"""Shared fixtures: every async test runs on asyncio and on trio."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def mock_clock_backend() -> Any:
    """Use as ``anyio_backend`` override in a module for virtual time on trio only."""
    import trio.testing

    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "tasks.db")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = Path(os.environ.get("ANYTASK_ARTIFACTS", "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path

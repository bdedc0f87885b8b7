"""The README's quick start runs as written, on asyncio and on trio."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def quick_start() -> str:
    match = re.search(r"## Quick start\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert match is not None, "the README has no quick start block"
    return match.group(1)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_quick_start_runs(backend: str, tmp_path: Path) -> None:
    code = quick_start().replace("anyio.run(main)", f"anyio.run(main, backend={backend!r})")
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("success sent to a@b.c ")
    assert (tmp_path / "tasks.db").exists()

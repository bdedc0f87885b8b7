"""Store doubles shared by the runtime tests."""

from __future__ import annotations

from typing import Any

import anyio

from anytask import MemoryStore


class SlowClaimStore(MemoryStore):
    """Claims like a database that takes a while to answer (SQLite in its thread)."""

    async def claim(self, owner: str, limit: int, now: Any, lease_until: Any) -> list[Any]:
        records = await super().claim(owner, limit, now, lease_until)
        if records:
            await anyio.sleep(0.3)
        return records

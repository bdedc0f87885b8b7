"""Task ids: uuid4 text made in batches, never shared between a parent and its fork."""

from __future__ import annotations

import os
import uuid

import pytest

from anytask._ids import new_task_id


def test_ids_are_uuid4_text_and_unique() -> None:
    ids = [new_task_id() for _ in range(20_000)]  # many batches
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_hands_out_the_ids_its_parent_had_made() -> None:
    new_task_id()  # the parent now holds a batch of ids made in advance
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave without cleanup
        try:
            os.close(read_end)
            os.write(write_end, " ".join(new_task_id() for _ in range(50)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    child = set(b"".join(chunks).decode().split())
    parent = {new_task_id() for _ in range(50)}
    assert len(child) == 50
    assert not child & parent

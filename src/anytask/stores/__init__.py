"""Stores: where task records live. ``abc.Store`` is the contract every backend meets."""

from .abc import HeartbeatResult as HeartbeatResult
from .abc import RecoveryResult as RecoveryResult
from .abc import Store as Store
from .memory import MemoryStore as MemoryStore
from .sqlite import SQLiteStore as SQLiteStore

__all__ = ["HeartbeatResult", "MemoryStore", "RecoveryResult", "SQLiteStore", "Store"]

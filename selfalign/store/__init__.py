"""The run database (SQLite, WAL). The only package that writes SQL."""

from selfalign.store.opening import open_store
from selfalign.store.store import Store, now, prompt_hash

__all__ = ["Store", "open_store", "now", "prompt_hash"]

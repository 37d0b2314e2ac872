"""Opening a run database: pragmas, refusing files that are not ours or come from a newer selfalign,
and applying the migrations a database lacks."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from selfalign.errors import StoreError
from selfalign.store.schema import migrations
from selfalign.store.store import BUSY_TIMEOUT_MS, Store


def open_store(path: str | Path, *, create: bool = False) -> Store:
    """Open a run database, checking it is ours and not from a newer selfalign.

    With `create`, a missing file is made and migrated; otherwise it must exist.
    """
    path = Path(path)
    if not path.exists() and not create:
        raise StoreError(f"no database at {path}; create the run with `selfalign init NAME`")
    # No Python open() of the file to check its header: closing any descriptor of a database file drops
    # every POSIX lock this process holds on it, including the WAL lock of a connection already open here
    # (the loop's, while its heartbeat thread opens a second one); another process closing its connection
    # then believes it is the last one and deletes the WAL under the writer, which hides every later write
    # from readers until the writer exits. SQLite itself reports a non-database file below.
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys = ON")
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        db = sqlite_utils.Database(conn, execute_plugins=False)
        if _check_ours(db, path):  # only a database that lacks a migration takes the write lock here:
            # readers polling a busy run (the UI, status, scripts) must not starve its writer. Foreign keys
            # are off while a migration rebuilds a table others point at (SQLite's way; each migration checks
            # the keys itself), and on again for everything else.
            conn.execute("PRAGMA foreign_keys = OFF")
            migrations.apply(db)
            conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        conn.close()
        if "not a database" in str(exc):
            raise StoreError(f"{path} is not a SQLite database; move it away or pick another run folder") from None
        raise StoreError(f"{path} cannot be read as a SQLite database ({exc}); "
                         "restore it from a copy or pick another run folder") from None
    except BaseException:
        conn.close()
        raise
    return Store(db, path)


def _check_ours(db: sqlite_utils.Database, path: Path) -> bool:
    """Refuse foreign and newer databases; True when some of our migrations are still to apply."""
    tables = set(db.table_names())
    known = {m.name for m in migrations._migrations}
    applied = {m.name for m in migrations.applied(db)}
    if tables and not applied:
        raise StoreError(f"{path} is not a selfalign database (it has tables {', '.join(sorted(tables)[:4])}); "
                         "point at a run folder made by `selfalign init`")
    newer = applied - known
    if newer:
        raise StoreError(f"{path} was written by a newer selfalign (schema {max(newer)}); "
                         "upgrade selfalign with `pip install -U selfalign`")
    return bool(known - applied)

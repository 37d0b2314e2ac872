"""Run folders: where they live, what their names may be, creating them, and the writer lock.

A run is a folder: config.toml, selfalign.db, rounds/<k>/adapter/, logs/. Copying the
folder copies the run. One process writes to a run at a time, enforced by an OS file lock
(flock) that the kernel releases when the process dies, so a SIGKILL never leaves it stuck.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selfalign.errors import RunBusyError, StoreError, UsageError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LOCK_FILE = ".lock"


def runs_dir(explicit: str | Path | None = None) -> Path:
    """--runs-dir, else $SELFALIGN_RUNS, else ./runs."""
    return Path(explicit or os.environ.get("SELFALIGN_RUNS") or "runs")


def check_name(name: str) -> str:
    """A run name is one folder name: no separators, no leading dot, no '..'."""
    if not NAME_RE.match(name) or ".." in name:
        raise UsageError(f"run name {name!r} is not allowed; use letters, digits, '.', '_' or '-' "
                         "(at most 64, starting with a letter or digit), e.g. demo-1")
    return name


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def db_path(self) -> Path:
        return self.path / "selfalign.db"

    @property
    def logs_dir(self) -> Path:
        return self.path / "logs"

    @property
    def tensorboard_dir(self) -> Path:
        return self.path / "tensorboard"

    @property
    def report_dir(self) -> Path:
        """What the metric mirrors keep: what was copied already, W&B's local files."""
        return self.path / "report"

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    def round_dir(self, k: int) -> Path:
        """What round k's training writes: adapter/, reference.pt, distributed/."""
        return self.path / "rounds" / str(k)

    def adapter_dir(self, k: int) -> Path:
        return self.round_dir(k) / "adapter"

    def adapter_label(self, k: int | None) -> str:
        """How responses record the policy that sampled them: 'base' or the adapter's path in the run."""
        return f"rounds/{k}/adapter" if k else "base"

    def policy_round(self, k: int | None, preferred: int | None = None) -> int:
        """The round whose policy a command uses (eval, serve): k; when k is None, `preferred` (the
        controller's best kept round) or else the newest adapter; 0 is the base model. A round without an
        adapter is an error that lists the ones there are."""
        adapters = self.adapter_rounds()
        if k is None:
            return preferred if preferred is not None else (adapters[-1] if adapters else 0)
        if k and k not in adapters:
            raise UsageError(f"round {k} of {self.name} has no adapter; rounds with adapters: {adapters or 'none'}")
        return k

    def adapter_of(self, k: int) -> str | None:
        """The adapter folder of round k's policy as a string (None: round 0, the base model)."""
        return str(self.adapter_dir(k)) if k else None

    def adapter_rounds(self) -> list[int]:
        """Rounds that saved an adapter, oldest first."""
        return sorted(int(p.parent.name) for p in self.path.glob("rounds/*/adapter")
                      if p.is_dir() and p.parent.name.isdigit())

    def lock(self) -> RunLock:
        return RunLock(self)


def locate(name: str, root: str | Path | None = None) -> RunFolder:
    """The existing run called `name`; a clear error when there is none."""
    base = runs_dir(root)
    folder = RunFolder(base / check_name(name))
    if not folder.path.is_dir():
        raise StoreError(f"no run named {name!r} in {base}; create it with `selfalign init {name}` "
                         "or pass --runs-dir")
    if not folder.config_path.is_file() or not folder.db_path.is_file():
        raise StoreError(f"{folder.path} is not a selfalign run (no config.toml or selfalign.db); "
                         f"recreate it with `selfalign init {name} --force`")
    return folder


class RunLock:
    """Exclusive, non-blocking writer lock on a run folder; holds the writer's pid for `status`."""

    def __init__(self, folder: RunFolder):
        self.folder = folder
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        fd = os.open(self.folder.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = holder_pid(self.folder)
            who = f"process {pid}" if pid else "another process"
            raise RunBusyError(f"run {self.folder.name!r} is busy: {who} is writing to it; wait for it to "
                               f"finish or stop it (selfalign status {self.folder.name})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def holder_pid(folder: RunFolder) -> int | None:
    """Pid of the process holding the lock now; None when nobody does (a stale pid is ignored)."""
    try:
        fd = os.open(folder.lock_path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 32).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def create(name: str, config_toml: str, *, root: str | Path | None = None, force: bool = False,
           note: str = "", version: str = "", fill: Callable[[RunFolder], None] | None = None) -> RunFolder:
    """Make runs/<name>/ with config.toml and a migrated selfalign.db (or, with `fill`, whatever
    fill(staging folder) writes there besides config.toml: a fork copies another run's database).

    The run is built in a hidden sibling folder and renamed into place, so a killed `init`
    never leaves half a run. With `force` an existing run is replaced, but only while no
    other process writes to it.
    """
    from selfalign.store import open_store

    base = runs_dir(root)
    target = RunFolder(base / check_name(name))
    if target.path.exists() and not force:
        raise UsageError(f"run {name!r} already exists at {target.path}; pick another name, or pass "
                         "--force to replace it (its data is deleted)")
    base.mkdir(parents=True, exist_ok=True)
    staging = RunFolder(base / f".{name}.new-{os.getpid()}")
    shutil.rmtree(staging.path, ignore_errors=True)
    staging.path.mkdir()
    old_lock = None
    try:
        (staging.path / "rounds").mkdir()
        staging.logs_dir.mkdir()
        staging.config_path.write_text(config_toml, encoding="utf-8")
        if fill is not None:
            fill(staging)
        else:
            with open_store(staging.db_path, create=True) as store:
                store.init_run(name, config_toml, version, note)
        if target.path.exists():
            old_lock = RunLock(target).acquire() if target.path.is_dir() else None
            trash = base / f".{name}.old-{os.getpid()}"
            target.path.rename(trash)
            staging.path.rename(target.path)
            shutil.rmtree(trash, ignore_errors=True) if trash.is_dir() else trash.unlink()
        else:
            staging.path.rename(target.path)
    finally:
        if old_lock:
            old_lock.release()
        shutil.rmtree(staging.path, ignore_errors=True)
    return target


def list_runs(root: str | Path | None = None) -> list[RunFolder]:
    base = runs_dir(root)
    if not base.is_dir():
        return []
    return sorted((RunFolder(p) for p in base.iterdir()
                   if p.is_dir() and not p.name.startswith(".") and (p / "config.toml").is_file()),
                  key=lambda r: r.name)

"""Errors that reach the user as one line and a documented exit code.

Exit codes (also in the README): 0 done, 1 error, 2 bad usage or config,
3 run busy (another process holds it), 4 stopped by request.
"""

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BUSY = 3
EXIT_STOPPED = 4


class SelfalignError(Exception):
    """A failure the user can fix; the message names the problem and the fix."""

    exit_code = EXIT_ERROR


class ConfigError(SelfalignError):
    exit_code = EXIT_USAGE


class UsageError(SelfalignError):
    exit_code = EXIT_USAGE


class RunBusyError(SelfalignError):
    exit_code = EXIT_BUSY


class StoreError(SelfalignError):
    """The run's database is missing, foreign, corrupt or from a newer selfalign."""


class ModelError(SelfalignError):
    """A model name or folder that cannot be resolved or loaded: fix the name or the folder."""

    exit_code = EXIT_USAGE


class ModelFetchError(SelfalignError):
    """Downloading or converting a model failed (network, index settings, disk)."""


def disk_full(exc: BaseException) -> SelfalignError | None:
    """A full disk (or quota) as one line with its fix, whichever layer hit it: a file write, SQLite, the
    adapter spill. None for anything else. Nothing is lost: SQLite rolls the open transaction back and
    every stage resumes from its last stored row."""
    import errno
    import sqlite3

    full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc))  # SQLITE_FULL's message
    if not full:
        return None
    where = f" writing {exc.filename}" if getattr(exc, "filename", None) else ""
    return SelfalignError(f"the disk is full{where}: free some space and run the same command again "
                          "(what was stored before is kept)")


def quiet_library_warnings() -> None:
    """Hide a deprecation that peft triggers inside transformers on every adapter load: it names
    neither the user's code nor ours, and would repeat in every round's output."""
    import warnings

    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.*", category=FutureWarning)

"""The process around a running loop: its log, the stop and pause controls, the heartbeat, memory.

None of this is the round itself (loop.py); it is what keeps a long-running writer observable and
stoppable: JSON-lines logs, requests from the `controls` table and signals, a heartbeat thread that
shows a hung or dead writer, and handing freed memory back to the OS between stages.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone

from selfalign.runs import RunFolder
from selfalign.store import Store, open_store

PAUSE_POLL_S = 1.0
HEARTBEAT_S = 5.0


class RunLog:
    """JSON lines in logs/ (one file per process start) and plain lines on stderr unless quiet."""

    def __init__(self, folder: RunFolder, store: Store, quiet: bool = False):
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        folder.logs_dir.mkdir(exist_ok=True)
        self.path = folder.logs_dir / f"{stamp}-{os.getpid()}.jsonl"
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (open as long as the process runs)
        self.store = store
        self.quiet = quiet
        self._last_progress: dict[str, float] = {}

    def __call__(self, level: str, message: str, *, round: int | None = None, stage: str | None = None,
                 event: bool = True, **data) -> None:
        record = {"ts": datetime.now(timezone.utc).isoformat(timespec="milliseconds"), "level": level,
                  "round": round, "stage": stage, "message": message, **data}
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if event:
            self.store.log_event(level, message, round=round, stage=stage, data=data or None)
        if not self.quiet:
            where = f"[round {round} {stage}] " if stage else (f"[round {round}] " if round is not None else "")
            print(f"{level}: {where}{message}", file=sys.stderr, flush=True)

    def progress(self, round_k: int, stage: str, done: int, total: int) -> None:
        """Plain progress lines, at most one every 5 s per stage plus the last one."""
        now = time.monotonic()
        key = f"{round_k}/{stage}"
        if done < total and now - self._last_progress.get(key, 0) < 5:
            return
        self._last_progress[key] = now
        if not self.quiet:
            print(f"progress: [round {round_k} {stage}] {done}/{total}", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.file.close()


class Controls:
    """Stop and pause requests: from the controls table (the UI, `selfalign` commands) and signals."""

    def __init__(self, store: Store, log: RunLog):
        self.store = store
        self.log = log
        self.signalled = False
        self.stopping = False  # a stop request, once read, holds: the engine and then the stage both ask
        self.after_stage = False

    def install(self) -> None:
        def handler(signum, frame):
            if self.signalled:  # a second Ctrl-C: stop at once
                raise KeyboardInterrupt
            self.signalled = True

        try:
            signal.signal(signal.SIGINT, handler)
            signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread (an embedding program): it handles signals itself
            pass

    def should_stop(self) -> bool:
        if self.signalled or self.stopping:
            return True
        for control in self.store.pending_controls():
            self.store.mark_control_handled(control.id)
            if control.action == "stop":
                self.log("info", "stop requested: stopping now (finished answers are kept)")
                self.stopping = True
                return True
            if control.action == "stop_after_stage":
                self.log("info", "stop requested: stopping after this stage")
                self.after_stage = True
            elif control.action == "pause":
                self.log("info", "paused")
                if self._wait_for_resume():
                    self.stopping = True
                    return True
                self.log("info", "resumed")
        return False

    def _wait_for_resume(self) -> bool:
        """Block until resume (False) or stop (True)."""
        while not self.signalled:
            for control in self.store.pending_controls():
                self.store.mark_control_handled(control.id)
                if control.action == "resume":
                    return False
                if control.action == "stop":
                    return True
                if control.action == "stop_after_stage":
                    self.after_stage = True
            time.sleep(PAUSE_POLL_S)
        return True


class Heartbeat:
    """A thread that writes (pid, now) to the heartbeat table every few seconds while the process lives.

    It has its own connection, so it beats during a long model call that writes nothing else; a writer
    that hung or died shows as a heartbeat that stopped.
    """

    def __init__(self, db_path, interval: float = HEARTBEAT_S):
        self.db_path = db_path
        self.interval = interval
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="selfalign-heartbeat", daemon=True)

    def _beat(self) -> None:
        store = open_store(self.db_path)
        try:
            while True:
                store.beat(os.getpid())
                if self.stopped.wait(self.interval):
                    return
        finally:
            store.close()

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


def return_freed_memory() -> None:
    """Hand memory freed by a stage back to the OS. glibc keeps freed heap pages, so without this
    the process stays at its training peak through the next round's generation (seen: 14 GB RSS
    after a 135M model's train stage)."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


MMAP_THRESHOLD = 2**20  # blocks of 1 MiB and more come from mmap and go back to the OS when freed


def hand_back_large_blocks() -> None:
    """Make glibc serve blocks of MMAP_THRESHOLD or more from mmap, for the rest of the process. By
    default glibc raises that threshold to the size of any mapped block freed (up to 32 MiB), so the
    sampler's KV buffers and per-step logits, tens of MiB each and resized as rows join and leave,
    come from the heap afterwards and fragment it: a 384-row sampling job peaked at 2595 MiB with the
    default and 2208 MiB with this (benchmarks/generate_memory.py, same speed within the noise).
    MALLOC_MMAP_THRESHOLD_ in the environment wins: glibc read it at start and this leaves it alone."""
    import contextlib
    import ctypes

    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc (macOS, musl): nothing to set
        ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD)  # -3: M_MMAP_THRESHOLD


def reset_peak_memory() -> None:
    """Start a new peak: the kernel's high-water mark of this process's RSS drops to what it holds now
    (Linux; elsewhere the peak stays the process's lifetime peak)."""
    import contextlib

    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def peak_memory_mib() -> float | None:
    """The most resident memory this process has held since the last reset_peak_memory (Linux), in MiB."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM"))
    except (OSError, StopIteration, ValueError):
        return None

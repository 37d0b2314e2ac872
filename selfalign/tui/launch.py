"""Starting the UI: `selfalign run` (a headless loop child plus the UI) and `selfalign watch`."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

from selfalign import runs


def start_loop(folder: runs.RunFolder, rounds: int | None) -> tuple[subprocess.Popen, str]:
    """The loop as a child in its own session: closing the UI or the terminal (SIGHUP) leaves it running.
    Its output goes to a file in logs/, since the UI owns the terminal."""
    folder.logs_dir.mkdir(exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    out_path = folder.logs_dir / f"{stamp}-child-output.txt"
    command = [sys.executable, "-m", "selfalign", "--runs-dir", str(folder.path.parent), "run", folder.name,
               "--headless"]
    if rounds is not None:
        command += ["--rounds", str(rounds)]
    with open(out_path, "w", encoding="utf-8") as out:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    return child, str(out_path)


def run_with_ui(folder: runs.RunFolder, rounds: int | None) -> int:
    from selfalign.tui.app import RunApp

    holder = runs.holder_pid(folder)
    child, out_path = None, None
    if holder:
        print(f"{folder.name} is already running (pid {holder}); attaching to it", file=sys.stderr)
    else:
        child, out_path = start_loop(folder, rounds)
    result = RunApp(folder, child=child, child_output=out_path).run()
    return _farewell(folder, result, child)


def watch(folder: runs.RunFolder) -> int:
    from selfalign.tui.app import RunApp

    return _farewell(folder, RunApp(folder).run(), None)


def _farewell(folder: runs.RunFolder, result: str | None, child: subprocess.Popen | None) -> int:
    """One line on what the loop is doing now that the UI is gone."""
    pid = runs.holder_pid(folder) or (child.pid if child and child.poll() is None else None)
    if result == "stop":
        print(f"asked the loop (pid {pid}) to stop after its current batch; `selfalign status {folder.name}` "
              "shows when it has", file=sys.stderr)
    elif pid:
        print(f"the loop goes on in the background (pid {pid}); `selfalign watch {folder.name}` attaches again, "
              f"`selfalign status {folder.name}` shows progress", file=sys.stderr)
    return 0

"""`selfalign status`: what each run is doing, for people and for monitoring scripts (no UI code).

States: idle (nothing running; `done` when every configured round finished), running (a process
holds the run's lock; its pid is shown), paused (running, last control was a pause), failed (the
last stage failed; its error is shown), stale (a stage is marked running but no process holds
the lock: the writer died, and `selfalign run` will resume it), stopped (stopped by request; run
again to resume), hung (a process holds the lock but its heartbeat thread has not written for
HUNG_AFTER_S: the process is frozen, stopped with SIGSTOP, or swapping; look at it, or kill it and
run again, which resumes).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from selfalign import config as config_mod
from selfalign import heldout, runs
from selfalign import metrics as metrics_mod
from selfalign.store import Store, open_store
from selfalign.store.rows import ROUND_FINISHED

HUNG_AFTER_S = 60  # the loop beats every 5 s: twelve missed beats

HEADLINE = metrics_mod.HEADLINE


def run_status(folder: runs.RunFolder, store: Store | None = None, *, activity: bool = True,
               config: config_mod.Watched | None = None) -> dict[str, Any]:
    """The run's state and headline figures. Pass an open `store` to reuse a connection and a watched
    `config` to skip parsing an unchanged config.toml (the TUI does both); `activity=False` skips the
    newest-row scan, which costs a table scan on large runs."""
    if store is None:
        with open_store(folder.db_path) as own:
            return run_status(folder, own, activity=activity, config=config)
    pid = runs.holder_pid(folder)
    cfg = (config or config_mod.Watched(folder.config_path)).get()
    rounds = store.rounds()
    current = rounds[-1] if rounds else None
    stages = store.stages(current.k) if current else []
    active = next((s for s in stages if s.status in ("running", "failed", "stopped")), None)
    done_rounds = [r.k for r in rounds if r.status in ROUND_FINISHED and r.k > 0]
    stops = [d for d in store.decisions() if d.kind == "stop"] if cfg.controller.enabled else []
    metrics = store.metrics(max(done_rounds)).get(max(done_rounds), {}) if done_rounds else {}
    shown = heldout.shown(metrics)
    controls = [c for c in store.controls() if c.handled]
    beat = store.heartbeat()
    paused = bool(controls) and controls[-1].action == "pause"
    status: dict[str, Any] = {
        "run": folder.name, "recipe": cfg.run.recipe, "model": cfg.model.name, "pid": pid,
        "round": current.k if current else None, "rounds": cfg.run.rounds,
        "round_started_at": current.started_at if current else None,
        "stage": active.name if active else None,
        "progress": [active.done, active.total] if active else None,
        "error": active.error if active and active.status == "failed" else None,
        "last_activity": store.last_activity() if activity else None,
        "heartbeat": beat[1] if beat else None,
        "metrics": {name: shown[name] for name in HEADLINE if name in shown},
        "metrics_round": max(done_rounds) if done_rounds else None,
        "rejected_rounds": [r.k for r in rounds if r.status == "rejected"],
        "stop_reason": stops[-1].reason if stops else None,
    }
    if pid and beat and beat[0] == pid and _seconds_since(beat[1]) > HUNG_AFTER_S:
        status["state"] = "hung"
    elif pid:
        status["state"] = "paused" if paused else "running"
    elif active and active.status == "failed":
        status["state"] = "failed"
    elif active and active.status == "running":
        status["state"] = "stale"
    elif active and active.status == "stopped":
        status["state"] = "stopped"
    else:
        status["state"] = "done" if len(done_rounds) >= cfg.run.rounds or stops else "idle"
    return status


def _seconds_since(timestamp: str) -> float:
    return (datetime.now(timezone.utc) - datetime.fromisoformat(timestamp)).total_seconds()


def render(statuses: list[dict[str, Any]]) -> str:
    lines = []
    for s in statuses:
        head = f"{s['run']}: {s['state']}"
        if s["pid"]:
            head += f" (pid {s['pid']})"
        where = f"round {s['round']} of {s['rounds']}" if s["round"] is not None else "not started"
        if s["stage"]:
            done, total = s["progress"]
            where += f", {s['stage']} {done}/{total if total is not None else '?'}"
        lines.append(f"{head}; {where}; {s['recipe']} on {s['model']}; "
                     f"last heartbeat {s['heartbeat'] or 'never'}; last activity {s['last_activity'] or 'never'}")
        if s["error"]:
            lines.append(f"  error: {s['error']}")
        if s.get("stop_reason"):
            lines.append(f"  stopped by the controller: {s['stop_reason']}")
        if s.get("rejected_rounds"):
            lines.append(f"  rejected rounds: {', '.join(map(str, s['rejected_rounds']))}")
        if s["metrics"]:
            figures = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                for k, v in s["metrics"].items() if v is not None)
            lines.append(f"  round {s['metrics_round']}: {figures}")
    return "\n".join(lines) if lines else "no runs"

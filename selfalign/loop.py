"""Round orchestration: instruct -> generate -> judge -> pairs -> train -> evaluate, resumable.

The loop holds the run's writer lock, writes every step to the database, and between batches
honours pause / resume / stop requests from the `controls` table and SIGINT / SIGTERM. A killed
process resumes at the first unfinished stage; inside a stage, the stage itself skips finished
work. Round 0 is the untrained policy's evaluation. Each finished round prints one JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from selfalign import config as config_mod
from selfalign import controller, report
from selfalign.errors import EXIT_OK, EXIT_STOPPED, SelfalignError
from selfalign.runs import RunFolder
from selfalign.stages import STAGES, StageContext, StageStopped
from selfalign.store import Store, open_store
from selfalign.store.rows import ROUND_FINISHED

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
        if self.signalled:
            return True
        for control in self.store.pending_controls():
            self.store.mark_control_handled(control.id)
            if control.action == "stop":
                self.log("info", "stop requested: stopping after this batch")
                return True
            if control.action == "stop_after_stage":
                self.log("info", "stop requested: stopping after this stage")
                self.after_stage = True
            elif control.action == "pause":
                self.log("info", "paused")
                if self._wait_for_resume():
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


def make_engine(cfg):
    """The policy engine that generate.engine names (auto: vLLM with CUDA, else transformers)."""
    from selfalign.engines import select

    engine, why = select.make(cfg)
    engine.chosen_because = why
    return engine


def latest_adapter(folder: RunFolder, before: int) -> int | None:
    """The newest round < `before` that saved an adapter."""
    earlier = [k for k in folder.adapter_rounds() if k < before]
    return max(earlier) if earlier else None


def run(folder: RunFolder, *, rounds: int | None = None, quiet: bool = False,
        engine_factory: Callable = make_engine) -> int:
    """Run (or resume) rounds until run.rounds are done, `rounds` more have run, or a stop. Exit code."""
    with folder.lock():
        cfg = config_mod.load(folder.config_path)
        store = open_store(folder.db_path)
        log = RunLog(folder, store, quiet)
        controls = Controls(store, log)
        controls.install()
        mirror = None
        try:
            mirror = report.for_run(folder, cfg)  # before the model loads: a missing package fails at once
            mirror.sync(store)
            with Heartbeat(folder.db_path):
                return _run(folder, cfg, store, log, controls, rounds, engine_factory, mirror)
        except StageStopped:
            log("info", "stopped by request; run the same command to resume")
            return EXIT_STOPPED
        except SelfalignError:
            raise
        except Exception as exc:
            log("error", "traceback", event=False, traceback=traceback.format_exc())
            raise SelfalignError(f"{type(exc).__name__}: {exc} (traceback in {log.path}); fix the cause and run "
                                 "the same command to resume") from exc
        finally:
            if mirror is not None:  # every stage's end synced it; a resumed run copies the rest
                mirror.close()
            log.close()
            store.close()


def _run(folder, cfg, store, log, controls, rounds, engine_factory, mirror: report.Mirror) -> int:
    from selfalign.stages import evaluate, generate, instruct, judge, pairs, train

    log("info", f"loading {cfg.model.name}")
    engine = engine_factory(cfg)
    why = getattr(engine, "chosen_because", "")
    log("info", f"engine {engine.name} on {getattr(engine, 'device', 'a server')}" + (f" ({why})" if why else ""),
        engine=engine.name, reason=why)
    stage_fns = {"instruct": instruct.run, "generate": generate.run, "judge": judge.run, "pairs": pairs.run,
                 "evaluate": evaluate.run}

    def context(k: int, adapter_round: int | None, round_cfg=cfg, weights=None) -> StageContext:
        adapter = str(folder.adapter_dir(adapter_round)) if adapter_round else None
        label = folder.adapter_label(adapter_round)
        engine.set_adapter(adapter)
        return StageContext(round_cfg, store, engine, k, run_dir=folder.path, policy=label, adapter=adapter,
                            should_stop=controls.should_stop, constraint_weights=weights,
                            progress=lambda stage, done, total: (store.stage_progress(k, stage, done, total),
                                                                 log.progress(k, stage, done, total),
                                                                 mirror.sync(store, force=False)))

    def run_stage(ctx: StageContext, name: str, fn) -> object:
        k = ctx.round
        stage = store.stage(k, name)
        if stage and stage.status == "done":
            return None
        store.start_stage(k, name)
        log("info", "started", round=k, stage=name)
        try:
            result = fn(ctx)
        except StageStopped:
            store.finish_stage(k, name, "stopped")
            raise
        except Exception as exc:
            store.finish_stage(k, name, "failed", error=f"{type(exc).__name__}: {exc}")
            log("error", f"failed: {type(exc).__name__}: {exc}", round=k, stage=name)
            raise
        store.finish_stage(k, name, "done")
        log("info", f"done in {store.stage(k, name).seconds:.1f} s", round=k, stage=name)
        mirror.sync(store)
        return_freed_memory()
        if controls.after_stage:
            raise StageStopped()
        return result

    # Round 0: the untrained policy on the held-out prompts, the baseline every round is compared with.
    if not (store.round(0) and store.round(0).status == "done"):
        store.start_round(0, None)
        run_stage(context(0, None), "evaluate", evaluate.run)
        store.finish_round(0, "done")
        _summary(store, 0)

    finished = [r.k for r in store.rounds() if r.status in ROUND_FINISHED and r.k > 0]
    first = (max(finished) + 1) if finished else 1
    last = cfg.run.rounds if rounds is None else min(cfg.run.rounds, first + rounds - 1)
    if first > cfg.run.rounds:
        log("info", f"all {cfg.run.rounds} rounds are done; raise run.rounds in config.toml to go on")
    for k in range(first, last + 1):
        plan = _plan(folder, cfg, store) if cfg.controller.enabled else None
        if plan and plan.stop_reason:
            log("info", f"the controller stopped the run: {plan.stop_reason}; raise controller.patience or "
                "controller.max_hours in config.toml to go on", round=k - 1)
            break
        previous = plan.adapter_round if plan else latest_adapter(folder, k)
        round_cfg = controller.effective_config(cfg, plan.overrides) if plan else cfg
        if plan and plan.overrides:
            log("info", "settings changed by the controller: " + ", ".join(f"{key}={value:.4g}" if isinstance(
                value, float) else f"{key}={value}" for key, value in plan.overrides.items()), round=k)
        store.start_round(k, folder.adapter_label(previous) if previous else None)
        ctx = context(k, previous, round_cfg, plan.constraint_weights if plan else None)
        for name in STAGES:
            if name == "train":
                if hasattr(engine, "release_memory"):  # vLLM: hand the GPU to the trainer until the next call
                    engine.release_memory()
                trained = run_stage(ctx, name, lambda c: train.run(c, folder.path))
                if trained is not None or folder.adapter_dir(k).is_dir():
                    ctx = context(k, k, round_cfg)  # evaluate the new policy
                continue
            run_stage(ctx, name, stage_fns[name])
        status = "done"
        if cfg.controller.enabled:
            trial = None
            if controller.wants_rubric_rewrite(cfg, round_cfg, store.metrics(k).get(k, {})):
                from selfalign import rubric_rewrite

                log("info", "controller: the rubric judge is unhealthy; asking the policy for new criteria",
                    round=k, stage="controller")
                # the policy that judged the round scores both rubrics, so only the rubric differs
                trial = rubric_rewrite.attempt(context(k, previous, round_cfg))
            status = _decide(folder, cfg, round_cfg, store, log, k, trial)
        store.finish_round(k, status)
        mirror.sync(store)  # the controller's round metrics
        _summary(store, k)
    return EXIT_OK


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


def _plan(folder: RunFolder, cfg, store: Store) -> controller.Plan:
    finished = [r.k for r in store.rounds() if r.status in ROUND_FINISHED]
    scores = controller.heldout_scores(store.metrics(), cfg)
    return controller.plan(cfg, store.decisions(), store.overrides(), finished, scores, folder.adapter_rounds())


def _decide(folder: RunFolder, cfg, round_cfg, store: Store, log: RunLog, k: int, rubric_trial=None) -> str:
    """Round k's decisions, stored and logged with their reasons; the round's final status."""
    finished = [r.k for r in store.rounds() if r.status in ROUND_FINISHED and r.k < k]
    kept_before, _ = controller.kept_rounds(store.decisions(), store.overrides(), finished)
    counts: dict[str, tuple[int, int]] = {}  # constraint type -> (passed, checked)
    for results in store.round_verifications(k).values():
        for cid, passed in results.items():
            met, checked = counts.get(cid, (0, 0))
            counts[cid] = (met + passed, checked + 1)
    hours = sum(r.seconds or 0 for r in store.rounds()) / 3600
    decisions = controller.decide(cfg, round_cfg, k, store.metrics(), kept_before, counts, hours, rubric_trial)
    store.set_decisions(k, decisions)
    for d in decisions:
        log("warning" if d.kind in ("reject", "stop") else "info", f"controller: {d.kind}: {d.reason}", round=k,
            stage="controller", kind=d.kind)
    _, rejected = controller.kept_rounds(decisions, store.overrides(), [k])  # the user's word wins here too
    return "rejected" if rejected else "done"


def _summary(store: Store, k: int) -> None:
    """One JSON line on stdout per finished round: its metrics and stage timings."""
    metrics = store.metrics(k).get(k, {})
    timings = {s.name: round(s.seconds, 2) for s in store.stages(k) if s.seconds is not None}
    line = {"round": k, "metrics": metrics, "stage_seconds": timings, "pairs": len(store.pairs(k))}
    print(json.dumps(line), flush=True)


@dataclass
class Evaluation:
    metrics: dict  # round k's metrics on the evaluated prompts
    round: int
    prompt_ids: list[int]  # the prompts evaluated (for intervals and paired gains)
    rounds: list[int]  # every round answered: k, and the round compared against


def evaluate_round(folder: RunFolder, round_k: int | None, prompt_file: str | None = None,
                   engine_factory: Callable = make_engine, every: bool = False,
                   against: int | None = None) -> Evaluation:
    """`selfalign eval`: evaluate round k's policy (default: the newest adapter; 0 is the base model) on
    the loop's held-out sample, every held-out prompt (`every`) or a file; with `against`, that round's
    policy answers the same prompts, for a paired gain. Answers already stored are not sampled again."""
    from selfalign.errors import UsageError
    from selfalign.stages import evaluate

    with folder.lock():
        cfg = config_mod.load(folder.config_path)
        adapters = folder.adapter_rounds()
        k = round_k if round_k is not None else (adapters[-1] if adapters else 0)
        rounds = [k] + ([against] if against is not None and against != k else [])
        for r in rounds:
            if r and r not in adapters:
                raise UsageError(f"round {r} of {folder.name} has no adapter; rounds with adapters: "
                                 f"{adapters or 'none'}")
        with open_store(folder.db_path) as store:
            if k and not store.round(0):
                raise UsageError(f"{folder.name} has no round 0 baseline yet; run `selfalign run {folder.name}` first")
            engine = engine_factory(cfg)
            results = {}
            for r in reversed(rounds):  # the baseline first: it is most often already stored
                adapter = str(folder.adapter_dir(r)) if r else None
                engine.set_adapter(adapter)
                if not store.round(r):
                    store.start_round(r, None)
                ctx = StageContext(cfg, store, engine, r, run_dir=folder.path, policy=folder.adapter_label(r),
                                   adapter=adapter,
                                   progress=lambda stage, done, total, r=r: print(
                                       f"\rround {r} {stage}: {done}/{total}", end="", file=sys.stderr, flush=True))
                results[r] = evaluate.run(ctx, prompt_file, every)
                print(file=sys.stderr)
            ids = [p.id for p in evaluate.heldout_prompts(StageContext(cfg, store, engine, k, run_dir=folder.path),
                                                          prompt_file, every)]
            return Evaluation(results[k], k, ids, rounds)


def render_evaluation(folder: RunFolder, evaluation: Evaluation, against: int | None, fmt: str) -> str:
    """The evaluated round's figures with 95 % intervals, its paired gain over `against`, per constraint type."""
    from selfalign import heldout

    with open_store(folder.db_path) as store:
        now = heldout.answers(store, evaluation.round, evaluation.prompt_ids)
        figures = heldout.round_figures(list(now.values()))
        gain = None
        if against is not None and against != evaluation.round:
            gain = heldout.gain_figures(heldout.answers(store, against, evaluation.prompt_ids), now)
    if fmt == "json":
        return json.dumps({"run": folder.name, "round": evaluation.round, "metrics": evaluation.metrics,
                           "figures": heldout.as_json(figures), "against": against,
                           "gain": heldout.as_json(gain) if gain else None})
    return "\n\n".join([heldout.render_md(folder.name, evaluation.round, figures, gain, against),
                         render_metrics(evaluation.metrics, evaluation.round, folder.name, "md")])


def render_metrics(metrics: dict, k: int, name: str, fmt: str) -> str:
    if fmt == "json":
        return json.dumps({"run": name, "round": k, "metrics": metrics})
    rows = [f"| {key} | {'-' if value is None else f'{value:.4g}'} |" for key, value in sorted(metrics.items())]
    return "\n".join([f"### {name}, round {k}", "", "| metric | value |", "|---|---|", *rows])

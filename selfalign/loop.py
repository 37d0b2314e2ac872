"""Round orchestration: instruct -> generate -> judge -> pairs -> train -> evaluate, resumable.

The loop holds the run's writer lock, writes every step to the database, and between batches
honours pause / resume / stop requests (process.Controls). A killed process resumes at the first
unfinished stage; inside a stage, the stage itself skips finished work. Round 0 is the untrained
policy's evaluation. Each finished round prints one JSON line.
"""

from __future__ import annotations

import importlib
import json
import traceback
from collections.abc import Callable

from selfalign import config as config_mod
from selfalign import controller, report
from selfalign.engines import select
from selfalign.engines.base import Engine
from selfalign.errors import EXIT_OK, EXIT_STOPPED, SelfalignError, disk_full
from selfalign.process import (
    Controls,
    Heartbeat,
    RunLog,
    hand_back_large_blocks,
    peak_memory_mib,
    reset_peak_memory,
    return_freed_memory,
)
from selfalign.runs import RunFolder
from selfalign.stages import STAGES, StageContext, StageStopped
from selfalign.store import Store, open_store
from selfalign.store.rows import ROUND_FINISHED


class Loop:
    """One process's rounds over one run folder: the baseline, then each round top to bottom."""

    def __init__(self, folder: RunFolder, cfg, store: Store, log: RunLog, controls: Controls, engine: Engine,
                 mirror: report.Mirror):
        self.folder, self.cfg, self.store, self.log = folder, cfg, store, log
        self.controls, self.engine, self.mirror = controls, engine, mirror

    def context(self, k: int, adapter_round: int | None, round_cfg=None, weights=None) -> StageContext:
        """What round k's stages see: the policy of `adapter_round` (None: the base model)."""
        store, log, mirror = self.store, self.log, self.mirror
        return StageContext(round_cfg or self.cfg, store, self.engine, k, run_dir=self.folder.path,
                            policy=self.folder.adapter_label(adapter_round),
                            adapter=self.folder.adapter_of(adapter_round or 0),
                            should_stop=self.controls.should_stop, constraint_weights=weights,
                            progress=lambda stage, done, total: (store.stage_progress(k, stage, done, total),
                                                                 log.progress(k, stage, done, total),
                                                                 mirror.sync(store, force=False)))

    def stage(self, ctx: StageContext, name: str) -> None:
        """Run one stage unless it is done; its status, timing and failure go to the stages table."""
        store, k = self.store, ctx.round
        stage = store.stage(k, name)
        if stage and stage.status == "done":
            return
        store.start_stage(k, name)
        self.log("info", "started", round=k, stage=name)
        reset_peak_memory()  # the memory a stage reports is its own peak, not an earlier stage's
        try:
            importlib.import_module(f"selfalign.stages.{name}").run(ctx)
        except StageStopped:
            store.finish_stage(k, name, "stopped")
            raise
        except Exception as exc:
            store.finish_stage(k, name, "failed", error=f"{type(exc).__name__}: {exc}")
            self.log("error", f"failed: {type(exc).__name__}: {exc}", round=k, stage=name)
            raise
        peak = peak_memory_mib()
        store.finish_stage(k, name, "done", peak_rss_mib=peak)
        self.log("info", f"done in {store.stage(k, name).seconds:.1f} s" + (
            f", peak memory {peak / 1024:.1f} GiB" if peak else ""), round=k, stage=name, peak_rss_mib=peak)
        self.mirror.sync(store)
        return_freed_memory()
        if self.controls.after_stage:
            raise StageStopped()

    def baseline(self) -> None:
        """Round 0: the untrained policy on the held-out prompts, the baseline every round is compared with."""
        if self.store.round(0) and self.store.round(0).status == "done":
            return
        self.store.start_round(0, None)
        self.stage(self.context(0, None), "evaluate")
        self.store.finish_round(0, "done")
        _summary(self.store, 0)

    def round(self, k: int) -> bool:
        """Run round k; False when the controller stopped the run before it began."""
        folder, cfg, store, log = self.folder, self.cfg, self.store, self.log
        plan = _plan(folder, cfg, store) if cfg.controller.enabled else None
        if plan and plan.stop_reason:
            log("info", f"the controller stopped the run: {plan.stop_reason}; raise controller.patience or "
                "controller.max_hours in config.toml to go on", round=k - 1)
            return False
        begun = store.round(k)  # a resumed round keeps the policy it began with (its one home: rounds.policy_round)
        previous = begun.policy_round if begun else plan.adapter_round if plan else latest_adapter(folder, k)
        round_cfg = controller.effective_config(cfg, plan.overrides) if plan else cfg
        if plan and plan.overrides:
            log("info", "settings changed by the controller: " + ", ".join(f"{key}={value:.4g}" if isinstance(
                value, float) else f"{key}={value}" for key, value in plan.overrides.items()), round=k)
        store.start_round(k, previous)
        start = self.context(k, previous, round_cfg, plan.constraint_weights if plan else None)
        for name in STAGES:
            # evaluate measures the policy this round trained (the one it started from if it trained none)
            trained = name == "evaluate" and folder.adapter_dir(k).is_dir()
            self.stage(self.context(k, k, round_cfg) if trained else start, name)
        status = "done"
        if cfg.controller.enabled:
            trial = None
            if controller.wants_rubric_rewrite(cfg, round_cfg, store.metrics(k).get(k, {})):
                from selfalign import rubric_rewrite

                log("info", "controller: the rubric judge is unhealthy; asking the policy for new criteria",
                    round=k, stage="controller")
                trial = rubric_rewrite.attempt(start)  # the policy that judged the round scores both rubrics
            status = _decide(folder, cfg, round_cfg, store, log, k, trial)
        store.finish_round(k, status)
        self.mirror.sync(store)  # the controller's round metrics
        _summary(store, k)
        return True

    def rounds(self, rounds: int | None) -> None:
        """Round 0 if missing, then the next rounds up to run.rounds (at most `rounds` of them)."""
        cfg = self.cfg
        self.baseline()
        finished = [r.k for r in self.store.rounds() if r.status in ROUND_FINISHED and r.k > 0]
        first = (max(finished) + 1) if finished else 1
        last = cfg.run.rounds if rounds is None else min(cfg.run.rounds, first + rounds - 1)
        if first > cfg.run.rounds:
            self.log("info", f"all {cfg.run.rounds} rounds are done; raise run.rounds in config.toml to go on")
        for k in range(first, last + 1):
            if not self.round(k):
                break


def latest_adapter(folder: RunFolder, before: int) -> int | None:
    """The newest round < `before` that saved an adapter."""
    earlier = [k for k in folder.adapter_rounds() if k < before]
    return max(earlier) if earlier else None


def run(folder: RunFolder, *, rounds: int | None = None, quiet: bool = False,
        engine_factory: Callable = select.make) -> int:
    """Run (or resume) rounds until run.rounds are done, `rounds` more have run, or a stop. Exit code.
    `engine_factory(cfg)` returns (engine, why it was chosen)."""
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
                hand_back_large_blocks()  # before the model loads: the heap stays unfragmented from the start
                log("info", f"loading {cfg.model.name}")
                engine, why = engine_factory(cfg)
                log("info", f"engine {engine.name} on {engine.where}" + (f" ({why})" if why else ""),
                    engine=engine.name, reason=why)
                Loop(folder, cfg, store, log, controls, engine, mirror).rounds(rounds)
                return EXIT_OK
        except StageStopped:
            log("info", "stopped by request; run the same command to resume")
            return EXIT_STOPPED
        except SelfalignError:
            raise
        except Exception as exc:
            log("error", "traceback", event=False, traceback=traceback.format_exc())
            full = disk_full(exc)
            if full is not None:
                raise full from exc
            raise SelfalignError(f"{type(exc).__name__}: {exc} (traceback in {log.path}); fix the cause and run "
                                 "the same command to resume") from exc
        finally:
            if mirror is not None:  # every stage's end synced it; a resumed run copies the rest
                mirror.close()
            log.close()
            store.close()


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
    stages = store.stages(k)
    timings = {s.name: round(s.seconds, 2) for s in stages if s.seconds is not None}
    peaks = {s.name: round(s.peak_rss_mib) for s in stages if s.peak_rss_mib is not None}
    line = {"round": k, "metrics": metrics, "stage_seconds": timings, "stage_peak_mib": peaks,
            "pairs": len(store.pairs(k))}
    print(json.dumps(line), flush=True)

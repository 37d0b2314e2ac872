"""Unattended operation, as cron runs it: overlapping invocations and a SIGKILL in the middle of a stage."""

import os
import signal
import subprocess
import sys
import time

from test_loop import LOOP_SETS

from selfalign import config, runs
from selfalign.store import open_store

SETS = [*LOOP_SETS, "run.rounds=1", "instruct.prompts_per_round=8", "generate.max_new_tokens=200",
        "generate.batch_size=1", "model.max_context=1024"]  # many long single-row batches: a window to kill in


def headless(name, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "selfalign", "run", name, "--headless", "--rounds", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def make(tiny_model_dir, name):
    cfg = config.build(sets=[f"model.name={tiny_model_dir}", *SETS])
    return runs.create(name, config.dumps(cfg))


def counts(folder, k=1):
    with open_store(folder.db_path) as store:
        return {"prompts": store.count_prompts(split="train", round=k), "responses": store.count_responses(round=k),
                "judgements": len(store.judgements(round=k)), "pairs": len(store.pairs(k)),
                "steps": len(store.train_steps(k)), "status": store.round(k).status}


def samples(folder, k=1):
    """prompt id -> the sample indices the round's policy drew for it (training answers only)."""
    with open_store(folder.db_path) as store:
        return {pid: sorted(ix) for pid, ix in store.sample_indices(round=k, policy="base").items()}


def test_two_overlapping_invocations_one_runs_one_exits_busy(tiny_model_dir, runs_root):
    make(tiny_model_dir, "cron")
    first, second = headless("cron"), headless("cron")
    outcomes = sorted([(first.wait(timeout=300), first.stderr.read()), (second.wait(timeout=300),
                                                                          second.stderr.read())])
    (ok, _), (busy, message) = outcomes
    assert (ok, busy) == (0, 3)
    lines = [line for line in message.splitlines() if line.strip()]
    assert len(lines) == 1 and "is busy" in lines[0]


def test_sigkill_mid_stage_then_resume_matches_an_uninterrupted_run(tiny_model_dir, runs_root):
    whole = make(tiny_model_dir, "whole")
    assert headless("whole").wait(timeout=300) == 0

    killed = make(tiny_model_dir, "killed")
    proc = headless("killed")
    deadline = time.monotonic() + 300
    while True:  # kill once the generate stage has stored some responses but not all
        with open_store(killed.db_path) as store:
            stage = store.stage(1, "generate")
            if stage and stage.status == "running" and stage.done > 0:
                break
        assert proc.poll() is None and time.monotonic() < deadline, "generate never got under way"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open_store(killed.db_path) as store:
        assert store.stage(1, "generate").status == "running"  # left mid-stage
        partial = store.count_responses(round=1)
    assert 0 < partial < counts(whole)["responses"]

    assert headless("killed").wait(timeout=300) == 0
    # The resumed stage samples the missing answers in batches of another make-up, so their text (and what
    # depends on it: repaired copies, pairs, steps) may differ; what must match is the round's shape.
    assert [counts(f)[key] for f in (killed, whole) for key in ("prompts", "status")] == \
        [counts(whole)["prompts"], "done"] * 2
    assert samples(killed) == samples(whole) and samples(whole)
    k = config.build(sets=SETS).generate.samples_per_prompt
    assert all(indices == list(range(k)) for indices in samples(killed).values())  # K each, none twice
    assert counts(killed)["steps"] > 0 and counts(whole)["steps"] > 0

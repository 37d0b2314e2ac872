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


def contents(folder, k=1):
    """What a round stored, by content (ids and timings differ between runs): its prompts with their
    constraints, every response with its sample index and policy, the pairs by text, the training losses."""
    with open_store(folder.db_path) as store:
        text = {p.id: p.text for p in store.prompts()}
        responses = {r.id: r for r in store.responses(round=k)}
        return {
            "prompts": sorted((p.text, p.source, str(p.constraints)) for p in store.prompts(split="train", round=k)),
            "responses": sorted((text[r.prompt_id], r.policy, r.kind, r.sample_index, r.text, r.finish_reason)
                                for r in responses.values()),
            "pairs": sorted((text[p.prompt_id], responses[p.chosen_id].text, responses[p.rejected_id].text)
                            for p in store.pairs(k) if p.rejected_id is not None),
            "losses": [round(s.loss, 5) for s in store.train_steps(k)],
            "eval": {name: v for name, v in store.metrics(k)[k].items() if name.startswith("eval/")},
            "decisions": [(d.kind, d.reason) for d in store.decisions(k)],  # the controller's, from what is stored
        }


def kill_when(folder, proc, stage_name):
    """SIGKILL the run once `stage_name` has stored some of its work but not all."""
    deadline = time.monotonic() + 300
    while True:
        with open_store(folder.db_path) as store:
            stage = store.stage(1, stage_name)
            if stage and stage.status == "running" and stage.done > 0:
                break
        assert proc.poll() is None and time.monotonic() < deadline, f"{stage_name} never got under way"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open_store(folder.db_path) as store:
        assert store.stage(1, stage_name).status == "running"  # left mid-stage


def test_sigkill_mid_stage_then_resume_matches_an_uninterrupted_run(tiny_model_dir, runs_root):
    """Killed in the middle of instruct, then in the middle of generate, and resumed each time, the round
    stores the same rows as the same run left alone: the same prompts and constraints, the same samples
    (each sample draws from its own seed, and a prompt missing some is sampled whole again), so the same
    repaired copies, pairs, training losses, held-out figures and controller decisions."""
    whole = make(tiny_model_dir, "whole")
    assert headless("whole").wait(timeout=300) == 0
    again = make(tiny_model_dir, "again")
    assert headless("again").wait(timeout=300) == 0
    reference = contents(whole)
    assert contents(again) == reference  # an uninterrupted run is itself reproducible
    assert all(reference[key] for key in ("prompts", "responses", "pairs", "losses", "eval", "decisions"))

    killed = make(tiny_model_dir, "killed")
    kill_when(killed, headless("killed"), "instruct")
    kill_when(killed, headless("killed"), "generate")
    with open_store(killed.db_path) as store:
        partial = store.count_responses(round=1)
    assert 0 < partial < counts(whole)["responses"]
    assert headless("killed").wait(timeout=300) == 0
    assert counts(killed)["status"] == "done"
    k = config.build(sets=SETS).generate.samples_per_prompt
    assert all(indices == list(range(k)) for indices in samples(killed).values())  # K each, none twice
    assert contents(killed) == reference

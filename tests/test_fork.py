"""Forking a run on the tiny model: the copy keeps the work before the fork point and nothing after it,
the loop goes on from there with the new setting, and settings the kept work did not use are refused."""

import subprocess
import sys

import pytest

from selfalign import config, loop, runs
from selfalign.errors import EXIT_OK
from selfalign.store import open_store

SIZES = ["instruct.prompts_per_round=3", "instruct.seed_prompts_per_round=3", "instruct.max_new_tokens=24",
         "generate.max_new_tokens=10", "train.batch_size=2", "train.epochs=1", "eval.prompts=4",
         "eval.max_new_tokens=6", "model.max_context=768", "run.rounds=2", "pairs.min_margin=0.0"]


def cli(*args):
    return subprocess.run([sys.executable, "-m", "selfalign", *args], capture_output=True, text=True)


def snapshot(folder, k):
    """What a fork at k:pairs must keep from round k: prompts, samples and their verifications."""
    with open_store(folder.db_path) as store:
        samples = sorted((r.id, r.text) for r in store.responses(round=k) if r.kind != "repair"
                         and r.prompt_id in {p.id for p in store.prompts(split="train", round=k)})
        checked = {rid: store.verifications(rid) for rid, _ in samples}
        return {"prompts": sorted(p.text for p in store.prompts(split="train", round=k)), "samples": samples,
                "verifications": checked}


@pytest.fixture
def source(tiny_model_dir, runs_root):
    cfg = config.build(sets=[f"model.name={tiny_model_dir}", *SIZES])
    folder = runs.create("source", config.dumps(cfg))
    assert loop.run(folder, quiet=True) == EXIT_OK
    return folder


def test_fork_at_pairs_keeps_the_samples_drops_the_rest_and_goes_on(source, runs_root):
    before = snapshot(source, 1)
    result = cli("init", "fork", "--fork", "source", "--at", "1:pairs", "--set", "pairs.rejected=finished")
    assert result.returncode == 0, result.stderr
    fork = runs.locate("fork")
    assert 'rejected = "finished"' in fork.config_path.read_text()
    with open_store(fork.db_path) as store:
        assert store.run_info().name == "fork" and "fork of source at round 1, stage pairs" in store.run_info().note
        assert [r.k for r in store.rounds()] == [0, 1] and store.round(1).status == "running"
        assert [s.name for s in store.stages(1)] == ["instruct", "generate", "judge", "correct"]
        assert not store.pairs(1) and not store.train_steps(1)
        assert not [r for r in store.responses(round=1) if r.kind == "repair"]
        assert not store.responses(round=2) and not store.prompts(split="train", round=2)
        names = set(store.metrics(1).get(1, {}))
        assert names and not {n for n in names if n.split("/")[0] in ("pairs", "train", "eval")}
        assert "eval/csr_prompt" in store.metrics(0)[0]  # round 0's evaluation is kept
        assert not store.decisions() or all(d.round < 1 for d in store.decisions())
    assert snapshot(fork, 1) == before
    assert not fork.round_dir(1).exists()  # the adapter is trained again
    with open_store(source.db_path) as store:  # the source is untouched
        assert [r.k for r in store.rounds()] == [0, 1, 2] and store.pairs(1)

    assert loop.run(fork, quiet=True) == EXIT_OK
    assert snapshot(fork, 1) == before  # generate was not run again
    with open_store(fork.db_path) as store:
        assert [r.status for r in store.rounds()] == ["done", "done", "done"]
        assert store.train_steps(1) and fork.adapter_dir(1).is_dir() and fork.adapter_dir(2).is_dir()
        assert {s.name for s in store.stages(2)} == set(loop.STAGES)
        assert any("forked from run 'source'" in e.message for e in store.events())


REFUSED = [
    (["--at", "1:pairs", "--set", "generate.max_new_tokens=5"], "belongs to the generate stage"),
    (["--at", "1:pairs", "--set", "model.name=other"], "changes every stage"),
    (["--at", "3:pairs"], "has no finished instruct stage"),
    (["--at", "one:pairs"], "is not ROUND:STAGE"),
    (["--at", "1:nonsense"], "is not ROUND:STAGE"),
    ([], "needs --at"),
]


def test_fork_at_evaluate_keeps_the_adapter_and_bad_forks_are_refused(source, runs_root):
    assert cli("init", "late", "--fork", "source", "--at", "1:evaluate").returncode == 0
    fork = runs.locate("late")
    assert fork.adapter_dir(1).is_dir() and not fork.round_dir(2).exists()
    with open_store(fork.db_path) as store:
        assert store.train_steps(1) and store.pairs(1)
        assert not [r for r in store.responses(round=1) if store.prompt(r.prompt_id).split == "heldout"]
    for args, message in REFUSED:
        result = cli("init", "bad", "--fork", "source", *args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1
        assert not (runs_root / "bad").exists() and not list(runs_root.glob(".bad*"))


def test_a_round_with_pairs_but_no_adapter_exports_its_pairs_and_refuses_to_merge(source, runs_root):
    assert cli("init", "untrained", "--fork", "source", "--at", "1:train").returncode == 0
    fork = runs.locate("untrained")
    assert not fork.adapter_dir(1).is_dir()
    refused = cli("export", "untrained", "--round", "1", "--merged")
    assert refused.returncode != 0 and "has no adapter to merge" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not (fork.path / "export").exists()  # refused before anything was written
    assert cli("export", "untrained", "--round", "1").returncode == 0
    target = fork.path / "export" / "1"
    assert (target / "pairs.jsonl").read_text().strip() and not (target / "adapter").exists()

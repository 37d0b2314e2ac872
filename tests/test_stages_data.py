"""Stages instruct and generate on the tiny model, read back from the real database; resume after kill."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from selfalign import verifiers
from selfalign.rouge import RougeIndex
from selfalign.stages import StageContext, StageStopped
from selfalign.stages import generate as generate_stage
from selfalign.stages import instruct as instruct_stage
from selfalign.stages.instruct import extract_instruction, reject_reason


def test_instruct_then_generate_on_the_tiny_model(tiny_run):
    folder, cfg, store, engine = tiny_run()
    ctx = StageContext(cfg, store, engine, round=1, run_dir=folder.path)
    store.start_round(1, None)
    store.start_stage(1, "instruct")
    instruct_stage.run(ctx)

    heldout = store.prompts(split="heldout")
    assert len(heldout) >= 150 and all(p.source == "heldout" for p in heldout)
    seeds = store.prompts(split="train", round=1, source="seed")
    assert len(seeds) == 4
    made = store.prompts(split="train", round=1, source="self")
    assert len(made) <= 6
    index = RougeIndex()
    for p in heldout + seeds:
        index.add(p.text)
    for p in made:  # whatever the gibberish model wrote and was kept passes every filter
        assert 4 <= len(p.text.split()) <= 150 and not index.is_near_duplicate(p.text, 0.7)
        index.add(p.text)
    for p in seeds + made:
        assert verifiers.compatible([c["id"] for c in p.constraints]) and len(p.constraints) <= 3
    (event,) = [e for e in store.events() if e.stage == "instruct"]
    assert event.data["kept"] == len(made) and event.data["target"] == 6
    assert store.stage(1, "instruct").done == len(made)

    store.start_stage(1, "generate")
    generate_stage.run(ctx)
    train = store.prompts(split="train", round=1)
    responses = store.responses(round=1)
    assert len(responses) == 3 * len(train)
    assert store.sample_indices(1, "base") == {p.id: {0, 1, 2} for p in train}
    for r in responses:
        assert r.finish_reason in {"stop", "length", "stop_string"} and r.policy == "base"
        assert 0 <= r.tokens <= 12 and r.duration_s >= 0
        assert r.params["temperature"] == 0.7 and r.params["prompting"] == "chat"
        assert r.mean_logprob is None if r.tokens == 0 else r.mean_logprob < 0
    assert store.stage(1, "generate").done == len(responses)
    generate_stage.run(ctx)  # nothing missing: nothing added
    assert store.count_responses(round=1) == len(responses)


def test_urial_prompting_uses_the_template_and_its_stops(tiny_run):
    folder, cfg, store, engine = tiny_run(sets=["run.prompting=urial", "instruct.prompts_per_round=0"])
    seen = []
    original = engine.generate

    def spy(requests, **kwargs):
        seen.extend(requests)
        return original(requests, **kwargs)

    engine.generate = spy
    ctx = StageContext(cfg, store, engine, round=1, run_dir=folder.path)
    instruct_stage.run(ctx)
    generate_stage.run(ctx)
    assert seen and all(r.messages is None and r.prompt.count("# Query:") == 4 for r in seen)
    assert all("# Query:" in r.stop for r in seen)
    assert {r.params["prompting"] for r in store.responses(round=1)} == {"urial"}


def test_a_stop_request_ends_generate_while_it_decodes(tiny_run, monkeypatch):
    from selfalign.engines import transformers_engine

    monkeypatch.setattr(transformers_engine, "STOP_CHECK_S", 0.0)  # ask at every step, not once a second
    folder, cfg, store, engine = tiny_run(sets=["generate.batch_size=3"])
    ctx = StageContext(cfg, store, engine, round=1, run_dir=folder.path)
    instruct_stage.run(ctx)
    ctx.should_stop = lambda: store.count_responses(round=1) > 0  # stop once the first answer is stored
    with pytest.raises(StageStopped):
        generate_stage.run(ctx)
    assert 0 < store.count_responses(round=1) < 3 * store.count_prompts(split="train", round=1)



def test_instruct_progress_moves_while_the_policy_writes(runs_root):
    """Each kept instruction is reported the moment its answer comes back, not when the whole batch is done:
    a real policy server (127.0.0.1) writes distinct instructions; the bar moves in steps of one."""
    import itertools

    from test_http import Scripted

    from selfalign import config, runs
    from selfalign.engines.http_engine import HttpClient, HttpEngine
    from selfalign.store import open_store

    counter = itertools.count()

    def write(body):
        n = next(counter)
        return "Describe " + " ".join(f"w{n}{c}" for c in "abcdef") + " briefly."  # no word shared but two

    server = Scripted(respond=write)
    try:
        cfg = config.build(sets=["instruct.prompts_per_round=20", "instruct.seed_prompts_per_round=0",
                                 "generate.batch_size=64"])
        folder = runs.create("progress", config.dumps(cfg))
        engine = HttpEngine(HttpClient(server.url, "policy", concurrency=2), load_adapters=False)
        with open_store(folder.db_path) as store:
            reports = []  # (kept so far, requests the server had received by then)
            ctx = StageContext(cfg, store, engine, round=1, run_dir=folder.path,
                               progress=lambda stage, done, total: reports.append((done, len(server.received))))
            instruct_stage.run(ctx)
            assert store.count_prompts(split="train", round=1, source="self") == 20
    finally:
        server.close()
    kept = [done for done, _ in reports]
    assert kept == list(range(21))  # 0 at the start, then one step per kept instruction
    requested = 20 * instruct_stage.OVERSAMPLE + 2
    assert reports[1][1] < requested / 2  # the first one was reported while most of the batch was still to come


@pytest.mark.parametrize("reply, expected", [
    ("Task 4: Describe the life cycle of a frog.", "Describe the life cycle of a frog."),
    ("Here is a new task:\n\n**New task:** Plan a picnic for six people.", "Plan a picnic for six people."),
    ('"Summarize the history of tea."\nAnswer: tea is...', "Summarize the history of tea."),
    ("4. List three uses for baking soda.", "List three uses for baking soda."),
    ("", ""),
])
def test_extract_instruction(reply, expected):
    assert extract_instruction(reply) == expected


def test_reject_reasons():
    index = RougeIndex()
    index.add("Write a short poem about the first frost of autumn.")
    assert reject_reason("Hi there", index, 4, 150, 0.7) == "too short"
    assert reject_reason("word " * 151, index, 4, 150, 0.7) == "too long"
    assert reject_reason("Write Task 5: something else entirely now", index, 4, 150, 0.7) == "leaks the template"
    assert reject_reason("Write a short poem about the first frost of autumn!", index, 4, 150, 0.7) == "near-duplicate"
    assert reject_reason("Here is a list of all the different tasks:", index, 4, 150, 0.7) == "incomplete"
    assert reject_reason("Explain how tides depend on the moon.", index, 4, 150, 0.7) is None


def test_constraint_share_is_respected():
    from selfalign import config

    cfg = config.build(sets=["instruct.constraint_share=0.5", "instruct.max_constraints=2"])
    rng = random.Random(3)
    drawn = [instruct_stage.attach_constraints(rng, cfg) for _ in range(1000)]
    share = sum(1 for d in drawn if d) / len(drawn)
    assert 0.45 < share < 0.55 and max(len(d) for d in drawn) == 2


RUN_GENERATE = textwrap.dedent("""
    import sys
    from selfalign import config
    from selfalign.engines.transformers_engine import TransformersEngine
    from selfalign.runs import RunFolder
    from selfalign.stages import StageContext
    from selfalign.stages import generate
    from selfalign.store import open_store
    folder = RunFolder(__import__("pathlib").Path(sys.argv[1]))
    cfg = config.load(folder.config_path)
    engine = TransformersEngine.load(cfg.model.name, device="cpu", batch_size=2)
    with open_store(folder.db_path) as store:
        generate.run(StageContext(cfg, store, engine, round=1, run_dir=folder.path))
    print("finished", flush=True)
""")


def test_killed_generate_resumes_without_duplicates_or_gaps(tiny_run):
    folder, cfg, store, engine = tiny_run(sets=["generate.samples_per_prompt=4", "generate.max_new_tokens=48",
                                               "generate.batch_size=2", "instruct.prompts_per_round=0",
                                               "instruct.seed_prompts_per_round=20"])
    instruct_stage.run(StageContext(cfg, store, engine, round=1, run_dir=folder.path))
    expected = 4 * store.count_prompts(split="train", round=1)
    assert expected == 80
    proc = subprocess.Popen([sys.executable, "-c", RUN_GENERATE, str(folder.path)], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while store.count_responses(round=1) < 12 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = store.count_responses(round=1)
    assert 12 <= partial < expected, "the stage finished before it could be killed; make it slower"
    done = subprocess.run([sys.executable, "-c", RUN_GENERATE, str(folder.path)], capture_output=True, text=True)
    assert "finished" in done.stdout, done.stderr
    rows = store.db.execute("SELECT prompt_id, sample_index, count(*) FROM responses WHERE round = 1 "
                            "GROUP BY prompt_id, sample_index").fetchall()
    assert len(rows) == expected and all(count == 1 for _, _, count in rows)
    assert {index for _, index, _ in rows} == {0, 1, 2, 3}


def test_a_run_trains_on_the_users_own_tasks_and_never_on_one_near_a_held_out_prompt(runs_root):
    """instruct.seed_file of one's own with prompts_per_round = 0: each round takes the next unused tasks,
    a rerun (resume) takes nothing more, and a task copied from the held-out benchmark is left out, said so."""
    import json

    from selfalign import config, runs
    from selfalign.store import open_store

    cfg = config.build(sets=["instruct.seed_file=my_tasks.jsonl", "instruct.prompts_per_round=0",
                             "instruct.seed_prompts_per_round=3"])
    folder = runs.create("own-tasks", config.dumps(cfg))
    heldout = json.loads((Path(__file__).parent.parent / "prompts" / "heldout.jsonl").read_text().splitlines()[0])
    tasks = [heldout["prompt"], "Describe the sound of gravel under tyres.", "Explain how a kettle switches off.",
             "Plan a picnic for six friends.", "Name three facts about moss.", "Sort by length: a, abc, ab."]
    (folder.path / "prompts").mkdir()
    lines = "".join(json.dumps({"instruction": t}) + "\n" for t in tasks)
    (folder.path / "prompts" / "my_tasks.jsonl").write_text(lines)
    with open_store(folder.db_path) as store:
        for k in (1, 2):
            store.start_round(k, None)
            ctx = StageContext(cfg, store, None, round=k, run_dir=folder.path)
            instruct_stage.run(ctx)
            instruct_stage.run(ctx)  # a rerun (resume) takes nothing more
        first = [p.text for p in store.prompts(split="train", round=1)]
        second = [p.text for p in store.prompts(split="train", round=2)]
        assert len(first) == 3 and len(second) == 2 and not set(first) & set(second)
        assert set(first + second) == set(tasks[1:])  # every task once, the held-out one never
        assert all(p.source == "seed" and p.constraints for p in store.prompts(split="train"))
        warned = [e for e in store.events() if e.stage == "instruct" and e.level == "warning"]
        assert warned and warned[0].data["near_heldout"] == 1 and "never trained on" in warned[0].message


def test_a_run_folder_written_with_the_retired_bank_key_still_loads_unless_it_used_a_bank(tmp_path):
    from selfalign import config
    from selfalign.errors import ConfigError

    path = tmp_path / "config.toml"
    text = config.dumps(config.build()).replace("[instruct]\n", '[instruct]\nbank = ""\n')
    path.write_text(text)
    assert "bank" in text and config.load(path) == config.build()
    path.write_text(text.replace('bank = ""', 'bank = "train_tasks.jsonl"'))
    with pytest.raises(ConfigError, match="instruct.bank = 'train_tasks.jsonl' was removed; set instruct.seed_file"):
        config.load(path)

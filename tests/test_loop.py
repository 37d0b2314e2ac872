"""The round loop on the tiny model: every recipe end to end, resume, controls, exit codes, eval, export."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_http import Scripted

from selfalign import config, evaluation, heldout, loop, runs, verifiers
from selfalign.errors import EXIT_OK, EXIT_STOPPED
from selfalign.store import open_store
from selfalign.store.rows import MIRROR

LOOP_SETS = ["instruct.prompts_per_round=2", "instruct.seed_prompts_per_round=3", "instruct.max_new_tokens=24",
             "generate.max_new_tokens=10", "generate.batch_size=16", "judge.max_new_tokens=8",
             "judge.position_bias_pairs=2", "train.batch_size=2", "train.epochs=1", "eval.prompts=4",
             "eval.max_new_tokens=8", "model.max_context=768", "run.rounds=2", "pairs.min_margin=0.0",
             # the full self-reward loop: rubric self-judge and win rate on (the default leaves both off)
             "judge.rubric=additive5", "eval.win_rate=true", "instruct.constraint_share=0.6"]


def make_run(tiny_model_dir, name, recipe="self-reward", *extra):
    sets = LOOP_SETS if recipe == "self-reward" else [s for s in LOOP_SETS if not s.startswith("judge.rubric=")]
    cfg = config.build(sets=[f"model.name={tiny_model_dir}", *sets, *extra], recipe=recipe)
    return runs.create(name, config.dumps(cfg))


def check_tables(folder, rounds, recipe):
    with open_store(folder.db_path) as store:
        assert [r.k for r in store.rounds()] == list(range(rounds + 1))
        assert all(r.status == "done" for r in store.rounds())
        for k in range(1, rounds + 1):
            assert {s.name for s in store.stages(k)} == set(loop.STAGES)
            assert all(s.status == "done" for s in store.stages(k))
            assert store.count_prompts(split="train", round=k) >= 3
            assert store.count_responses(round=k) > 0
            assert store.judgements(round=k)
            metrics = store.metrics(k)[k]
            assert "eval/length_mean" in metrics and "pairs/count" in metrics
            # a round with pairs trains and saves an adapter; one without builds neither
            trained = bool(store.pairs(k))
            assert bool(store.train_steps(k)) == folder.adapter_dir(k).is_dir() == trained
            assert (folder.adapter_dir(k) / "selfalign_config.toml").is_file() == trained
        assert any(store.pairs(k) for k in range(1, rounds + 1)), "no round built a pair: nothing was trained"
        assert "eval/csr_instruction" in store.metrics(0)[0]
        assert any(e.stage == "train" for e in store.events())
        done = [e for e in store.events() if e.message.startswith("done in ")]
        # each stage reports its own peak memory (Linux: the high-water mark, reset at its start)
        assert done and all(e.data["peak_rss_mib"] > 50 and "peak memory" in e.message for e in done)
        peaks = {(e.round, e.stage): e.data["peak_rss_mib"] for e in done}  # and the stages table keeps it
        assert {(s.round, s.name): s.peak_rss_mib for s in store.stages()} == peaks
    logs = list(folder.logs_dir.glob("*.jsonl"))
    assert logs and all(json.loads(line)["message"] for line in logs[0].read_text().splitlines())


def test_self_reward_two_rounds_then_eval_and_export(tiny_model_dir, runs_root, capsys):
    folder = make_run(tiny_model_dir, "sr")
    assert loop.run(folder, quiet=True) == EXIT_OK
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["round"] for line in lines] == [0, 1, 2]
    assert "generate" in lines[1]["stage_seconds"] and "eval/csr_prompt" in lines[1]["metrics"]
    check_tables(folder, 2, "self-reward")
    with open_store(folder.db_path) as store:
        assert store.pairs(1), "the combined judge should separate some responses"
        # round 2 sampled from round 1's adapter
        assert store.round(2).policy_adapter == "rounds/1/adapter"
        sampled = [r for r in store.responses(round=2) if r.kind == "sample"]
        assert {r.policy for r in sampled} == {"rounds/1/adapter"}  # round 2 samples from round 1's adapter
        evaluated = {r.policy for r in store.responses(round=2) if r.kind == "eval"}
        assert evaluated == {"rounds/2/adapter"}  # and is evaluated with its own
        assert {r.policy for r in store.responses(round=2) if r.kind == "repair"} <= {"rounds/1/adapter"}
        assert store.heartbeat()[0] == os.getpid()  # the loop's heartbeat thread wrote its pid
    assert loop.run(folder, quiet=True) == EXIT_OK  # all rounds done: nothing to do

    result = evaluation.evaluate_round(folder, None)
    metrics, k = result.metrics, result.round
    assert k == 2 and "eval/win_rate" in metrics and "eval/win_rate_decided" in metrics
    text = evaluation.render_metrics(metrics, k, "sr", "md")
    assert "| eval/csr_prompt |" in text

    from selfalign.export import export_round

    target = export_round(folder, 1, merged=True)
    rows = [json.loads(line) for line in (target / "pairs.jsonl").read_text().splitlines()]
    assert rows and {"prompt", "chosen", "rejected"} <= rows[0].keys()
    assert rows[0]["prompt"][0]["role"] == "user" and rows[0]["chosen"][0]["role"] == "assistant"
    assert (target / "adapter" / "adapter_config.json").is_file()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(target / "merged")  # plain transformers loads it


def test_isheep_two_rounds(tiny_model_dir, runs_root, monkeypatch):
    """A random tiny model never writes a parseable '<score>||<explanation>', so no answer would pass the
    filter and nothing would train: its judge replies are read as 9 on both scales (what a larger judge
    says of a good answer), and the quality gate is off (its answers are all cut off at 10 tokens), so the
    loop keeps answers and SFTs on them for real."""
    from selfalign import judging

    real = judging.parse_score
    monkeypatch.setattr(judging, "parse_score",
                        lambda text, rubric: 9.0 if rubric.startswith("isheep") else real(text, rubric))
    folder = make_run(tiny_model_dir, "ish", "isheep", "pairs.sft_min_score=9.0", "pairs.quality_gate=false")
    assert loop.run(folder, quiet=True) == EXIT_OK
    check_tables(folder, 2, "isheep")
    with open_store(folder.db_path) as store:
        rubrics = {j.rubric for j in store.judgements(round=1)}
        assert {"isheep_quality", "isheep_following"} <= rubrics
        assert all(p.rule == "sft" and p.rejected_id is None for p in store.pairs(1))


def test_cyclealign_two_rounds_with_a_black_box(tiny_model_dir, runs_root):
    server = Scripted([("ok", "[1] > [2] > [3] > [4]")] * 200)
    try:
        folder = make_run(tiny_model_dir, "cyc", "cyclealign", f"judge.blackbox_url={server.url}")
        assert loop.run(folder, quiet=True) == EXIT_OK
        check_tables(folder, 2, "cyclealign")
        with open_store(folder.db_path) as store:
            assert all(p.rule == "ranked" for p in store.pairs(1))
            assert store.demonstrations(5)
    finally:
        server.close()


def test_rounds_option_and_a_stop_request(tiny_model_dir, runs_root):
    folder = make_run(tiny_model_dir, "stepwise")
    assert loop.run(folder, rounds=1, quiet=True) == EXIT_OK
    with open_store(folder.db_path) as store:
        assert [r.k for r in store.rounds()] == [0, 1]
        store.request_control("stop")
    assert loop.run(folder, quiet=True) == EXIT_STOPPED
    with open_store(folder.db_path) as store:
        assert store.controls()[0].handled
        assert store.round(2).status == "running"
        stopped = [s for s in store.stages(2) if s.status == "stopped"]
        assert stopped
    assert loop.run(folder, quiet=True) == EXIT_OK  # resumes where it stopped
    check_tables(folder, 2, "self-reward")


def test_headless_cli_exit_codes(tiny_model_dir, runs_root):
    folder = make_run(tiny_model_dir, "cli", "self-reward", "run.rounds=1")
    with folder.lock():
        busy = subprocess.run([sys.executable, "-m", "selfalign", "run", "cli", "--headless"], capture_output=True,
                              text=True)
    assert busy.returncode == 3 and "is busy" in busy.stderr
    done = subprocess.run([sys.executable, "-m", "selfalign", "run", "cli", "--headless"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert "progress: [round 1 generate]" in done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["round"] == 1
    ev = subprocess.run([sys.executable, "-m", "selfalign", "eval", "cli", "--round", "0", "--format", "json"],
                        capture_output=True, text=True)
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)["round"] == 0
    bad = subprocess.run([sys.executable, "-m", "selfalign", "eval", "cli", "--round", "7"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "has no adapter" in bad.stderr


@pytest.mark.parametrize("name", ["ghost"])
def test_run_on_a_missing_run(name, runs_root):
    result = subprocess.run([sys.executable, "-m", "selfalign", "run", name, "--headless"], capture_output=True,
                            text=True)
    assert result.returncode == 1 and "no run named 'ghost'" in result.stderr


def test_a_failing_stage_is_recorded_and_the_run_resumes_once_fixed(tiny_model_dir, runs_root):
    from selfalign.errors import ConfigError

    folder = make_run(tiny_model_dir, "broken", "self-reward", "run.rounds=1", "instruct.seed_file=missing.jsonl")
    with pytest.raises(ConfigError, match="missing.jsonl"):
        loop.run(folder, quiet=True)
    with open_store(folder.db_path) as store:
        stage = store.stage(1, "instruct")
        assert stage.status == "failed" and "missing.jsonl" in stage.error
        assert store.stage(0, "evaluate").status == "done"
    folder.config_path.write_text(folder.config_path.read_text().replace("missing.jsonl", "seed_tasks.jsonl"))
    assert loop.run(folder, quiet=True) == EXIT_OK
    with open_store(folder.db_path) as store:
        assert store.stage(1, "instruct").status == "done" and store.round(1).status == "done"


def test_default_recipe_end_to_end_then_whole_benchmark_eval_with_paired_gain(tiny_model_dir, runs_root):
    """The shipped default (verifier-weighted signals, every prompt constrained, no rubric self-judge, no
    win rate), only made small; then `selfalign eval --all` answers the whole held-out benchmark with
    round 1 and round 0 and prints the paired gain with its interval."""
    sizes = ["instruct.prompts_per_round=3", "instruct.seed_prompts_per_round=3", "instruct.max_new_tokens=24",
             "generate.max_new_tokens=10", "train.batch_size=2", "train.epochs=1", "eval.prompts=6",
             "eval.max_new_tokens=6", "model.max_context=768", "run.rounds=1", "pairs.min_margin=0.0"]
    cfg = config.build(sets=[f"model.name={tiny_model_dir}", *sizes])
    assert cfg.judge.rubric == "none" and not cfg.eval.win_rate and cfg.instruct.constraint_share == 1.0
    assert cfg.pairs.repair and cfg.train.sft_weight == 1.0
    folder = runs.create("default", config.dumps(cfg))
    assert loop.run(folder, quiet=True) == EXIT_OK
    with open_store(folder.db_path) as store:
        everything = store.prompts(split="train", round=1)
        prompts = [p for p in everything if p.source != MIRROR]  # mirror prompts (pairs.mirror) come from pairs
        assert prompts and all(p.constraints for p in prompts)
        assert all(c["wording"].startswith("t") for p in prompts for c in p.constraints)  # training wordings only
        assert not [j for j in store.judgements(round=1) if j.judge == "self"]  # no rubric self-judge
        metrics = store.metrics(1)[1]
        assert {"pairs/weight_likelihood", "pairs/weight_verifiers"} <= set(metrics)
        assert 0.0 <= metrics["pairs/weight_likelihood"] <= 0.5
        assert store.pairs(1)
        for p in store.pairs(1):  # every pair is ordered by the verifiers first
            assert p.scores["chosen"]["verifiers"] >= p.scores["rejected"]["verifiers"]
        by_id = {r.id: r for r in store.responses(round=1)}
        prompts_by_id = {p.id: p for p in prompts}
        mirrors = {p.id for p in everything if p.source == MIRROR}
        copies = [r for r in by_id.values() if r.kind == "repair" and r.prompt_id not in mirrors]
        assert all("mirror_of" in r.params for r in by_id.values() if r.prompt_id in mirrors)
        # every prompt the stage tried to repair is counted, and each stored copy is one it made
        assert len(copies) == round((metrics["pairs/repair_rate"] or 0) * metrics["pairs/repair_tried"])
        for copy in copies:  # a repaired copy meets everything
            assert all(verifiers.check_all(prompts_by_id[copy.prompt_id].constraints, copy.text).values())
            assert by_id[copy.params["repaired_from"]].prompt_id == copy.prompt_id
        assert metrics["eval/csr_prompt_low"] <= metrics["eval/csr_prompt"] <= metrics["eval/csr_prompt_high"]
        trained = {p.text for p in store.prompts(split="train")}
    rows = [json.loads(line) for line in (Path(__file__).parent.parent / "prompts" / "heldout.jsonl").read_text()
            .splitlines()]
    heldout_texts = {row["prompt"] for row in rows}
    assert not trained & heldout_texts
    with open_store(folder.db_path) as store:
        # the loop's stored figures are what `selfalign eval` computes from the same answers, to the bit
        for k in (0, 1):
            stored = {name: v for name, v in store.metrics(k)[k].items() if name.startswith("eval/")
                      and not name.startswith("eval/win_rate")}
            recomputed = heldout.eval_metrics(heldout.round_figures(list(heldout.answers(store, k).values())))
            assert stored == {name: v for name, v in recomputed.items() if v is not None or name in stored}
            assert "eval/unasked_form_rate" in stored and "eval/unasked/quoted" in stored
        assert not store.prompts(source="test")  # the loop never reads the test split

    result = subprocess.run([sys.executable, "-m", "selfalign", "eval", "default", "--all", "--format", "json"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["round"] == 1 and data["against"] == 0
    constrained = sum(1 for row in rows if row["constraints"])
    assert data["figures"]["n"] == constrained == data["gain"]["n"]  # satisfaction: the constrained prompts
    assert data["figures"]["unasked"]["n"] == len(heldout_texts)  # unasked forms: every answer
    assert data["figures"]["n_plain"] == len(heldout_texts) - constrained > 0
    assert data["baseline"]["unasked"]["n"] == len(heldout_texts)  # round 0's, beside
    gain = data["gain"]["csr_prompt"]
    assert gain["low"] <= gain["value"] <= gain["high"]
    with open_store(folder.db_path) as store:
        assert store.metrics(1)[1]["eval/csr_prompt"] == metrics["eval/csr_prompt"]  # the loop's figures stay
    md = subprocess.run([sys.executable, "-m", "selfalign", "eval", "default", "--all"], capture_output=True,
                        text=True)
    assert md.returncode == 0 and "gain over round 0" in md.stdout and "| max_words |" in md.stdout
    assert "| any marked form |" in md.stdout and "| quoted * |" in md.stdout

    # the test split: answered whole, on request only, stored apart, and never the round's metrics
    test = subprocess.run([sys.executable, "-m", "selfalign", "eval", "default", "--split", "test", "--format", "json"],
                          capture_output=True, text=True)
    assert test.returncode == 0, test.stderr
    data = json.loads(test.stdout)
    test_rows = [json.loads(line) for line in (Path(__file__).parent.parent / "prompts" / "test.jsonl").read_text()
                 .splitlines()]
    assert data["figures"]["n"] == sum(1 for row in test_rows if row["constraints"]) == data["gain"]["n"]
    with open_store(folder.db_path) as store:
        assert {p.text for p in store.prompts(source="test")} == {row["prompt"] for row in test_rows}
        assert store.metrics(1)[1]["eval/csr_prompt"] == metrics["eval/csr_prompt"]

"""The learned corrector (Aligner): what a correction did, judged by the verifiers; a real LoRA corrector trained
on a tiny run's stored triples, applied to held-out answers and resumed, and `selfalign correct` on a file."""

import json

import pytest
from click.testing import CliRunner

from selfalign import heldout, verifiers
from selfalign.cli import cli
from selfalign.correction import corrector, measure, outcomes
from selfalign.store.rows import CORRECTION, EVAL, NewPair, NewPrompt, NewResponse

LOWER = [{"id": "lowercase", "params": {}}]
WORDS = [{"id": "keywords", "params": {"keywords": ["river"]}}]
Q = "Describe a walk."


def test_an_outcome_says_what_a_correction_did():
    fix = outcomes.assess(Q, LOWER, "The Walk Was Long and quiet today.", "the walk was long and quiet today.", "stop")
    assert (fix.before, fix.after, fix.noop, fix.usable) == (False, True, False, True)  # case alone is a change
    same = outcomes.assess(Q, LOWER, "the walk was long.", "the walk  was long.", "stop")
    assert same.noop and same.before and same.after
    echo = outcomes.assess(Q, LOWER, "a walk by the lake.", "Request:\ndescribe a walk.", "stop")
    assert echo.echo and not echo.usable
    words = "we walked along the river for an hour and saw herons, ducks and a boat"
    gutted = outcomes.assess(Q, WORDS, words, "the river.", "stop")
    assert gutted.gutted and gutted.after and not gutted.usable
    trimmed = outcomes.assess(Q, [{"id": "max_words", "params": {"n": 5}}], words, "We walked by the river.", "stop")
    assert not trimmed.gutted and trimmed.usable  # a prompt that asks for fewer words lets it cut
    quoted = outcomes.assess(Q, WORDS, "A walk by the river.", '"A walk by the river."', "stop")
    assert quoted.added_forms == ("quoted",) and not quoted.usable
    looped = outcomes.assess(Q, WORDS, "A walk.", "by the river " * 40, "length")
    assert looped.degenerate and not looped.usable and not looped.kept_after
    s = outcomes.summary([fix, same, quoted, outcomes.assess(Q, LOWER, "ok, thanks.", "Ok, thanks.", "stop")])
    assert (s["failing"], s["fixed"], s["passing"], s["broken"]) == (1, 1, 3, 1)
    assert s["fix_rate"] == 1.0 and s["break_rate"] == pytest.approx(1 / 3) and s["noop_share"] == 0.25
    assert s["per_type"]["lowercase"] == {"missed": 1, "fixed": 1, "met": 2, "broken": 1}  # quoted one not usable


def _stored_run(tiny_run):
    """A tiny run with one finished round's data: repaired copies, a close pair, clean answers, held-out answers."""
    folder, cfg, store, engine = tiny_run("corr", sets=["train.epochs=1", "train.batch_size=4"])
    store.start_round(1, None)
    prompts = [("Greet me.", LOWER), ("Name a river.", WORDS), ("Greet my friend.", LOWER)]
    pids = store.add_prompts([NewPrompt(t, "self", constraints=c, round=1) for t, c in prompts])
    for i, pid in enumerate(pids):
        loud = store.add_response(NewResponse(pid, 1, "base", 0, f"Hello There number {i}.", 5, "stop", -1.0))
        store.add_response(NewResponse(pid, 1, "base", 0, f"hello there number {i}.", 5, "stop", None,
                                       {"repaired_from": loud}, kind="repair"))
        good = store.add_response(NewResponse(pid, 1, "base", 1, f"the river {i} runs, hello.", 5, "stop", -1.0))
        near = store.add_response(NewResponse(pid, 1, "base", 2, f"The river {i} runs, hello.", 5, "stop", -1.0))
        store.add_pair(NewPair(1, pid, good, near, 1.0, "best-vs-worst"))
    held = store.add_prompts([NewPrompt(f"Say hi to {n}.", "heldout", "heldout", LOWER) for n in ("Ann", "Bo", "Cy")])
    for pid in held:
        store.add_response(NewResponse(pid, 1, "rounds/1/adapter", 0, "Hi There, Friend.", 5, "stop", -1.0, kind=EVAL))
    return folder, cfg, store, engine, held


def test_a_corrector_trains_on_stored_triples_corrects_held_out_answers_and_resumes(tiny_run):
    folder, cfg, store, engine, held = _stored_run(tiny_run)
    adapter = corrector.train_corrector(folder, cfg, store, engine, 1)
    assert adapter == corrector.adapter_dir(folder, 1) and (adapter / "adapter_config.json").is_file()
    counts = json.loads((adapter.parent / "triples.json").read_text())
    assert counts["repair"] == 3 and counts["pair"] == 3 and counts["triples"] == 6 + counts["identity"]
    stamp = (adapter / "adapter_model.safetensors").stat().st_mtime_ns
    assert corrector.train_corrector(folder, cfg, store, engine, 1) == adapter  # trained once, then reused
    assert (adapter / "adapter_model.safetensors").stat().st_mtime_ns == stamp
    assert corrector.latest(folder) == 1

    before = list(heldout.answers(store, 1).values())
    seen = []
    corrected = measure.correct_answers(folder, store, engine, 1, 1, held[:2], max_new_tokens=8,
                                        progress=lambda done, total: seen.append((done, total)))
    assert sorted(corrected) == held[:2] and seen[-1] == (2, 2)
    rows = [r for r in store.responses(round=1) if r.kind == CORRECTION]
    assert len(rows) == 2 and all(r.policy == corrector.label(1) for r in rows)
    assert {r.params["corrected_from"] for r in rows} == {answer.id for answer, _ in corrected.values()}
    # a second call (a resume) corrects only what is missing; evaluation answers never mix with corrections
    corrected = measure.correct_answers(folder, store, engine, 1, 1, held, max_new_tokens=8)
    assert sorted(corrected) == held and len([r for r in store.responses(round=1) if r.kind == CORRECTION]) == 3
    assert list(heldout.answers(store, 1).values()) == before
    f = measure.figures(store, corrected)
    assert f["n"] == 3 and f["ways"]["policy"]["csr_prompt"].value == 0.0
    assert f["ways"]["repair"]["csr_prompt"].value == 1.0  # lower-casing is a rule repair
    assert f["all"]["failing"] == 3 and ("lowercase" in f["all"]["per_type"]) == (f["all"]["usable_share"] > 0)
    assert "| corrector |" in measure.render_md("corr", f)


def test_correct_command_rewrites_a_file_and_refuses_bad_input_in_one_line(tiny_run, tmp_path, runs_root):
    folder, cfg, store, engine, _ = _stored_run(tiny_run)
    store.close()
    answers = tmp_path / "answers.jsonl"
    answers.write_text(json.dumps({"prompt": "Greet me.", "answer": "Hello There.", "constraints": LOWER}) + "\n"
                       + json.dumps({"prompt": "Say something.", "answer": "Something."}) + "\n")
    out = tmp_path / "out.jsonl"
    runner = CliRunner()
    result = runner.invoke(cli, ["correct", "corr", "--in", str(answers), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "corrected 2 answers with round 1's corrector" in result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["answer"] for line in lines] == ["Hello There.", "Something."]
    for line in lines:
        assert isinstance(line["correction"], str) and line["final"] in (line["answer"], line["correction"])
        assert set(line["outcome"]) >= {"met_before", "met_after", "noop", "usable"}
    assert lines[0]["outcome"]["met_before"] is False
    assert lines[0]["outcome"]["met_after"] == all(verifiers.check_all(LOWER, lines[0]["correction"]).values())

    bad = tmp_path / "bad.jsonl"
    for text, message in [('{"prompt": "x"}\n', 'needs string fields "prompt" and "answer"'),
                          ("not json\n", "is not valid JSON"),
                          ('{"prompt": "x", "answer": "y", "constraints": [{"id": "shout"}]}\n', "unknown constraint")]:
        bad.write_text(text)
        result = runner.invoke(cli, ["correct", "corr", "--in", str(bad), "--out", str(tmp_path / "never.jsonl")])
        assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1
        assert not (tmp_path / "never.jsonl").exists()
    result = runner.invoke(cli, ["correct", "corr", "--round", "2", "--in", str(answers), "--out", str(out)])
    assert result.exit_code == 2 and "round 2 of corr stored no pairs" in result.output
    result = runner.invoke(cli, ["correct", "corr", "--in", str(answers), "--heldout", "dev"])
    assert result.exit_code == 2 and "not both" in result.output
    result = runner.invoke(cli, ["correct", "corr"])  # trained already: says where it is
    assert result.exit_code == 0 and str(corrector.adapter_dir(folder, 1)) in result.output


def _serve(server):
    import threading

    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_port}/v1"


def test_a_corrector_in_front_of_a_real_upstream_server_and_of_a_runs_own_policy(tiny_run, tiny_model_dir, runs_root):
    from selfalign import models, serve
    from selfalign.engines.http_engine import HttpClient
    from selfalign.engines.transformers_engine import TransformersEngine

    folder, cfg, store, engine, _ = _stored_run(tiny_run)
    corrector.train_corrector(folder, cfg, store, engine, 1)
    store.close()
    model, tok = models.load(str(tiny_model_dir), device="cpu")
    upstream = serve.make_server(TransformersEngine(model, tok, batch_size=4), "up-model", port=0)
    up_url = _serve(upstream)
    servers = [upstream]
    try:
        front, what = serve.build(None, None, None, None, False, up_url, "up-model", "OPENAI_API_KEY", "corr:1",
                                  "127.0.0.1", 0)
        servers.append(front)
        assert what.startswith("up-model from http://127.0.0.1:") and "corr round 1 corrector" in what
        body = {"messages": [{"role": "user", "content": "Greet me in lower case."}], "max_tokens": 6,
                "temperature": 0.0, "n": 1}
        direct = HttpClient(up_url, "up-model", retries=0)._post("/chat/completions", {**body, "model": "up-model"})
        reply = HttpClient(_serve(front), "up-model", retries=0)._post("/chat/completions",
                                                                      {**body, "model": "up-model"})
        (choice,) = reply["choices"]
        assert choice["original"]["content"] == direct["choices"][0]["message"]["content"]  # forwarded as it came
        applied = choice["correction"]["applied"]
        assert (choice["message"]["content"] == choice["original"]["content"]) == (not applied) or \
            choice["correction"]["noop"]
        assert reply["corrected_by"] == "corr round 1 corrector"

        own, what = serve.build(None, "corr", None, None, True, None, None, "OPENAI_API_KEY", None, "127.0.0.1", 0)
        servers.append(own)
        assert what.startswith("run corr, round 0: the base model") and "corrected by corr round 1 corrector" in what
        reply = HttpClient(_serve(own), "corr", retries=0)._post("/chat/completions", {**body, "model": "corr"})
        assert "original" in reply["choices"][0] and reply["corrected_by"] == "corr round 1 corrector"
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_a_bad_upstream_is_one_line_and_a_non_zero_exit(tiny_run, tiny_model_dir, runs_root, tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from selfalign import serve

    folder, cfg, store, engine, _ = _stored_run(tiny_run)
    corrector.train_corrector(folder, cfg, store, engine, 1)
    store.close()

    class Refusing(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(401)
            self.end_headers()

    refusing = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=refusing.serve_forever, daemon=True).start()
    upstream = serve.make_server(engine, "up-model", port=0)
    up_url = _serve(upstream)
    runner = CliRunner()
    try:
        cases = [("http://127.0.0.1:9/v1", "up-model", "corr", 1, "did not answer"),
                 (f"http://127.0.0.1:{refusing.server_port}/v1", "up-model", "corr", 1, "refused the key"),
                 (up_url, "nope", "corr", 2, "does not serve model 'nope'"),
                 (up_url, "up-model", "corr:3", 2, "round 3 of corr has no trained corrector"),
                 (up_url, "up-model", "missing-run", 1, "no run named 'missing-run'")]
        for url, model, source, code, message in cases:
            result = runner.invoke(cli, ["serve", "--upstream-url", url, "--upstream-model", model,
                                         "--corrector-from", source, "--port", "0"])
            assert result.exit_code == code and message in result.output, (url, result.output)
            assert result.output.count("\n") == 1 and result.output.startswith("error:")
        result = runner.invoke(cli, ["serve", "--upstream-url", up_url, "--corrector-from", "corr"])
        assert result.exit_code == 2 and "needs --upstream-model" in result.output
    finally:
        for server in (refusing, upstream):
            server.shutdown()
            server.server_close()


def test_a_round_with_the_corrector_on_runs_end_to_end_and_resumes_after_a_kill(tiny_model_dir, runs_root):
    """Round 2 of a tiny run with correct.mode = compete: round 1's corrector is trained from round 1's stored triples,
    the round's answers are corrected into rows of kind 'correction' (verified, naming their source), the run is
    killed in the middle of the correct stage and resumed, and nothing is lost or stored twice."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from test_loop import make_run

    from selfalign import loop
    from selfalign.store import open_store

    folder = make_run(tiny_model_dir, "corr-loop", "self-reward", "correct.mode=compete",
                      "instruct.prompts_per_round=6", "generate.max_new_tokens=160", "generate.batch_size=1",
                      "model.max_context=1024")
    assert loop.run(folder, rounds=1, quiet=True) == 0
    with open_store(folder.db_path) as store:
        assert store.stage(1, "correct").status == "done"  # round 1 has nothing to learn from: corrects nothing
        assert not [r for r in store.responses(round=1) if r.kind == CORRECTION]
        # a random tiny model's round rarely gives a triple: store three rule-style fixes of its samples
        for source in [r for r in store.responses(round=1) if r.kind == "sample"][:3]:
            store.add_response(NewResponse(source.prompt_id, 1, source.policy, source.sample_index,
                                           f"a fixed answer {source.id}.", 4, "stop", None,
                                           {"repaired_from": source.id}, kind="repair"))
    proc = subprocess.Popen([sys.executable, "-m", "selfalign", "run", "corr-loop", "--headless", "--rounds", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while True:
        with open_store(folder.db_path) as store:
            stage = store.stage(2, "correct")
            if stage and stage.status == "running" and stage.done > 0:
                break
        assert proc.poll() is None and time.monotonic() < deadline, "the correct stage never got under way"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with open_store(folder.db_path) as store:
        partial = len([r for r in store.responses(round=2) if r.kind == CORRECTION])
        total = store.stage(2, "correct").total
    assert 0 < partial < total
    assert corrector.trained(folder, 1)
    assert loop.run(folder, quiet=True) == 0
    with open_store(folder.db_path) as store:
        rows = [r for r in store.responses(round=2) if r.kind == CORRECTION]
        sources = store.responses_by_id(r.params["corrected_from"] for r in rows)
        assert len(rows) == total and len({r.params["corrected_from"] for r in rows}) == total  # none twice
        assert all(sources[r.params["corrected_from"]].kind == "sample" and r.policy == corrector.label(1)
                   for r in rows)
        verified = store.round_verifications(2)
        assert all(r.id in verified for r in rows)
        metrics = store.metrics(2)[2]
        assert metrics["correct/count"] == total and "correct/usable_share" in metrics
        assert store.round(2).status in ("done", "rejected")
        # a correction that is chosen is one the verifiers and the gates accepted
        chosen = store.responses_by_id(p.chosen_id for p in store.pairs(2))
        for p in store.pairs(2):
            if chosen[p.chosen_id].kind == CORRECTION:
                assert chosen[p.chosen_id].finish_reason != "length"


def _corrected_round(tmp_path, correction_text):
    from selfalign.store import open_store

    store = open_store(tmp_path / "pairs.db", create=True)
    (pid,) = store.add_prompts([NewPrompt("Greet the team.", "self", constraints=LOWER, round=2)])
    ids = {}
    for i, text in enumerate(["Hello There, Team, good to see everyone.", "Hi all of You."]):
        ids[i] = store.add_response(NewResponse(pid, 2, "base", i, text, 9, "stop", -1.0))
        store.add_verifications(ids[i], verifiers.check_all(LOWER, text))
    fix = store.add_response(NewResponse(pid, 2, corrector.label(1), 0, correction_text, 9, "stop", None,
                                         {"corrected_from": ids[0]}, kind=CORRECTION))
    store.add_verifications(fix, verifiers.check_all(LOWER, correction_text))
    return store, ids, fix


def test_a_usable_correction_competes_in_pairs_and_can_be_paired_over_its_source(tmp_path):
    from selfalign import config
    from selfalign.stages import StageContext
    from selfalign.stages import pairs as pairs_stage

    def pairs(store, *sets):
        cfg = config.build(sets=["judge.weight_likelihood=0", "pairs.repair=false", *sets])
        pairs_stage.run(StageContext(cfg, store, None, round=2))
        return [p for p in store.pairs(2) if p.rule != pairs_stage.MIRROR_RULE]  # the prompt's own pairs

    store, ids, fix = _corrected_round(tmp_path, "hello there, team, good to see everyone.")
    assert pairs(store) == []  # the corrector off: both answers miss, no pair
    (pair,) = pairs(store, "correct.mode=compete")
    assert pair.chosen_id == fix and pair.rule == "best-vs-worst"
    assert store.metrics(2)[2]["pairs/chosen_correction_rate"] == 0.5  # the other pair is its mirror (a plain copy)
    (pair,) = pairs(store, "correct.mode=over-source")
    assert (pair.chosen_id, pair.rejected_id, pair.rule) == (fix, ids[0], "correction-over-source")
    store.close()
    (tmp_path / "echo").mkdir()
    echo, _, _ = _corrected_round(tmp_path / "echo", "Request:\ngreet the team.")
    assert pairs(echo, "correct.mode=compete") == []  # an echo meets the constraint but is never a candidate


def test_the_response_screen_shows_a_correction_beside_its_source_with_the_changed_words_marked(tmp_path):
    import asyncio

    from textual.app import App
    from textual.widgets import Static

    from selfalign import config, runs
    from selfalign.tui.feed import Feed
    from selfalign.tui.screens import ResponseScreen

    folder = runs.create("shown", config.dumps(config.build()), root=tmp_path)
    from selfalign.store import open_store

    with open_store(folder.db_path) as store:
        (pid,) = store.add_prompts([NewPrompt("Greet the team.", "self", constraints=LOWER, round=2)])
        source = store.add_response(NewResponse(pid, 2, "base", 0, "Hello There team.", 4, "stop", -1.0))
        fix = store.add_response(NewResponse(pid, 2, corrector.label(1), 0, "hello there team.", 4, "stop", None,
                                             {"corrected_from": source}, kind=CORRECTION))
    with Feed(folder) as feed:
        detail = feed.detail(fix)
    assert detail["source"].id == source

    class Shown(App):
        def on_mount(self):
            self.push_screen(ResponseScreen(detail))

    async def scenario():
        app = Shown()
        async with app.run_test() as pilot:
            await pilot.pause()
            body = app.screen.query_one("#detail", Static).content
            assert f"Original answer (response {source})" in str(body) and "Correction" in str(body)
            marked = [str(body)[span.start:span.end] for span in body.spans if "green" in str(span.style)]
            assert marked == ["hello there "]  # the changed words, not the unchanged one
    asyncio.run(scenario())

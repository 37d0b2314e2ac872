"""The store on a real SQLite file: migrations, every table's typed reads and writes, bad files."""

import sqlite3

import pytest

from selfalign.errors import StoreError
from selfalign.store import open_store
from selfalign.store.rows import NewJudgement, NewPair, NewPrompt, NewResponse, TrainStep


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "selfalign.db", create=True) as s:
        s.init_run("demo", "[run]\n", "0.1.0")
        yield s


def _response(store, prompt_id, index=0, round=0, text="hello"):
    return store.add_response(NewResponse(prompt_id=prompt_id, round=round, policy="base", sample_index=index,
                                          text=text, tokens=2, finish_reason="stop", mean_logprob=-1.5,
                                          params={"temperature": 0.7}, duration_s=0.1))


def test_pragmas_and_indexes(store):
    conn = store.db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] >= 5000
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"responses_by_round", "judgements_by_response", "pairs_by_round"} <= indexes
    assert store.schema_version() == "m007_response_kind_and_round_policy"


def test_reopen_applies_nothing_twice(tmp_path, store):
    store.close()
    with open_store(tmp_path / "selfalign.db") as again:
        assert again.run_info().name == "demo"
        assert again.db.execute("SELECT count(*) FROM _sqlite_migrations").fetchone()[0] == 7


def test_prompts_are_deduplicated_by_normalised_text(store):
    ids = store.add_prompts([NewPrompt("Write a poem.", "seed"), NewPrompt("Write  a poem. ", "seed"),
                             NewPrompt("Write a poem.", "heldout", split="heldout"),
                             NewPrompt("List 3 fruits.", "self", constraints=[{"id": "lowercase"}], round=1)])
    assert ids[0] == ids[1] and len(set(ids)) == 3
    assert [p.text for p in store.prompts(split="train")] == ["Write a poem.", "List 3 fruits."]
    assert store.prompts(round=1)[0].constraints == [{"id": "lowercase"}]
    assert store.add_prompts([NewPrompt("Write a poem.", "seed")]) == [ids[0]]


def test_responses_judgements_verifications_pairs(store):
    (pid,) = store.add_prompts([NewPrompt("Say hi.", "seed")])
    a, b = _response(store, pid, 0), _response(store, pid, 1, text="hi there")
    assert _response(store, pid, 0) is None  # resumed stage: duplicate skipped
    assert store.count_responses(round=0) == 2
    got = store.responses(round=0)
    assert [r.id for r in got] == [a, b] and got[0].params == {"temperature": 0.7}
    assert [r.id for r in store.responses(after_id=a)] == [b]
    store.add_judgement(NewJudgement(a, "self", "additive5", 4.0, True, "Score: 4"))
    store.add_judgement(NewJudgement(b, "self", "additive5", None, False, "no idea"))
    assert [(j.score, j.parsed_ok) for j in store.judgements(round=0)] == [(4.0, True), (None, False)]
    store.add_verifications(a, {"lowercase": True, "max_words": False})
    assert {v.constraint_id: v.passed for v in store.verifications(a)} == {"lowercase": True,
                                                                           "max_words": False}
    store.add_pair(NewPair(0, pid, a, b, 0.5, "best-vs-worst"))
    assert store.add_pair(NewPair(0, pid, a, b, 0.5, "best-vs-worst")) is None
    store.add_pair(NewPair(0, pid, b, None, None, "sft"))
    assert [(p.chosen_id, p.rejected_id) for p in store.pairs(0)] == [(a, b), (b, None)]


def test_stage_seconds_count_working_time_across_a_kill_and_an_idle_wait(store):
    store.start_round(1, None)
    store.start_stage(1, "instruct", total=10)
    # an attempt that worked 600 s, reported progress, and was killed (no finish); then the run sat idle
    store.db.execute("UPDATE stages SET started_at = '2026-01-01T10:00:00.000+00:00' WHERE name = 'instruct'")
    store.stage_progress(1, "instruct", 4)
    store.db.execute("UPDATE stages SET seconds = 600 WHERE name = 'instruct'")  # progress at 10:10
    store.db.execute("UPDATE rounds SET started_at = '2026-01-01T10:00:00.000+00:00'")
    store.start_stage(1, "instruct")  # resumed months later
    store.finish_stage(1, "instruct")
    assert 599 < store.stage(1, "instruct").seconds < 660  # julianday arithmetic rounds
    store.start_stage(1, "generate")
    store.finish_stage(1, "generate")
    store.finish_round(1)
    stages = sum(s.seconds for s in store.stages(1))
    assert store.round(1).seconds == pytest.approx(stages)  # not the months from 10:00


def test_foreign_keys_are_enforced(store):
    with pytest.raises(sqlite3.IntegrityError):
        _response(store, prompt_id=999)


def test_rounds_stages_steps_metrics_events_controls(store):
    store.start_round(1, None)
    assert store.start_round(1, 7).policy_round is None  # resume keeps the round and the policy it began with
    assert store.start_round(2, 1).policy_round == 1
    store.start_stage(1, "generate", total=10)
    store.stage_progress(1, "generate", 4)
    store.finish_stage(1, "generate", "failed", error="boom")
    assert (store.stage(1, "generate").status, store.stage(1, "generate").error) == ("failed", "boom")
    restarted = store.start_stage(1, "generate")
    assert (restarted.status, restarted.done, restarted.total, restarted.error) == ("running", 4, 10, None)
    store.finish_stage(1, "generate")
    store.finish_round(1)
    assert store.rounds()[0].status == "done" and store.rounds()[0].seconds >= 0
    store.add_train_step(TrainStep(1, 0, 0.69, reward_margin=0.0, lr=1e-5))
    store.add_train_step(TrainStep(1, 1, 0.50, reward_margin=0.2, lr=2e-5))
    assert [s.loss for s in store.train_steps(1, after_step=0)] == [0.50]
    store.set_metric(1, "eval/csr", 0.4)
    store.set_metric(1, "eval/csr", 0.5)
    assert store.metrics() == {1: {"eval/csr": 0.5}}
    first = store.log_event("info", "started", round=1, stage="generate", data={"n": 3})
    store.log_event("warning", "slow")
    assert [e.message for e in store.events(after_id=first)] == ["slow"]
    assert store.events()[0].data == {"n": 3}
    cid = store.request_control("pause")
    assert [c.action for c in store.pending_controls()] == ["pause"]
    store.mark_control_handled(cid)
    assert store.pending_controls() == [] and store.controls()[0].handled
    with pytest.raises(sqlite3.IntegrityError):
        store.request_control("explode")


def test_reader_sees_committed_rows_while_writer_holds_a_transaction(tmp_path, store):
    (pid,) = store.add_prompts([NewPrompt("Say hi.", "seed")])
    with open_store(tmp_path / "selfalign.db") as reader, store.transaction():
        _response(store, pid, 0)
        assert reader.count_responses() == 0  # WAL: the reader is not blocked and sees the last commit
    with open_store(tmp_path / "selfalign.db") as reader:
        assert reader.count_responses() == 1


def test_a_transaction_is_all_or_nothing(store):
    (pid,) = store.add_prompts([NewPrompt("Say hi.", "seed")])
    with pytest.raises(RuntimeError), store.transaction():
        _response(store, pid, 0)
        raise RuntimeError("killed")
    assert store.count_responses() == 0


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(StoreError, match="no database at"):
        open_store(tmp_path / "nope.db")


def test_not_sqlite(tmp_path):
    path = tmp_path / "selfalign.db"
    path.write_text("hello, I am a text file")
    with pytest.raises(StoreError, match="is not a SQLite database"):
        open_store(path)
    assert path.read_text() == "hello, I am a text file"


def test_foreign_sqlite_database(tmp_path):
    path = tmp_path / "selfalign.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(StoreError, match="is not a selfalign database"):
        open_store(path)
    assert sqlite3.connect(path).execute("SELECT name FROM sqlite_master").fetchall() == [("customers",)]


def test_newer_schema(tmp_path, store):
    store.db.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                     "VALUES ('selfalign', 'm999_future', '2030-01-01')")
    store.db.conn.commit()
    store.close()
    with pytest.raises(StoreError, match="newer selfalign .*m999_future"):
        open_store(tmp_path / "selfalign.db")


def test_full_text_search_finds_responses_and_survives_fts_syntax(store):
    (pid,) = store.add_prompts([NewPrompt("Name a fruit.", "seed")])
    apple = _response(store, pid, 0, text="An apple a day keeps the doctor away.")
    _response(store, pid, 1, text="Bananas are yellow.")
    assert [r.id for r in store.search_responses("apple")] == [apple]
    assert [r.id for r in store.search_responses("APPLE doctor")] == [apple]
    assert store.search_responses("apple bananas") == []  # every word must match
    assert store.search_responses('"unbalanced AND (') == []  # no FTS syntax error reaches the user
    assert store.search_responses("   ") == []


def test_heartbeat_keeps_one_row(store):
    assert store.heartbeat() is None
    store.beat(123)
    store.beat(456)
    pid, ts = store.heartbeat()
    assert pid == 456 and ts.startswith("20")


def test_side_by_side_judgements_move_from_rubric_text_into_columns(tmp_path):
    """m005: a run written before it (ids and order as text in `rubric`) reads the same after it."""
    import sqlite_utils

    from selfalign.store.schema import migrations

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="m005_pair_columns")
    db.execute("INSERT INTO prompts (id, text, source, split, constraints, hash, created_at) "
               "VALUES (1, 'Say hi.', 'seed', 'train', '[]', 'h', 'now')")
    for rid in (11, 12):
        db.execute("INSERT INTO responses (id, prompt_id, round, policy, sample_index, text, tokens, finish_reason, "
                   "params, created_at) VALUES (?, 1, 1, 'base', ?, 'hi', 1, 'stop', '{}', 'now')", [rid, rid])
    rows = [(11, "self", "additive5", 4.0), (11, "self", "pairwise:12:ab", 1.0), (11, "self", "pairwise:12:ba", 0.0),
            (11, "base", "winrate:12:ab", 1.0)]
    for rid, judge, rubric, score in rows:
        db.execute("INSERT INTO judgements (response_id, judge, rubric, score, parsed_ok, created_at) "
                   "VALUES (?, ?, ?, ?, 1, 'now')", [rid, judge, rubric, score])
    db.conn.commit()
    db.close()
    with open_store(path) as store:
        got = [(j.judge, j.rubric, j.other_id, j.position, j.score) for j in store.judgements(round=1)]
    assert got == [("self", "additive5", 0, "", 4.0), ("self", "pairwise", 12, "first", 1.0),
                   ("self", "pairwise", 12, "second", 0.0), ("base", "winrate", 12, "first", 1.0)]


def test_every_row_dataclass_matches_its_tables_columns(store):
    import dataclasses

    from selfalign.store.rows import PLAIN_TABLES, ROW_TYPES

    tables = {name for (name,) in store.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
              if not name.startswith(("_sqlite", "responses_fts"))}
    assert tables == set(ROW_TYPES) | set(PLAIN_TABLES)  # a new table names its row type
    for table, row_type in ROW_TYPES.items():
        columns = {row[1] for row in store.db.execute(f"PRAGMA table_info({table})")}
        assert {f.name for f in dataclasses.fields(row_type)} == columns, table


def test_a_response_kind_and_a_round_policy_each_have_one_column(store):
    """What a response is (sample, repair, eval) lives in responses.kind, checked by the database; the policy
    a round samples from lives in rounds.policy_round. Outside the store no code tells them apart another way
    (a 'repair' policy label, an 'eval' flag in params)."""
    import re
    from pathlib import Path

    import selfalign

    responses = {row[1]: row for row in store.db.execute("PRAGMA table_info(responses)")}
    assert responses["kind"][4] == "'sample'"  # its default
    (p,) = store.add_prompts([NewPrompt("Say hi.", "seed")])
    with pytest.raises(ValueError, match="kind 'guess'"):
        store.add_response(NewResponse(p, 1, "base", 0, "hi", 1, "stop", kind="guess"))
    with pytest.raises(sqlite3.IntegrityError):  # and the database holds the same line
        store.db.execute("INSERT INTO responses (prompt_id, round, policy, kind, sample_index, text, tokens, "
                         "finish_reason, created_at) VALUES (?, 1, 'base', 'guess', 0, 'x', 1, 'stop', 'now')", [p])
    sample = store.add_response(NewResponse(p, 1, "base", 0, "hi", 1, "stop"))
    copy = store.add_response(NewResponse(p, 1, "base", 0, "Hi.", 1, "stop", params={"repaired_from": sample},
                                          kind="repair"))  # same policy and index, another kind: its own row
    assert copy and sample and {r.kind for r in store.responses(round=1)} == {"sample", "repair"}
    assert "policy_round" in {row[1] for row in store.db.execute("PRAGMA table_info(rounds)")}
    root = Path(selfalign.__file__).parent
    offenders = [str(f.relative_to(root)) for f in root.rglob("*.py") if "store" not in f.parts
                 and re.search(r"policy\s*[!=]=\s*['\"]repair|\.get\(\"eval\"\)|policy\s*=\s*'repair'",
                               f.read_text())]
    assert offenders == []


def test_older_runs_get_their_kinds_and_round_policies(tmp_path):
    """m007: repaired copies (policy 'repair') take their source's policy and kind 'repair', held-out answers
    (params.eval) kind 'eval'; a round's policy label becomes its policy round; every id and link stays."""
    import sqlite_utils

    from selfalign.store.schema import migrations

    path = tmp_path / "old.db"
    db = sqlite_utils.Database(path)
    migrations.apply(db, stop_before="m007_response_kind_and_round_policy")
    db.execute("INSERT INTO prompts (id, text, source, split, constraints, hash, created_at) "
               "VALUES (1, 'Say hi.', 'seed', 'train', '[]', 'h', 'now')")
    for rid, policy, params in ((11, "rounds/1/adapter", "{}"), (12, "repair", '{"repaired_from": 11}'),
                                (13, "rounds/2/adapter", '{"eval": true}')):
        db.execute("INSERT INTO responses (id, prompt_id, round, policy, sample_index, text, tokens, finish_reason, "
                   "params, created_at) VALUES (?, 1, 2, ?, 0, 'hi', 1, 'stop', ?, 'now')", [rid, policy, params])
    db.execute("INSERT INTO pairs (round, prompt_id, chosen_id, rejected_id, margin, rule) "
               "VALUES (2, 1, 12, 11, 1.0, 'best-vs-worst')")
    db.execute("INSERT INTO rounds (k, status, policy_adapter, started_at) VALUES (2, 'done', 'rounds/1/adapter', 'x')")
    db.execute("INSERT INTO rounds (k, status, policy_adapter, started_at) VALUES (1, 'done', NULL, 'x')")
    db.conn.commit()
    db.close()
    with open_store(path) as store:
        got = {r.id: (r.policy, r.kind) for r in store.responses(round=2)}
        assert got == {11: ("rounds/1/adapter", "sample"), 12: ("rounds/1/adapter", "repair"),
                       13: ("rounds/2/adapter", "eval")}
        assert [(p.chosen_id, p.rejected_id) for p in store.pairs(2)] == [(12, 11)]
        assert (store.round(2).policy_round, store.round(1).policy_round) == (1, None)
        assert [r.id for r in store.search_responses("hi")] and store.db.execute("PRAGMA foreign_keys").fetchone()[0]

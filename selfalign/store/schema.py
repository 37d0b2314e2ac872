"""Numbered schema migrations. A change to the schema is a new function here, never an edit.

Column names match the row dataclasses in `store.rows`, so reads map straight onto them.
"""

from __future__ import annotations

import sqlite3

from sqlite_utils import Migrations

MIGRATION_SET = "selfalign"
migrations = Migrations(MIGRATION_SET)


def _run_statements(db, script: str) -> None:
    # Not executescript(): it commits first, which would break the migration's transaction.
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""
    if statement.strip() and not all(s.strip().startswith("--") for s in statement.strip().splitlines()):
        raise ValueError(f"incomplete SQL statement in a migration: {statement.strip()[:80]}")


@migrations(name="m001_initial")
def m001_initial(db) -> None:
    _run_statements(
        db,
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY CHECK (id = 1),      -- one run per database
            name TEXT NOT NULL,
            created_at TEXT NOT NULL,
            selfalign_version TEXT NOT NULL,
            config_toml TEXT NOT NULL,
            note TEXT NOT NULL DEFAULT ''
        );
        CREATE TABLE rounds (
            k INTEGER PRIMARY KEY,
            status TEXT NOT NULL DEFAULT 'running',     -- running, done, failed, rejected
            policy_adapter TEXT,                        -- adapter the round samples from; NULL = base
            started_at TEXT NOT NULL,
            finished_at TEXT,
            seconds REAL
        );
        CREATE TABLE stages (
            id INTEGER PRIMARY KEY,
            round INTEGER NOT NULL REFERENCES rounds(k),
            name TEXT NOT NULL,                         -- instruct, generate, judge, pairs, train, evaluate
            status TEXT NOT NULL DEFAULT 'running',     -- running, done, failed, stopped
            done INTEGER NOT NULL DEFAULT 0,
            total INTEGER,
            error TEXT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            seconds REAL,
            UNIQUE (round, name)
        );
        CREATE TABLE prompts (
            id INTEGER PRIMARY KEY,
            text TEXT NOT NULL,
            source TEXT NOT NULL,                       -- seed, self, heldout, user
            split TEXT NOT NULL CHECK (split IN ('train', 'heldout')),
            constraints TEXT NOT NULL DEFAULT '[]',     -- JSON list of {id, params}
            round INTEGER,                              -- round that added it; NULL for files
            hash TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        );
        CREATE TABLE responses (
            id INTEGER PRIMARY KEY,
            prompt_id INTEGER NOT NULL REFERENCES prompts(id),
            round INTEGER NOT NULL,
            policy TEXT NOT NULL,                       -- 'base' or the adapter path it came from
            sample_index INTEGER NOT NULL,
            text TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            finish_reason TEXT NOT NULL,                -- stop, length, stop_string, skipped
            mean_logprob REAL,
            params TEXT NOT NULL DEFAULT '{}',          -- JSON sampling parameters
            duration_s REAL,
            created_at TEXT NOT NULL,
            UNIQUE (prompt_id, round, policy, sample_index)
        );
        CREATE INDEX responses_by_round ON responses(round, id);
        CREATE TABLE judgements (
            id INTEGER PRIMARY KEY,
            response_id INTEGER NOT NULL REFERENCES responses(id),
            judge TEXT NOT NULL,                        -- self, blackbox, likelihood
            rubric TEXT NOT NULL,
            sample_index INTEGER NOT NULL DEFAULT 0,
            score REAL,
            raw_output TEXT NOT NULL DEFAULT '',
            parsed_ok INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (response_id, judge, rubric, sample_index)
        );
        CREATE INDEX judgements_by_response ON judgements(response_id);
        CREATE TABLE verifications (
            id INTEGER PRIMARY KEY,
            response_id INTEGER NOT NULL REFERENCES responses(id),
            constraint_id TEXT NOT NULL,
            passed INTEGER NOT NULL,
            UNIQUE (response_id, constraint_id)
        );
        CREATE INDEX verifications_by_response ON verifications(response_id);
        CREATE TABLE pairs (
            id INTEGER PRIMARY KEY,
            round INTEGER NOT NULL,
            prompt_id INTEGER NOT NULL REFERENCES prompts(id),
            chosen_id INTEGER NOT NULL REFERENCES responses(id),
            rejected_id INTEGER REFERENCES responses(id),   -- NULL for SFT examples
            margin REAL,
            rule TEXT NOT NULL,
            UNIQUE (round, prompt_id, chosen_id, rejected_id)
        );
        CREATE INDEX pairs_by_round ON pairs(round);
        CREATE TABLE train_steps (
            round INTEGER NOT NULL,
            step INTEGER NOT NULL,
            loss REAL NOT NULL,
            rewards_chosen REAL,
            rewards_rejected REAL,
            reward_margin REAL,
            accuracy REAL,
            lr REAL,
            grad_norm REAL,
            tokens_per_s REAL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (round, step)
        );
        CREATE TABLE metrics (
            round INTEGER NOT NULL,
            name TEXT NOT NULL,                         -- slashes: judge/score_mean, eval/csr
            value REAL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (round, name)
        );
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            level TEXT NOT NULL,
            round INTEGER,
            stage TEXT,
            message TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}'
        );
        CREATE TABLE controls (
            id INTEGER PRIMARY KEY,
            ts TEXT NOT NULL,
            action TEXT NOT NULL CHECK (action IN ('pause', 'resume', 'stop', 'stop_after_stage')),
            handled INTEGER NOT NULL DEFAULT 0,
            handled_at TEXT
        );
        """
    )


@migrations(name="m002_judging")
def m002_judging(db) -> None:
    _run_statements(
        db,
        """
        ALTER TABLE pairs ADD COLUMN scores TEXT NOT NULL DEFAULT '{}';   -- the scores behind the pair
        CREATE TABLE demonstrations (
            id INTEGER PRIMARY KEY,
            round INTEGER NOT NULL,
            prompt_id INTEGER REFERENCES prompts(id),
            data TEXT NOT NULL,                         -- JSON {instruction, responses, ranking}
            created_at TEXT NOT NULL
        );
        """
    )


@migrations(name="m003_search_heartbeat")
def m003_search_heartbeat(db) -> None:
    # Full-text search over responses (the TUI's search box); triggers keep it in step with inserts,
    # so the loop does nothing extra. External-content FTS5: the text is stored once.
    _run_statements(
        db,
        """
        CREATE VIRTUAL TABLE responses_fts USING fts5(text, content='responses', content_rowid='id');
        INSERT INTO responses_fts (rowid, text) SELECT id, text FROM responses;
        CREATE TRIGGER responses_fts_insert AFTER INSERT ON responses BEGIN
            INSERT INTO responses_fts (rowid, text) VALUES (new.id, new.text);
        END;
        CREATE TRIGGER responses_fts_delete AFTER DELETE ON responses BEGIN
            INSERT INTO responses_fts (responses_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END;
        CREATE TRIGGER responses_fts_update AFTER UPDATE OF text ON responses BEGIN
            INSERT INTO responses_fts (responses_fts, rowid, text) VALUES ('delete', old.id, old.text);
            INSERT INTO responses_fts (rowid, text) VALUES (new.id, new.text);
        END;
        -- Written every few seconds by a thread of the loop process while it lives: a hung or dead
        -- writer shows as a heartbeat that stopped, even during one long model call.
        CREATE TABLE heartbeat (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            pid INTEGER NOT NULL,
            ts TEXT NOT NULL
        );
        """
    )


@migrations(name="m004_controller")
def m004_controller(db) -> None:
    _run_statements(
        db,
        """
        -- What the round controller decided after a round, with its reason and the figures behind it.
        CREATE TABLE decisions (
            id INTEGER PRIMARY KEY,
            round INTEGER NOT NULL,                     -- the round whose results were judged
            kind TEXT NOT NULL,                         -- promote, reject, curriculum, judge, stop
            reason TEXT NOT NULL,
            data TEXT NOT NULL DEFAULT '{}',            -- JSON: figures, overrides for the next round
            created_at TEXT NOT NULL,
            UNIQUE (round, kind)
        );
        -- A user's word that wins over the controller's (for example: promote a rejected round).
        CREATE TABLE overrides (
            id INTEGER PRIMARY KEY,
            round INTEGER NOT NULL,
            action TEXT NOT NULL CHECK (action IN ('promote', 'reject')),
            created_at TEXT NOT NULL,
            UNIQUE (round)
        );
        """
    )


@migrations(name="m005_pair_columns")
def m005_pair_columns(db) -> None:
    # A judgement of two responses side by side (position bias, win rate) names the other response and
    # where this one was shown in columns; before, both were text in `rubric` ('pairwise:ID:ab').
    # SQLite cannot change a UNIQUE constraint in place, so the table is rebuilt.
    _run_statements(
        db,
        """
        CREATE TABLE judgements_new (
            id INTEGER PRIMARY KEY,
            response_id INTEGER NOT NULL REFERENCES responses(id),
            judge TEXT NOT NULL,                        -- self, base, blackbox, flag
            rubric TEXT NOT NULL,                       -- a scale, 'pairwise' or 'winrate'
            sample_index INTEGER NOT NULL DEFAULT 0,
            other_id INTEGER NOT NULL DEFAULT 0,        -- the response compared with (0: judged alone)
            position TEXT NOT NULL DEFAULT '',          -- 'first' or 'second': where this one was shown
            score REAL,                                 -- side by side: 1.0 when this response won
            raw_output TEXT NOT NULL DEFAULT '',
            parsed_ok INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            UNIQUE (response_id, judge, rubric, sample_index, other_id, position)
        );
        INSERT INTO judgements_new (id, response_id, judge, rubric, sample_index, other_id, position, score,
                                    raw_output, parsed_ok, created_at)
            SELECT id, response_id, judge,
                   CASE WHEN rubric LIKE 'pairwise:%' THEN 'pairwise'
                        WHEN rubric LIKE 'winrate:%' THEN 'winrate' ELSE rubric END,
                   sample_index,
                   CASE WHEN rubric LIKE 'pairwise:%' OR rubric LIKE 'winrate:%'
                        THEN CAST(substr(rubric, instr(rubric, ':') + 1,
                                         length(rubric) - instr(rubric, ':') - 3) AS INTEGER) ELSE 0 END,
                   CASE WHEN rubric LIKE 'pairwise:%:ab' OR rubric LIKE 'winrate:%:ab' THEN 'first'
                        WHEN rubric LIKE 'pairwise:%:ba' OR rubric LIKE 'winrate:%:ba' THEN 'second' ELSE '' END,
                   score, raw_output, parsed_ok, created_at
            FROM judgements;
        DROP TABLE judgements;
        ALTER TABLE judgements_new RENAME TO judgements;
        CREATE INDEX judgements_by_response ON judgements(response_id);
        """
    )


@migrations(name="m006_stage_peak_memory")
def m006_stage_peak_memory(db) -> None:
    # The highest resident memory (MiB) while the stage ran: each stage resets the kernel's high-water mark,
    # so this is the stage's own peak (NULL where the platform cannot tell, and for runs before it).
    _run_statements(db, "ALTER TABLE stages ADD COLUMN peak_rss_mib REAL;\n")


@migrations(name="m007_response_kind_and_round_policy")
def m007_response_kind_and_round_policy(db) -> None:
    # One home per concept. A response says what it is in `kind` (sample: drawn for training; repair: an
    # edited copy of a sample; eval: a held-out answer), where before `policy = 'repair'` marked repaired
    # copies and params.eval marked held-out answers. A repaired copy now keeps its source's policy, so kind
    # joins the UNIQUE columns, and SQLite rebuilds the table for that (the connection runs migrations with
    # foreign keys off: the children keep pointing at `responses` by name, and the ids are kept).
    # A round's policy is the round whose adapter it samples from, in `policy_round` (NULL: the base model),
    # written once when the round starts; `policy_adapter` (the label) stays for older readers.
    _run_statements(
        db,
        """
        CREATE TABLE responses_new (
            id INTEGER PRIMARY KEY,
            prompt_id INTEGER NOT NULL REFERENCES prompts(id),
            round INTEGER NOT NULL,
            policy TEXT NOT NULL,                       -- 'base' or the adapter path it came from
            kind TEXT NOT NULL DEFAULT 'sample'
                CHECK (kind IN ('sample', 'repair', 'eval', 'correction')),
            sample_index INTEGER NOT NULL,
            text TEXT NOT NULL,
            tokens INTEGER NOT NULL,
            finish_reason TEXT NOT NULL,                -- stop, length, stop_string, skipped
            mean_logprob REAL,
            params TEXT NOT NULL DEFAULT '{}',          -- JSON sampling parameters; a copy names its source
            duration_s REAL,
            created_at TEXT NOT NULL,
            UNIQUE (prompt_id, round, policy, kind, sample_index)
        );
        INSERT INTO responses_new (id, prompt_id, round, policy, kind, sample_index, text, tokens, finish_reason,
                                   mean_logprob, params, duration_s, created_at)
            SELECT r.id, r.prompt_id, r.round,
                   CASE WHEN r.policy = 'repair'
                        THEN COALESCE((SELECT s.policy FROM responses s
                                       WHERE s.id = json_extract(r.params, '$.repaired_from')), 'base')
                        ELSE r.policy END,
                   CASE WHEN r.policy = 'repair' THEN 'repair'
                        WHEN json_extract(r.params, '$.eval') THEN 'eval' ELSE 'sample' END,
                   r.sample_index, r.text, r.tokens, r.finish_reason, r.mean_logprob, r.params, r.duration_s,
                   r.created_at
            FROM responses r;
        DROP TABLE responses;
        ALTER TABLE responses_new RENAME TO responses;
        CREATE INDEX responses_by_round ON responses(round, id);
        CREATE TRIGGER responses_fts_insert AFTER INSERT ON responses BEGIN
            INSERT INTO responses_fts (rowid, text) VALUES (new.id, new.text);
        END;
        CREATE TRIGGER responses_fts_delete AFTER DELETE ON responses BEGIN
            INSERT INTO responses_fts (responses_fts, rowid, text) VALUES ('delete', old.id, old.text);
        END;
        CREATE TRIGGER responses_fts_update AFTER UPDATE OF text ON responses BEGIN
            INSERT INTO responses_fts (responses_fts, rowid, text) VALUES ('delete', old.id, old.text);
            INSERT INTO responses_fts (rowid, text) VALUES (new.id, new.text);
        END;
        ALTER TABLE rounds ADD COLUMN policy_round INTEGER;  -- the round whose adapter it samples from
        UPDATE rounds SET policy_round = CAST(substr(policy_adapter, 8, instr(substr(policy_adapter, 8), '/') - 1)
                                              AS INTEGER)
            WHERE policy_adapter LIKE 'rounds/%/adapter';
        """
    )
    problems = db.execute("PRAGMA foreign_key_check").fetchall()
    if problems:
        raise ValueError(f"m007 left rows pointing at nothing: {problems[:3]}")

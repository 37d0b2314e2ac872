"""The run database: the only code that writes SQL.

One `Store` is one connection; use one per thread. The file is in WAL mode so the TUI
and `status` can read while the loop writes; writes wait up to `BUSY_TIMEOUT_MS` for a lock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from selfalign.store.polling import PollingReads
from selfalign.store.rows import (
    BOOL_COLUMNS,
    JSON_COLUMNS,
    KINDS,
    MIRROR,
    Control,
    Decision,
    Demonstration,
    Event,
    Judgement,
    NewDecision,
    NewJudgement,
    NewPair,
    NewPrompt,
    NewResponse,
    Override,
    Pair,
    Prompt,
    Response,
    Round,
    RunInfo,
    Stage,
    TrainStep,
    Verification,
)
from selfalign.store.schema import MIGRATION_SET, migrations

BUSY_TIMEOUT_MS = 30_000
T = TypeVar("T")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def prompt_hash(text: str, split: str, constraints: list | None = None) -> str:
    """Identity of a prompt: whitespace-normalised text plus split, so re-adding is a no-op. A mirror prompt
    (rows.MIRROR) shares its original's text, so its constraints join its identity; no other prompt's does,
    so the hashes stored by earlier versions still match."""
    normal = " ".join(text.split())
    extra = "" if constraints is None else "\x00" + json.dumps(constraints, sort_keys=True)
    return hashlib.sha256(f"{split}\x00{normal}{extra}".encode()).hexdigest()


class Store(PollingReads):
    def __init__(self, db: sqlite_utils.Database, path: Path):
        self.db = db
        self.path = path

    # ------------------------------------------------------------ plumbing

    def close(self) -> None:
        self.db.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Store]:
        """Group writes so a killed process leaves all of them or none."""
        with self.db.atomic():
            yield self

    def schema_version(self) -> str:
        return max(m.name for m in migrations.applied(self.db))

    def _write(self, sql: str, params: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self.db.atomic():
            return self.db.execute(sql, list(params))

    def _fetch(self, cls: type[T], sql: str, params: Iterable[Any] = ()) -> list[T]:
        cursor = self.db.execute(sql, list(params))
        names = [d[0] for d in cursor.description]
        wanted = {f.name for f in dataclasses.fields(cls)}
        rows = []
        for values in cursor.fetchall():
            row = {}
            for name, value in zip(names, values, strict=True):
                if name not in wanted:
                    continue
                if name in JSON_COLUMNS and isinstance(value, str):
                    value = json.loads(value)
                elif name in BOOL_COLUMNS and value is not None:
                    value = bool(value)
                row[name] = value
            rows.append(cls(**row))
        return rows

    def _insert(self, table: str, row: dict[str, Any], *, ignore: bool = False) -> int | None:
        """Insert one row; with `ignore`, a row that breaks a UNIQUE key is skipped (returns None)."""
        values = {k: json.dumps(v) if k in JSON_COLUMNS else v for k, v in row.items()}
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        verb = "INSERT OR IGNORE" if ignore else "INSERT"
        cursor = self._write(f"{verb} INTO {table} ({columns}) VALUES ({marks})", values.values())
        return cursor.lastrowid if cursor.rowcount else None

    # ------------------------------------------------------------ runs

    def init_run(self, name: str, config_toml: str, version: str, note: str = "") -> None:
        self._insert("runs", {"id": 1, "name": name, "created_at": now(), "selfalign_version": version,
                              "config_toml": config_toml, "note": note})

    def run_info(self) -> RunInfo | None:
        rows = self._fetch(RunInfo, "SELECT * FROM runs WHERE id = 1")
        return rows[0] if rows else None

    def set_note(self, note: str) -> None:
        self._write("UPDATE runs SET note = ? WHERE id = 1", [note])

    # ------------------------------------------------------------ rounds and stages

    def start_round(self, k: int, policy_round: int | None) -> Round:
        """Begin round k sampling from round `policy_round`'s adapter (None: the base model), or return it
        unchanged if it already began (resume): a round's policy is written once, here."""
        label = f"rounds/{policy_round}/adapter" if policy_round else None  # for readers of older versions
        self._insert("rounds", {"k": k, "status": "running", "policy_round": policy_round or None,
                                "policy_adapter": label, "started_at": now()}, ignore=True)
        return self.round(k)

    def finish_round(self, k: int, status: str = "done") -> None:
        """A round's seconds are its stages' working time (the controller's hour budget reads them), not the
        span from start to finish, which counts the hours a stopped run waited to be resumed."""
        self._write("UPDATE rounds SET status = ?, finished_at = ?, seconds = COALESCE("
                    "(SELECT SUM(seconds) FROM stages WHERE stages.round = rounds.k), "
                    "(julianday(?) - julianday(started_at)) * 86400) WHERE k = ?",
                    [status, (t := now()), t, k])

    def round(self, k: int) -> Round | None:
        rows = self._fetch(Round, "SELECT * FROM rounds WHERE k = ?", [k])
        return rows[0] if rows else None

    def rounds(self) -> list[Round]:
        return self._fetch(Round, "SELECT * FROM rounds ORDER BY k")

    def start_stage(self, k: int, name: str, total: int | None = None) -> Stage:
        """Begin a stage, or mark a stopped, failed or killed one as running again; finished work is kept.
        `seconds` is working time: a restart moves started_at forward by the time already spent, so the span
        from it goes on from there and the hours a stopped run sat idle are not counted (a stage resumed
        after a session ended once reported 174 minutes for 9 of work). Progress reports keep `seconds`
        current, so a killed attempt counts up to its last report."""
        previous = self.stage(k, name)
        spent = (previous.seconds or 0.0) if previous else 0.0
        start = (datetime.now(timezone.utc) - timedelta(seconds=spent)).isoformat(timespec="milliseconds")
        self._write(
            "INSERT INTO stages (round, name, status, total, started_at) VALUES (?, ?, 'running', ?, ?) "
            "ON CONFLICT (round, name) DO UPDATE SET status = 'running', error = NULL, finished_at = NULL, "
            "started_at = excluded.started_at, total = COALESCE(excluded.total, total)",
            [k, name, total, start])
        return self.stage(k, name)

    def stage_progress(self, k: int, name: str, done: int, total: int | None = None) -> None:
        self._write("UPDATE stages SET done = ?, total = COALESCE(?, total), "
                    "seconds = (julianday(?) - julianday(started_at)) * 86400 WHERE round = ? AND name = ?",
                    [done, total, now(), k, name])

    def finish_stage(self, k: int, name: str, status: str = "done", error: str | None = None,
                     peak_rss_mib: float | None = None) -> None:
        self._write("UPDATE stages SET status = ?, error = ?, finished_at = ?, "
                    "seconds = (julianday(?) - julianday(started_at)) * 86400, "
                    "peak_rss_mib = COALESCE(?, peak_rss_mib) WHERE round = ? AND name = ?",
                    [status, error, (t := now()), t, peak_rss_mib, k, name])

    def stage(self, k: int, name: str) -> Stage | None:
        rows = self._fetch(Stage, "SELECT * FROM stages WHERE round = ? AND name = ?", [k, name])
        return rows[0] if rows else None

    def stages(self, k: int | None = None) -> list[Stage]:
        if k is None:
            return self._fetch(Stage, "SELECT * FROM stages ORDER BY id")
        return self._fetch(Stage, "SELECT * FROM stages WHERE round = ? ORDER BY id", [k])

    # ------------------------------------------------------------ prompts

    def add_prompts(self, prompts: Iterable[NewPrompt]) -> list[int]:
        """Insert prompts in one transaction; ones already present keep their id. Returns ids in order."""
        ids = []
        with self.transaction():
            for p in prompts:
                digest = prompt_hash(p.text, p.split, p.constraints if p.source == MIRROR else None)
                row = dataclasses.asdict(p) | {"hash": digest, "created_at": now()}
                self._insert("prompts", row, ignore=True)
                ids.append(self.db.execute("SELECT id FROM prompts WHERE hash = ?", [digest]).fetchone()[0])
        return ids

    def prompts(self, split: str | None = None, round: int | None = None, source: str | None = None) -> list[Prompt]:
        where, params = _where({"split": split, "round": round, "source": source})
        return self._fetch(Prompt, f"SELECT * FROM prompts {where} ORDER BY id", params)

    def prompt(self, prompt_id: int) -> Prompt | None:
        rows = self._fetch(Prompt, "SELECT * FROM prompts WHERE id = ?", [prompt_id])
        return rows[0] if rows else None

    # ------------------------------------------------------------ responses

    def add_response(self, response: NewResponse) -> int | None:
        """Store one response as soon as it is done; a duplicate (resume) is skipped and returns None."""
        if response.kind not in KINDS:  # INSERT OR IGNORE would drop it silently on the CHECK
            raise ValueError(f"response kind {response.kind!r} is not one of {', '.join(KINDS)}")
        row = dataclasses.asdict(response) | {"created_at": now()}
        return self._insert("responses", row, ignore=True)

    def responses(self, round: int | None = None, prompt_id: int | None = None, after_id: int = 0,
                  limit: int | None = None) -> list[Response]:
        where, params = _where({"round": round, "prompt_id": prompt_id}, extra=("id > ?", after_id))
        tail = f" LIMIT {int(limit)}" if limit else ""
        return self._fetch(Response, f"SELECT * FROM responses {where} ORDER BY id{tail}", params)

    def sample_indices(self, round: int, policy: str) -> dict[int, set[int]]:
        """prompt id -> sample indices already stored for this round and policy (what resume skips)."""
        out: dict[int, set[int]] = {}
        for prompt_id, index in self.db.execute("SELECT prompt_id, sample_index FROM responses WHERE round = ? "
                                                "AND policy = ? AND kind = 'sample'", [round, policy]).fetchall():
            out.setdefault(prompt_id, set()).add(index)
        return out

    def count_prompts(self, split: str | None = None, round: int | None = None, source: str | None = None) -> int:
        where, params = _where({"split": split, "round": round, "source": source})
        return self.db.execute(f"SELECT count(*) FROM prompts {where}", params).fetchone()[0]

    def count_responses(self, round: int | None = None) -> int:
        where, params = _where({"round": round})
        return self.db.execute(f"SELECT count(*) FROM responses {where}", params).fetchone()[0]

    # ------------------------------------------------------------ judgements and verifications

    def add_judgement(self, judgement: NewJudgement) -> int | None:
        row = dataclasses.asdict(judgement) | {"created_at": now()}
        return self._insert("judgements", row, ignore=True)

    def judgements(self, response_id: int | None = None, round: int | None = None) -> list[Judgement]:
        if round is not None:
            return self._fetch(Judgement, "SELECT j.* FROM judgements j JOIN responses r ON r.id = "
                               "j.response_id WHERE r.round = ? ORDER BY j.id", [round])
        where, params = _where({"response_id": response_id})
        return self._fetch(Judgement, f"SELECT * FROM judgements {where} ORDER BY id", params)

    def judgement_keys(self, round: int) -> set[tuple[int, str, str, int, int, str]]:
        """The keys (NewJudgement.key) of a round's judgements: what a resumed judge skips."""
        rows = self.db.execute("SELECT j.response_id, j.judge, j.rubric, j.sample_index, j.other_id, j.position "
                               "FROM judgements j JOIN responses r ON r.id = j.response_id WHERE r.round = ?",
                               [round]).fetchall()
        return {tuple(row) for row in rows}

    def round_verifications(self, round: int) -> dict[int, dict[str, bool]]:
        """response id -> {constraint id: passed} for every verified response of a round."""
        out: dict[int, dict[str, bool]] = {}
        for response_id, constraint_id, passed in self.db.execute(
                "SELECT v.response_id, v.constraint_id, v.passed FROM verifications v JOIN responses r "
                "ON r.id = v.response_id WHERE r.round = ?", [round]).fetchall():
            out.setdefault(response_id, {})[constraint_id] = bool(passed)
        return out

    def add_verifications(self, response_id: int, results: dict[str, bool]) -> None:
        with self.transaction():
            for constraint_id, passed in results.items():
                self._insert("verifications", {"response_id": response_id, "constraint_id": constraint_id,
                                               "passed": bool(passed)}, ignore=True)

    def verifications(self, response_id: int) -> list[Verification]:
        return self._fetch(Verification, "SELECT * FROM verifications WHERE response_id = ? ORDER BY id",
                           [response_id])

    # ------------------------------------------------------------ pairs and training

    def add_pair(self, pair: NewPair) -> int | None:
        return self._insert("pairs", dataclasses.asdict(pair), ignore=True)

    def pairs(self, round: int) -> list[Pair]:
        return self._fetch(Pair, "SELECT * FROM pairs WHERE round = ? ORDER BY id", [round])

    def add_train_step(self, step: TrainStep) -> None:
        row = dataclasses.asdict(step) | {"created_at": now()}
        self._write(f"INSERT OR REPLACE INTO train_steps ({', '.join(row)}) VALUES "
                    f"({', '.join('?' for _ in row)})", row.values())

    def train_steps(self, round: int, after_step: int = -1) -> list[TrainStep]:
        return self._fetch(TrainStep, "SELECT * FROM train_steps WHERE round = ? AND step > ? ORDER BY step",
                           [round, after_step])

    def clear_pairs(self, round: int) -> None:
        """Pairs are cheap to rebuild from judgements; the pairs stage rebuilds a round's set whole."""
        self._write("DELETE FROM pairs WHERE round = ?", [round])

    def add_demonstration(self, round: int, prompt_id: int | None, data: dict[str, Any]) -> int:
        return self._insert("demonstrations", {"round": round, "prompt_id": prompt_id, "data": data,
                                               "created_at": now()})

    def demonstrations(self, limit: int) -> list[Demonstration]:
        """The newest `limit` demonstrations, oldest first (CycleAlign's in-context examples)."""
        rows = self._fetch(Demonstration, "SELECT * FROM demonstrations ORDER BY id DESC LIMIT ?", [limit])
        return rows[::-1]

    # ------------------------------------------------------------ metrics, events, controls

    def set_metric(self, round: int, name: str, value: float | None) -> None:
        self._write("INSERT OR REPLACE INTO metrics (round, name, value, created_at) VALUES (?, ?, ?, ?)",
                    [round, name, value, now()])

    def metrics(self, round: int | None = None) -> dict[int, dict[str, float | None]]:
        where, params = _where({"round": round})
        out: dict[int, dict[str, float | None]] = {}
        for k, name, value in self.db.execute(f"SELECT round, name, value FROM metrics {where} "
                                              "ORDER BY round, name", params).fetchall():
            out.setdefault(k, {})[name] = value
        return out

    def log_event(self, level: str, message: str, *, round: int | None = None, stage: str | None = None,
                  data: dict[str, Any] | None = None) -> int:
        return self._insert("events", {"ts": now(), "level": level, "round": round, "stage": stage,
                                       "message": message, "data": data or {}})

    def events(self, after_id: int = 0, limit: int | None = None) -> list[Event]:
        tail = f" LIMIT {int(limit)}" if limit else ""
        return self._fetch(Event, f"SELECT * FROM events WHERE id > ? ORDER BY id{tail}", [after_id])

    def request_control(self, action: str) -> int:
        return self._insert("controls", {"ts": now(), "action": action, "handled": False})

    def pending_controls(self) -> list[Control]:
        return self._fetch(Control, "SELECT * FROM controls WHERE handled = 0 ORDER BY id")

    def mark_control_handled(self, control_id: int) -> None:
        self._write("UPDATE controls SET handled = 1, handled_at = ? WHERE id = ?", [now(), control_id])

    def last_activity(self) -> str | None:
        """Timestamp of the newest row any stage wrote: the run's heartbeat."""
        stamps = [self.db.execute(f"SELECT max({column}) FROM {table}").fetchone()[0]
                  for table, column in (("events", "ts"), ("responses", "created_at"),
                                        ("judgements", "created_at"), ("train_steps", "created_at"))]
        stamps = [s for s in stamps if s]
        return max(stamps) if stamps else None

    def controls(self) -> list[Control]:
        return self._fetch(Control, "SELECT * FROM controls ORDER BY id")

    def beat(self, pid: int) -> None:
        self._write("INSERT OR REPLACE INTO heartbeat (id, pid, ts) VALUES (1, ?, ?)", [pid, now()])

    def heartbeat(self) -> tuple[int, str] | None:
        """(pid, timestamp) of the loop process's last heartbeat, if any process ever beat."""
        row = self.db.execute("SELECT pid, ts FROM heartbeat WHERE id = 1").fetchone()
        return (row[0], row[1]) if row else None

    # ------------------------------------------------------------ the round controller

    def set_decisions(self, round: int, decisions: list[NewDecision]) -> None:
        """Replace a round's decisions at once (a resumed round decides again, the same way)."""
        with self.transaction():
            self._write("DELETE FROM decisions WHERE round = ?", [round])
            for d in decisions:
                self._insert("decisions", dataclasses.asdict(d) | {"created_at": now()})

    def decisions(self, round: int | None = None) -> list[Decision]:
        where, params = _where({"round": round})
        return self._fetch(Decision, f"SELECT * FROM decisions {where} ORDER BY round, id", params)

    def set_override(self, round: int, action: str) -> None:
        self._write("INSERT OR REPLACE INTO overrides (round, action, created_at) VALUES (?, ?, ?)",
                    [round, action, now()])

    def overrides(self) -> dict[int, str]:
        return {o.round: o.action for o in self._fetch(Override, "SELECT * FROM overrides ORDER BY id")}


def _where(filters: dict[str, Any], extra: tuple[str, Any] | None = None) -> tuple[str, list[Any]]:
    """WHERE clause from column=value filters, skipping None; column names come from code, not users."""
    clauses = [f"{column} = ?" for column, value in filters.items() if value is not None]
    params = [value for value in filters.values() if value is not None]
    if extra:
        clauses.append(extra[0])
        params.append(extra[1])
    return ("WHERE " + " AND ".join(clauses)) if clauses else "", params


__all__ = ["Store", "now", "prompt_hash", "MIGRATION_SET"]

"""Reads for pollers and lookups by id: rows after a cursor (the UI polls these twice a second),
rows by a set of ids, a round's held-out answers, full-text search. Part of `Store`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from selfalign.store.rows import Judgement, Pair, Prompt, Response, Verification

T = TypeVar("T")


class PollingReads:
    """Mixed into Store: uses its `db` connection and `_fetch`."""

    # ------------------------------------------------------------ incremental reads (the TUI polls these)

    def max_id(self, table: str) -> int:
        assert table in ("responses", "judgements", "verifications", "pairs", "events"), table
        return self.db.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]

    def responses_since(self, after_id: int, limit: int) -> list[Response]:
        return self._fetch(Response, "SELECT * FROM responses WHERE id > ? ORDER BY id LIMIT ?", [after_id, limit])

    def judgements_since(self, after_id: int, min_response_id: int = 0, limit: int = 10_000) -> list[Judgement]:
        return self._fetch(Judgement, "SELECT * FROM judgements WHERE id > ? AND response_id >= ? ORDER BY id "
                           "LIMIT ?", [after_id, min_response_id, limit])

    def verifications_since(self, after_id: int, min_response_id: int = 0,
                            limit: int = 10_000) -> list[Verification]:
        return self._fetch(Verification, "SELECT * FROM verifications WHERE id > ? AND response_id >= ? "
                           "ORDER BY id LIMIT ?", [after_id, min_response_id, limit])

    def pairs_since(self, after_id: int, limit: int) -> list[Pair]:
        return self._fetch(Pair, "SELECT * FROM pairs WHERE id > ? ORDER BY id LIMIT ?", [after_id, limit])

    def response(self, response_id: int) -> Response | None:
        rows = self._fetch(Response, "SELECT * FROM responses WHERE id = ?", [response_id])
        return rows[0] if rows else None

    def prompts_by_id(self, ids: Iterable[int]) -> dict[int, Prompt]:
        return self._by_id(Prompt, "prompts", ids)

    def responses_by_id(self, ids: Iterable[int]) -> dict[int, Response]:
        return self._by_id(Response, "responses", ids)

    def _by_id(self, cls: type[T], table: str, ids: Iterable[int]) -> dict[int, T]:
        ids = sorted(set(ids))
        out: dict[int, T] = {}
        for start in range(0, len(ids), 500):  # SQLite's parameter limit
            chunk = ids[start:start + 500]
            for row in self._fetch(cls, f"SELECT * FROM {table} WHERE id IN ({', '.join('?' for _ in chunk)})",
                                   chunk):
                out[row.id] = row
        return out

    def heldout_answers(self, round: int) -> list[tuple[Prompt, Response]]:
        """Round k's answers to the run's held-out prompts (the evaluate stage's), in prompt order."""
        rows = self._fetch(Response, "SELECT r.* FROM responses r JOIN prompts p ON p.id = r.prompt_id "
                           "WHERE p.split = 'heldout' AND p.source = 'heldout' AND r.round = ? AND r.kind = 'eval' "
                           "ORDER BY r.prompt_id, r.sample_index", [round])
        prompts = self.prompts_by_id(r.prompt_id for r in rows)
        seen, out = set(), []
        for r in rows:  # one answer per prompt (the evaluate stage samples one)
            if r.prompt_id not in seen:
                seen.add(r.prompt_id)
                out.append((prompts[r.prompt_id], r))
        return out

    # ------------------------------------------------------------ search

    def search_responses(self, query: str, limit: int = 200) -> list[Response]:
        """Full-text search over response texts, best match first; words are matched as given, so
        FTS syntax characters in a user's query cannot make it fail."""
        words = [w.replace('"', '""') for w in query.split()]
        if not words:
            return []
        match = " ".join(f'"{w}"' for w in words)
        return self._fetch(Response, "SELECT r.* FROM responses_fts f JOIN responses r ON r.id = f.rowid "
                           "WHERE responses_fts MATCH ? ORDER BY f.rank LIMIT ?", [match, limit])

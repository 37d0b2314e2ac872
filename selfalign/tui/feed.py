"""What the UI shows, read from the run database in increments (no textual here: tested on its own).

`Feed.poll()` runs in a worker thread and returns a `Snapshot` with only what changed since the last
poll: new responses (with their prompt), judgements and verifications folded into those responses,
new pairs, training steps, events, plus the small things read whole (state, stages, metrics,
controls). Each table is read by id cursor, so a poll costs the same on a run with 100 rows or
100,000. The first poll starts near the end of each table: a UI shows the newest rows, not history.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from selfalign import config as config_mod
from selfalign import judging, runs, verifiers
from selfalign import status as run_status
from selfalign.store import Store, open_store
from selfalign.store.rows import Control, Decision, Event, Prompt, Response, Stage, TrainStep

KEEP_RESPONSES = 2000  # responses the UI holds (newest); older ones are reachable through search
KEEP_PAIRS = 1000
FIRST_EVENTS = 500
BATCH = 2000  # rows per table per poll, so one poll never stalls on a burst


@dataclass
class ResponseView:
    """One response with everything the tables show about it."""

    id: int
    round: int
    prompt_id: int
    prompt: str
    constraints: list[dict[str, Any]]
    policy: str
    sample_index: int
    text: str
    tokens: int
    finish_reason: str
    mean_logprob: float | None
    rubric_score: float | None = None  # mean of the self-judge's rubric samples
    rubric_parsed: bool | None = None  # None: not judged by the rubric (yet)
    likelihood_rank: int | None = None  # 1 = most likely of its prompt's samples
    blackbox_score: float | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    _rubric_scores: list[float] = field(default_factory=list, repr=False)
    _rubric_count: int = field(default=0, repr=False)

    @classmethod
    def of(cls, r: Response, p: Prompt) -> ResponseView:
        """A response and its prompt, not judged yet (judgements and checks are folded in as they come)."""
        return cls(r.id, r.round, r.prompt_id, p.text, p.constraints, r.policy, r.sample_index, r.text, r.tokens,
                   r.finish_reason, r.mean_logprob)

    @property
    def csr(self) -> float | None:
        return verifiers.share_met(self.checks)

    @property
    def parse_status(self) -> str:
        if self.rubric_parsed is None:
            return "-"
        return "ok" if self.rubric_parsed else "fail"


@dataclass
class PairView:
    id: int
    round: int
    prompt: str
    chosen: str
    rejected: str | None
    margin: float | None
    rule: str
    scores: dict[str, Any]


@dataclass
class Snapshot:
    state: dict[str, Any]  # `selfalign status` fields
    stages: list[Stage]
    responses: list[ResponseView]  # new or changed since the last poll
    pairs: list[PairView]
    train_steps: list[TrainStep]
    metrics: dict[int, dict[str, float | None]]
    events: list[Event]
    controls: list[Control]
    decisions: list[Decision] = field(default_factory=list)
    overrides: dict[int, str] = field(default_factory=dict)
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


class FeedClosed(Exception):
    """The UI is going away; a poll that was already queued has nothing to do."""


class Feed:
    """Incremental reader of one run. Its calls run in worker threads; a lock keeps them one at a time
    and keeps `close()` (on the UI thread, at exit) from closing the connection under a running query,
    which crashes SQLite's C code rather than raising."""

    def __init__(self, folder: runs.RunFolder):
        self.folder = folder
        self.store: Store | None = None
        self.lock = threading.Lock()
        self.closed = False
        self.views: dict[int, ResponseView] = {}
        self.cursor: dict[str, int] = {}
        self.train_cursor: dict[int, int] = {}
        self.config = config_mod.Watched(folder.config_path)  # parsed again only when the file changes

    def _open(self) -> Store:
        if self.closed:
            raise FeedClosed()
        if self.store is None:
            self.store = open_store(self.folder.db_path)
            s = self.store
            newest = s.max_id("responses")
            first = max(0, newest - KEEP_RESPONSES)
            self.cursor = {"responses": first, "judgements": 0, "verifications": 0, "min_response": first + 1,
                           "pairs": max(0, s.max_id("pairs") - KEEP_PAIRS),
                           "events": max(0, s.max_id("events") - FIRST_EVENTS)}
        return self.store

    def __enter__(self) -> Feed:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self.lock:
            self.closed = True
            if self.store is not None:
                self.store.close()
                self.store = None

    def poll(self) -> Snapshot:
        with self.lock:
            return self._poll()

    def _poll(self) -> Snapshot:
        store = self._open()
        changed: dict[int, ResponseView] = {}
        self._read_responses(store, changed)
        self._read_judgements(store, changed)
        self._read_verifications(store, changed)
        state = run_status.run_status(self.folder, store, activity=False, config=self.config)
        rounds = store.rounds()
        stages = store.stages(rounds[-1].k) if rounds else []
        steps = []
        for r in rounds:
            new = store.train_steps(r.k, after_step=self.train_cursor.get(r.k, -1))
            if new:
                self.train_cursor[r.k] = new[-1].step
                steps.extend(new)
        events = store.events(after_id=self.cursor["events"], limit=BATCH)
        if events:
            self.cursor["events"] = events[-1].id
        # copies: the UI thread reads them while the next poll goes on folding judgements into ours
        views = [replace(v, checks=dict(v.checks)) for v in sorted(changed.values(), key=lambda v: v.id)]
        return Snapshot(state=state, stages=stages, responses=views,
                        pairs=self._read_pairs(store), train_steps=steps, metrics=store.metrics(),
                        events=events, controls=store.controls()[-20:], decisions=store.decisions(),
                        overrides=store.overrides())

    # ---------------------------------------------------------------- the response tables

    def _read_responses(self, store: Store, changed: dict[int, ResponseView]) -> None:
        rows = store.responses_since(self.cursor["responses"], BATCH)
        if not rows:
            return
        self.cursor["responses"] = rows[-1].id
        prompts = store.prompts_by_id(r.prompt_id for r in rows)
        for r in rows:
            self.views[r.id] = changed[r.id] = ResponseView.of(r, prompts[r.prompt_id])
        while len(self.views) > KEEP_RESPONSES:  # dicts keep insertion order: the oldest go first
            del self.views[next(iter(self.views))]
        self.cursor["min_response"] = next(iter(self.views))

    def _read_judgements(self, store: Store, changed: dict[int, ResponseView]) -> None:
        rows = store.judgements_since(self.cursor["judgements"], self.cursor["min_response"], BATCH)
        if rows:
            self.cursor["judgements"] = rows[-1].id
        groups = set()
        for j in rows:
            view = self.views.get(j.response_id)
            if view is None:
                continue
            if j.judge == "self" and j.rubric in judging.SCALES:  # not pairwise checks or rubric rewrite trials
                view._rubric_count += 1
                if j.score is not None:
                    view._rubric_scores.append(j.score)
                view.rubric_score = (sum(view._rubric_scores) / len(view._rubric_scores)
                                     if view._rubric_scores else None)
                view.rubric_parsed = bool(view._rubric_scores)
            elif j.judge == "likelihood":
                groups.add((view.round, view.prompt_id, view.policy))
            elif j.judge == "blackbox":
                view.blackbox_score = j.score
            changed[view.id] = view
        for group in groups:  # rank within the prompt's samples: the likelihood judge's verdict
            members = [v for v in self.views.values() if (v.round, v.prompt_id, v.policy) == group]
            ranked = sorted(members, key=lambda v: -(v.mean_logprob if v.mean_logprob is not None else -1e9))
            for rank, v in enumerate(ranked, 1):
                if v.likelihood_rank != rank:
                    v.likelihood_rank = rank
                    changed[v.id] = v

    def _read_verifications(self, store: Store, changed: dict[int, ResponseView]) -> None:
        rows = store.verifications_since(self.cursor["verifications"], self.cursor["min_response"], BATCH)
        if rows:
            self.cursor["verifications"] = rows[-1].id
        for v in rows:
            view = self.views.get(v.response_id)
            if view is not None:
                view.checks[v.constraint_id] = v.passed
                changed[view.id] = view

    def _read_pairs(self, store: Store) -> list[PairView]:
        rows = store.pairs_since(self.cursor["pairs"], BATCH)
        if not rows:
            return []
        self.cursor["pairs"] = rows[-1].id
        responses = store.responses_by_id([p.chosen_id for p in rows] + [p.rejected_id for p in rows
                                                                          if p.rejected_id])
        prompts = store.prompts_by_id(p.prompt_id for p in rows)
        return [PairView(p.id, p.round, prompts[p.prompt_id].text, responses[p.chosen_id].text,
                         responses[p.rejected_id].text if p.rejected_id else None, p.margin, p.rule, p.scores)
                for p in rows]

    # ---------------------------------------------------------------- on demand

    def detail(self, response_id: int) -> dict[str, Any]:
        """Everything about one response, for the detail screen (a Feed of its own: no lock needed)."""
        store = self._open()
        r = store.response(response_id)
        if r is None:
            return {}
        # an edited copy (a repair or a correction) names the answer it edits: shown beside it, words diffed
        source_id = r.params.get("corrected_from") or r.params.get("repaired_from")
        return {"response": r, "prompt": store.prompt(r.prompt_id), "judgements": store.judgements(response_id),
                "verifications": store.verifications(response_id),
                "source": store.response(source_id) if source_id else None}

    def search(self, query: str, limit: int = 200) -> list[ResponseView]:
        store = self._open()
        rows = store.search_responses(query, limit)
        prompts = store.prompts_by_id(r.prompt_id for r in rows)
        return [self.views.get(r.id) or ResponseView.of(r, prompts[r.prompt_id]) for r in rows]

    def promote(self, round_k: int) -> None:
        """The user's word over the controller's: keep a rejected round (the next round builds on it)."""
        self._open().set_override(round_k, "promote")

    def request(self, action: str) -> int:
        """Write a control request (pause, resume, stop, stop_after_stage) for the loop to pick up."""
        return self._open().request_control(action)


def word_diff(a: str, b: str) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """Both texts as (word-with-spacing, differs) runs, so a viewer can highlight what differs."""
    import difflib
    import re

    wa, wb = re.findall(r"\S+\s*", a), re.findall(r"\S+\s*", b)
    left: list[tuple[str, bool]] = []
    right: list[tuple[str, bool]] = []
    matcher = difflib.SequenceMatcher(a=[w.strip() for w in wa], b=[w.strip() for w in wb], autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        same = op == "equal"
        if i2 > i1:
            left.append(("".join(wa[i1:i2]), not same))
        if j2 > j1:
            right.append(("".join(wb[j1:j2]), not same))
    return left, right


def smooth(values: list[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average, as TensorBoard and W&B smooth curves (bias-corrected at the start)."""
    out, last, norm = [], 0.0, 0.0
    for v in values:
        last = weight * last + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out.append(last / norm)
    return out


def matches(view: ResponseView, query: str) -> bool:
    """The Judgements filter: `round:N`, `parse:ok|fail|-`, `unmet` (a constraint failed), and words
    that must all appear in the prompt or the response (case-insensitive)."""
    haystack = None
    for token in query.lower().split():
        if token.startswith("round:"):
            if str(view.round) != token[6:]:
                return False
        elif token.startswith("parse:"):
            if view.parse_status != token[6:]:
                return False
        elif token == "unmet":
            if not view.checks or all(view.checks.values()):
                return False
        else:
            haystack = haystack or (view.prompt + "\n" + view.text).lower()
            if token not in haystack:
                return False
    return True

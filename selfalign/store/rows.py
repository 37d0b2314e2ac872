"""Typed rows: one dataclass per table, field names equal to column names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Columns stored as JSON text and decoded on read.
JSON_COLUMNS = frozenset({"constraints", "params", "data", "scores"})
# Columns stored as 0/1 and read back as bool.
BOOL_COLUMNS = frozenset({"parsed_ok", "passed", "handled"})


@dataclass
class RunInfo:
    id: int
    name: str
    created_at: str
    selfalign_version: str
    config_toml: str
    note: str


ROUND_FINISHED = ("done", "rejected")  # a rejected round ran to the end; the controller did not keep it


@dataclass
class Round:
    k: int
    status: str
    policy_adapter: str | None
    started_at: str
    finished_at: str | None
    seconds: float | None
    policy_round: int | None = None  # the round whose adapter this round samples from (None: the base model)


@dataclass
class Stage:
    id: int
    round: int
    name: str
    status: str
    done: int
    total: int | None
    error: str | None
    started_at: str
    finished_at: str | None
    seconds: float | None
    peak_rss_mib: float | None = None  # the stage's own peak resident memory, where the platform tells


@dataclass
class NewPrompt:
    text: str
    source: str
    split: str = "train"
    constraints: list[dict[str, Any]] = field(default_factory=list)
    round: int | None = None


@dataclass
class Prompt:
    id: int
    text: str
    source: str
    split: str
    constraints: list[dict[str, Any]]
    round: int | None
    hash: str
    created_at: str


@dataclass
class NewResponse:
    prompt_id: int
    round: int
    policy: str
    sample_index: int
    text: str
    tokens: int
    finish_reason: str
    mean_logprob: float | None = None
    params: dict[str, Any] = field(default_factory=dict)
    duration_s: float | None = None
    kind: str = "sample"  # sample (drawn for training), repair (an edited copy), eval (a held-out answer)


# The kinds of a response row (the responses.kind column).
SAMPLE, REPAIR, EVAL, CORRECTION = "sample", "repair", "eval", "correction"
KINDS = (SAMPLE, REPAIR, EVAL, CORRECTION)  # responses.kind's CHECK holds the same list

# A prompt's source when the pairs stage made it (pairs.mirror): a training prompt with the constraints asking
# for a form taken off. Its text repeats the original's, so its identity also covers its constraints.
MIRROR = "mirror"


@dataclass
class Response(NewResponse):
    id: int = 0
    created_at: str = ""


@dataclass
class NewJudgement:
    response_id: int
    judge: str
    rubric: str
    score: float | None
    parsed_ok: bool
    raw_output: str = ""
    sample_index: int = 0
    other_id: int = 0  # side by side: the response compared with (0: judged alone)
    position: str = ""  # side by side: 'first' or 'second', where this response was shown


def judgement_key(response_id: int, judge: str, rubric: str, sample_index: int = 0, other_id: int = 0,
                  position: str = "") -> tuple[int, str, str, int, int, str]:
    """What makes a judgement unique (the table's UNIQUE columns): what a resumed stage looks up to skip it."""
    return (response_id, judge, rubric, sample_index, other_id, position)


@dataclass
class Judgement(NewJudgement):
    id: int = 0
    created_at: str = ""


@dataclass
class Verification:
    response_id: int
    constraint_id: str
    passed: bool
    id: int = 0


@dataclass
class NewPair:
    round: int
    prompt_id: int
    chosen_id: int
    rejected_id: int | None
    margin: float | None
    rule: str
    scores: dict[str, Any] = field(default_factory=dict)  # the combined score and its parts, both sides


@dataclass
class Pair(NewPair):
    id: int = 0


@dataclass
class TrainStep:
    round: int
    step: int
    loss: float
    rewards_chosen: float | None = None
    rewards_rejected: float | None = None
    reward_margin: float | None = None
    accuracy: float | None = None
    lr: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None
    created_at: str = ""


@dataclass
class Demonstration:
    id: int
    round: int
    prompt_id: int | None
    data: dict[str, Any]
    created_at: str


@dataclass
class Event:
    id: int
    ts: str
    level: str
    round: int | None
    stage: str | None
    message: str
    data: dict[str, Any]


@dataclass
class Control:
    id: int
    ts: str
    action: str
    handled: bool
    handled_at: str | None


@dataclass
class NewDecision:
    round: int
    kind: str
    reason: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Decision(NewDecision):
    id: int = 0
    created_at: str = ""


@dataclass
class Override:
    id: int
    round: int
    action: str
    created_at: str


# Each table's row type: reads map columns onto these fields by name, so a test holds them equal.
ROW_TYPES: dict[str, type] = {
    "runs": RunInfo, "rounds": Round, "stages": Stage, "prompts": Prompt, "responses": Response,
    "judgements": Judgement, "verifications": Verification, "pairs": Pair, "train_steps": TrainStep,
    "demonstrations": Demonstration, "events": Event, "controls": Control, "decisions": Decision,
    "overrides": Override,
}
# Tables read as plain values, not rows: (round, name) -> value, and the writer's (pid, time).
PLAIN_TABLES = ("metrics", "heartbeat")

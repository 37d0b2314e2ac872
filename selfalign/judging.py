"""Judging, in one place: asking a model to judge responses, and the pure functions that read its replies.

Stages never import each other, so what the judge stage, evaluate and the rubric rewrite ask the same
way lives here: scoring each response with a rubric template, judging two responses side by side in
both orders (position bias in the judge stage, the win rate in evaluate), and reading those judgements
back. Below them, with no model and no database (tested on fixed inputs): parsing judge outputs,
rankings, agreement with the verifiers, trust weights and the combined score the pairs stage ranks by.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations

from selfalign import prompts, verifiers
from selfalign.engines.base import GenerationRequest, GenerationResult
from selfalign.stages import StageContext, derive_seed, policy_request
from selfalign.store.rows import Judgement, NewJudgement, Response, judgement_key

POSITIONS = ("first", "second")


def instruction(prompt) -> str:
    """The prompt as the policy saw it: its text with its constraints attached."""
    return verifiers.attach(prompt.text, prompt.constraints)


def judge_request(ctx: StageContext, text: str, *, key, n: int, seed: int) -> GenerationRequest:
    """A request to the policy acting as judge, with the judge's sampling settings."""
    cfg = ctx.config
    return policy_request(ctx, text, key=key, n=n, seed=seed, max_new_tokens=cfg.judge.max_new_tokens,
                          temperature=cfg.judge.temperature, top_p=1.0)


def with_template(ctx: StageContext, template, label: str, scale: str, responses, train, done_keys,
                  samples: int, advance: Callable[..., None] = lambda n=1: None) -> None:
    """Score each response `samples` times with a rubric template; judgements are stored under `label`
    (what a resume checks in done_keys) and parsed on the `scale` of SCALES. The rubric
    rewrite scores its candidate through here too, so both rubrics are asked the same way."""
    cfg = ctx.config
    todo = []
    for r in responses:
        missing = [i for i in range(samples) if judgement_key(r.id, "self", label, i) not in done_keys]
        advance(samples - len(missing))
        if missing:
            text = template.render(instruction=instruction(train[r.prompt_id]),
                                   response=mask_judge_format(r.text)[0])
            todo.append(judge_request(ctx, text, key=(r.id, tuple(missing)), n=len(missing),
                                      seed=derive_seed(cfg.run.seed, ctx.round, label, r.id)))

    def store_result(result) -> None:
        response_id, missing = result.key
        score = parse_score(result.text, scale)
        ctx.store.add_judgement(NewJudgement(response_id, "self", label, score, score is not None, result.text,
                                             missing[result.sample_index]))
        advance()

    for start in range(0, len(todo), cfg.generate.batch_size):
        ctx.check_stop()
        ctx.engine.generate(todo[start:start + cfg.generate.batch_size], adapter=ctx.adapter,
                            on_result=store_result)


def mean_rubric_scores(judgements: Iterable[Judgement], scales: dict[str, str] | None = None,
                       raw: bool = False) -> dict[int, float]:
    """response id -> the mean of its parsed self-judge rubric scores on 0..1 (`raw`: on the rubric's own
    scale). `scales` maps the rubric labels to read to the scale each is scored on (default: every
    scale of SCALES, under its own name)."""
    scales = scales or {s: s for s in SCALES}
    sums: dict[int, list[float]] = defaultdict(list)
    for j in judgements:
        if j.judge == "self" and j.rubric in scales and j.parsed_ok and j.score is not None:
            sums[j.response_id].append(j.score if raw else normalise(scales[j.rubric], j.score))
    return {rid: sum(v) / len(v) for rid, v in sums.items()}


# ---------------------------------------------------------------- side by side, in both orders


@dataclass
class SideBySide:
    """Who judges two responses shown together, and how it is asked."""

    judge: str  # the judgements' judge label: self, base, blackbox
    rubric: str  # what the judgement is for: 'pairwise' (position bias) or 'winrate'
    request: Callable[[str, object, int], GenerationRequest]  # (text, key, seed) -> the request
    ask: Callable[[list[GenerationRequest]], list[GenerationResult]]  # the judge's replies
    mask_judge_format: bool = False  # hide judge-format text inside the responses (self-judging)


def both_orders(ctx: StageContext, how: SideBySide, items: Sequence[tuple[str, Response, Response]]) -> None:
    """Judge each (instruction, x, y) with x shown first, then second. One judgement per order is stored
    on x: score 1.0 when x won, `other_id` y, `position` where x was shown. Stored orders are skipped."""
    template = prompts.load_template("judge_pairwise.txt", ("instruction", "response_a", "response_b"), ctx.run_dir)
    done = ctx.store.judgement_keys(ctx.round)

    def shown(text: str) -> str:
        return mask_judge_format(text)[0] if how.mask_judge_format else text

    requests = []
    for text, x, y in items:
        for position, (a, b) in zip(POSITIONS, ((x, y), (y, x)), strict=True):
            if judgement_key(x.id, how.judge, how.rubric, 0, y.id, position) in done:
                continue
            prompt = template.render(instruction=text, response_a=shown(a.text), response_b=shown(b.text))
            requests.append(how.request(prompt, (x.id, y.id, position), x.id))
    if not requests:
        return
    ctx.check_stop()
    for result in how.ask(requests):
        x_id, y_id, position = result.key
        verdict = parse_verdict(result.text)
        x_wins = None if verdict is None else float((verdict == "A") == (position == "first"))
        ctx.store.add_judgement(NewJudgement(x_id, how.judge, how.rubric, x_wins, verdict is not None, result.text,
                                             other_id=y_id, position=position))


def verdicts(judgements: Iterable[Judgement], judge: str, rubric: str) -> dict[tuple[int, int], dict[str, float]]:
    """(x, y) -> {position of x: 1.0 if x won there} from the parsed side-by-side judgements."""
    out: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
    for j in judgements:
        if j.judge == judge and j.rubric == rubric and j.parsed_ok and j.other_id:
            out[(j.response_id, j.other_id)][j.position] = j.score
    return dict(out)


# ---------------------------------------------------------------- reading judges (pure functions)

# Rubric name -> (lowest, highest) score of its scale.
SCALES = {"additive5": (0.0, 5.0), "isheep_quality": (1.0, 10.0), "isheep_following": (1.0, 10.0)}

# Text in a response that imitates judge output; a response must never raise its own score with it.
JUDGE_FORMAT_RE = re.compile(r"\bscore\s*[:=]\s*\d+(?:\.\d+)?|\b\d{1,2}\s*\|\|\s*\S|\b(?:rating|grade)\s*[:=]\s*\d+",
                             re.IGNORECASE)


def parse_verdict(text: str) -> str | None:
    """'A' or 'B' when a pairwise judge names exactly one of them near the start of its reply."""
    found = set(re.findall(r"\b(?:answer|response)?\s*\b([AB])\b", text.strip()[:40]))
    return found.pop() if len(found) == 1 else None


def parse_score(text: str, rubric: str) -> float | None:
    """The judge's score, or None when the output has no single valid score.

    additive5 looks for 'Score: N' (also 'score = N', '**Score:** N', 'N/5'); I-SHEEP's scales look
    for '<N>||explanation' (also 'N||', 'Score: N'). Failing a marked score, a lone number in range
    at the very start is accepted. Several different marked scores are ambiguous: None.
    """
    low, high = SCALES[rubric]
    text = text.strip()
    if not text:
        return None
    marked = [float(m) for m in re.findall(r"score\W{0,6}(\d{1,2}(?:\.\d+)?)\b", text, re.IGNORECASE)]
    if rubric.startswith("isheep"):
        marked = [float(m) for m in re.findall(r"<?\s*(\d{1,2}(?:\.\d+)?)\s*>?\s*\|\|", text)] + marked
    marked += [float(m) for m in re.findall(r"\b(\d{1,2}(?:\.\d+)?)\s*/\s*" + str(int(high)) + r"\b", text)]
    in_range = [s for s in marked if low <= s <= high]
    if in_range:
        return in_range[0] if len(set(in_range)) == 1 else None
    if marked:
        return None  # a marked score out of range: do not guess another number
    first = re.match(r"^\W*(\d{1,2}(?:\.\d+)?)\b", text)
    if first and low <= float(first.group(1)) <= high:
        return float(first.group(1))
    return None


def parse_ranking(text: str, k: int) -> list[int] | None:
    """A ranking of k responses, best first, as 0-based indices: '[2] > [1] > [3]', '2, 1, 3' or
    'B > A > C'. None unless it names each of the k responses exactly once."""
    letters = re.findall(r"\[([A-Za-z])\]|\b([A-H])\b(?=\s*(?:>|,|$|\n))", text)
    numbers = re.findall(r"\[(\d+)\]", text) or re.findall(r"(?<![\w.])(\d+)(?![\w.])", text)
    order: list[int] = []
    if numbers:
        order = [int(n) - 1 for n in numbers]
    elif letters:
        order = [ord((a or b).upper()) - ord("A") for a, b in letters]
    if len(order) > k:
        order = order[:k]
    if sorted(order) != list(range(k)):
        return None
    return order


def rank_scores(order: Sequence[int]) -> dict[int, float]:
    """Best -> 1.0, worst -> 0.0, evenly spaced."""
    k = len(order)
    return {index: 1.0 if k == 1 else (k - 1 - position) / (k - 1) for position, index in enumerate(order)}


def order_by(values: dict[int, float | None]) -> list[int]:
    """Indices sorted best first by value; None last; ties keep index order."""
    return sorted(values, key=lambda i: (values[i] is None, -(values[i] or 0.0), i))


def agreed_pairs(first: Sequence[int], second: Sequence[int]) -> list[tuple[int, int]]:
    """(better, worse) pairs on which two rankings agree (CycleAlign's pseudo-labels)."""
    pos_a = {index: p for p, index in enumerate(first)}
    pos_b = {index: p for p, index in enumerate(second)}
    agreed = []
    for x, y in combinations(sorted(pos_a), 2):
        if y not in pos_b or x not in pos_b:
            continue
        if (pos_a[x] < pos_a[y]) == (pos_b[x] < pos_b[y]):
            agreed.append((x, y) if pos_a[x] < pos_a[y] else (y, x))
    return agreed


def pairwise_agreement(pairs: Sequence[tuple[float | None, float | None, float, float]]) -> float | None:
    """Share of pairs where a judge orders two responses as the reference does.

    Each item is (judge_a, judge_b, ref_a, ref_b); pairs the reference ties are skipped, a judge tie
    or a missing judge score counts as half.
    """
    total = 0.0
    count = 0
    for judge_a, judge_b, ref_a, ref_b in pairs:
        if ref_a == ref_b:
            continue
        count += 1
        if judge_a is None or judge_b is None or judge_a == judge_b:
            total += 0.5
        elif (judge_a > judge_b) == (ref_a > ref_b):
            total += 1.0
    return total / count if count else None


def grouped_agreement(groups: Sequence[Sequence[int]], judge: Mapping[int, float | None],
                      reference: Mapping[int, float]) -> float | None:
    """pairwise_agreement over every two ids within one group (the responses to one prompt): how
    often `judge` orders them as `reference` (the verifiers' satisfaction rate) does."""
    return pairwise_agreement([(judge.get(x), judge.get(y), reference[x], reference[y])
                               for group in groups for x, y in combinations(group, 2)])


def trust(agreement: float | None) -> float | None:
    """How far a signal's agreement with the verifiers is above chance, in [0, 1]: 0.5 (a coin) or
    worse -> 0, always agreeing -> 1. None when it could not be measured."""
    if agreement is None:
        return None
    return max(0.0, min(1.0, 2 * agreement - 1))


def weigh_by_agreement(weights: Mapping[str, float], agreements: Mapping[str, float | None],
                       exact: str = "verifiers") -> dict[str, float]:
    """Each signal's configured weight times its trust; the exact signal keeps its weight, and a signal
    whose agreement could not be measured (no prompt with differing verifier results) keeps its own."""
    out = {}
    for name, weight in weights.items():
        factor = None if name == exact else trust(agreements.get(name))
        out[name] = weight if factor is None else weight * factor
    return out


def normalise(rubric: str, score: float) -> float:
    low, high = SCALES[rubric]
    return (score - low) / (high - low)


def combine(components: dict[str, float | None], weights: dict[str, float]) -> float | None:
    """Weighted mean of the available components (each in [0, 1]); None when nothing weighs."""
    used = [(weights.get(name, 0.0), value) for name, value in components.items()
            if value is not None and weights.get(name, 0.0) > 0]
    total = sum(w for w, _ in used)
    return sum(w * v for w, v in used) / total if total else None


def spread(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and population standard deviation."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def mask_judge_format(text: str) -> tuple[str, bool]:
    """The response with judge-format text replaced, and whether there was any."""
    masked, count = JUDGE_FORMAT_RE.subn("[removed]", text)
    return masked, count > 0

"""Asking a model to judge responses, shared by the stages that judge: judge, evaluate, rubric_rewrite.

Stages never import each other, so what two of them ask the same way lives here: scoring each
response with a rubric template, judging two responses side by side in both orders (position bias
in the judge stage, the win rate in evaluate), and reading those judgements back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from selfalign import prompts, scoring, verifiers
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
    (what a resume checks in done_keys) and parsed on the `scale` of scoring.SCALES. The rubric
    rewrite scores its candidate through here too, so both rubrics are asked the same way."""
    cfg = ctx.config
    todo = []
    for r in responses:
        missing = [i for i in range(samples) if judgement_key(r.id, "self", label, i) not in done_keys]
        advance(samples - len(missing))
        if missing:
            text = template.render(instruction=instruction(train[r.prompt_id]),
                                   response=scoring.mask_judge_format(r.text)[0])
            todo.append(judge_request(ctx, text, key=(r.id, tuple(missing)), n=len(missing),
                                      seed=derive_seed(cfg.run.seed, ctx.round, label, r.id)))

    def store_result(result) -> None:
        response_id, missing = result.key
        score = scoring.parse_score(result.text, scale)
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
    scale of scoring.SCALES, under its own name)."""
    scales = scales or {s: s for s in scoring.SCALES}
    sums: dict[int, list[float]] = defaultdict(list)
    for j in judgements:
        if j.judge == "self" and j.rubric in scales and j.parsed_ok and j.score is not None:
            sums[j.response_id].append(j.score if raw else scoring.normalise(scales[j.rubric], j.score))
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
        return scoring.mask_judge_format(text)[0] if how.mask_judge_format else text

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
        verdict = scoring.parse_verdict(result.text)
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

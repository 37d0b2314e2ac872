"""Stage `judge`: every signal about the round's responses, each stored as it is computed.

- verifiers: constraint results per response (exact);
- likelihood: the policy's mean token log-probability, already measured while sampling;
- rubric self-judge: the policy scores each response with a rubric from prompts/ (additive 5-point,
  or I-SHEEP's two 1-10 scales), optionally several samples; unparseable outputs are stored with
  parsed_ok = false and left out;
- black-box judge (CycleAlign): an OpenAI-compatible model ranks the K responses of a prompt in one
  request, guided by demonstrations on which it agreed with the white-box (likelihood) ranking;
- health: position bias, score spread, parse failures, agreement with verifiers, reward hacking.
A response that imitates judge output ("Score: 5") is flagged and judged with that text removed.
"""

from __future__ import annotations

import json
import random

from selfalign import judging, prompts, verifiers
from selfalign import metrics as metrics_mod
from selfalign.stages import StageContext, by_prompt, derive_seed, round_responses
from selfalign.store.rows import NewJudgement, Response, judgement_key

NAME = "judge"
RUBRICS = {"additive5": ["additive5"], "isheep": ["isheep_quality", "isheep_following"], "none": []}
COLLAPSE_SHARE = 0.8  # one score value given to this share of responses: the judge has collapsed


def run(ctx: StageContext) -> None:
    cfg, store, k = ctx.config, ctx.store, ctx.round
    train, responses = round_responses(ctx)
    done_keys = store.judgement_keys(k)
    rubrics = RUBRICS[cfg.judge.rubric]
    total = len(responses) * (1 + len(rubrics) * cfg.judge.samples)
    progress = _Progress(ctx, total)

    _verify_and_flag(ctx, responses, train, done_keys)
    progress.add(len(responses))
    for rubric in rubrics:
        _rubric_judge(ctx, rubric, responses, train, done_keys, progress)
    if cfg.judge.weight_blackbox > 0:
        _blackbox_judge(ctx, responses, train, done_keys)
    if cfg.judge.position_bias_pairs and cfg.judge.rubric != "none":
        _position_bias(ctx, responses, train)
    health(ctx)


class _Progress:
    def __init__(self, ctx: StageContext, total: int):
        self.ctx, self.total, self.done = ctx, total, 0

    def add(self, n: int = 1) -> None:
        self.done += n
        self.ctx.report(NAME, min(self.done, self.total), self.total)


def _verify_and_flag(ctx, responses, train, done_keys) -> None:
    store = ctx.store
    verified = store.round_verifications(ctx.round)
    with store.transaction():
        for r in responses:
            constraints = train[r.prompt_id].constraints
            if constraints and r.id not in verified:
                store.add_verifications(r.id, verifiers.check_all(constraints, r.text))
            if judgement_key(r.id, "likelihood", "mean_logprob") not in done_keys:
                store.add_judgement(NewJudgement(r.id, "likelihood", "mean_logprob", r.mean_logprob,
                                                 r.mean_logprob is not None))
            if judging.mask_judge_format(r.text)[1] and judgement_key(r.id, "flag", "judge_format") not in done_keys:
                store.add_judgement(NewJudgement(r.id, "flag", "judge_format", 1.0, True,
                                                 "response contains judge-format text; judged with it removed"))


def _rubric_judge(ctx, rubric, responses, train, done_keys, progress) -> None:
    cfg = ctx.config
    name = cfg.judge.rubric_prompt if cfg.judge.rubric_prompt and rubric == "additive5" else f"judge_{rubric}.txt"
    template = prompts.load_template(name, ("instruction", "response"), ctx.run_dir)
    judging.with_template(ctx, template, rubric, rubric, responses, train, done_keys, cfg.judge.samples, progress.add)


# ---------------------------------------------------------------- black-box judge (CycleAlign)


def _blackbox_judge(ctx, responses, train, done_keys) -> None:
    from selfalign.engines.http_engine import EndpointUnavailable, blackbox_client

    cfg, store = ctx.config, ctx.store
    client = blackbox_client(cfg.judge)
    template = prompts.load_template("blackbox_rank.txt", ("instruction", "responses"), ctx.run_dir)
    groups = by_prompt(responses)
    todo = [pid for pid, group in groups.items()
            if len(group) >= 2 and not all(judgement_key(r.id, "blackbox", "rank") in done_keys for r in group)]
    # A batch of concurrent requests shares one set of demonstrations; agreed examples from it
    # replace the demonstrations for the next batch (and, being stored, for a resumed run).
    for start in range(0, len(todo), cfg.judge.blackbox_concurrency):
        ctx.check_stop()
        batch = todo[start:start + cfg.judge.blackbox_concurrency]
        demos = _demonstrations(ctx)

        def ask(pid, demos=demos):
            group = groups[pid]
            listing = "\n\n".join(f"[{i + 1}]\n{judging.mask_judge_format(r.text)[0]}" for i, r in enumerate(group))
            text = template.render(demos=demos, instruction=judging.instruction(train[pid]),
                                   responses=listing,
                                   k=len(group))
            return client.chat([{"role": "user", "content": text}], max_tokens=64, temperature=0.0)[0]["text"]

        for pid, reply in zip(batch, client.map(ask, batch), strict=True):
            group = groups[pid]
            if isinstance(reply, EndpointUnavailable):
                raw, order = f"error: {reply}", None
            elif isinstance(reply, Exception):
                raise reply  # a 4xx: the URL, model or key is wrong; retrying cannot help
            else:
                raw, order = reply, judging.parse_ranking(reply, len(group))
            scores = judging.rank_scores(order) if order else {}
            with store.transaction():
                for i, r in enumerate(group):
                    store.add_judgement(NewJudgement(r.id, "blackbox", "rank", scores.get(i), order is not None, raw))
            if order:
                _remember_agreement(ctx, pid, train[pid], group, order)


def _remember_agreement(ctx, pid, prompt, group: list[Response], blackbox_order: list[int]) -> None:
    """Where the black-box and likelihood rankings agree, the agreed order becomes a demonstration."""
    white = judging.order_by({i: r.mean_logprob for i, r in enumerate(group)})
    common = _common_order(blackbox_order, white)
    if len(common) >= 2:
        ctx.store.add_demonstration(ctx.round, pid, {"instruction": judging.instruction(prompt),
                                                     "responses": [group[i].text for i in common],
                                                     "ranking": list(range(len(common)))})


def _common_order(a: list[int], b: list[int]) -> list[int]:
    """Longest sequence of items that both rankings put in the same order."""
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) - 1, -1, -1):
        for j in range(len(b) - 1, -1, -1):
            table[i][j] = table[i + 1][j + 1] + 1 if a[i] == b[j] else max(table[i + 1][j], table[i][j + 1])
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        if a[i] == b[j]:
            out.append(a[i])
            i, j = i + 1, j + 1
        elif table[i + 1][j] >= table[i][j + 1]:
            i += 1
        else:
            j += 1
    return out


def _demonstrations(ctx) -> str:
    count = ctx.config.judge.demos
    if not count:
        return ""
    stored = [d.data for d in ctx.store.demonstrations(count)]
    if not stored:
        path = prompts.find("cyclealign_demos.jsonl", ctx.run_dir)
        stored = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        stored = stored[:count]
    blocks = []
    for n, demo in enumerate(stored, start=1):
        listing = "\n".join(f"[{i + 1}] {text}" for i, text in enumerate(demo["responses"]))
        ranking = " > ".join(f"[{i + 1}]" for i in demo["ranking"])
        blocks.append(f"Example {n}\nRequest:\n{demo['instruction']}\n{listing}\nRanking: {ranking}")
    return "Worked examples:\n\n" + "\n\n".join(blocks)


# ---------------------------------------------------------------- health


def _position_bias(ctx, responses, train) -> None:
    """The same two responses asked in both orders; a fair judge names the same winner."""
    cfg = ctx.config
    rng = random.Random(derive_seed(cfg.run.seed, ctx.round, "position-bias"))
    groups = [g for g in by_prompt(responses).values() if len(g) >= 2]
    rng.shuffle(groups)
    how = judging.SideBySide(
        "self", "pairwise", lambda text, key, seed: judging.judge_request(ctx, text, key=key, n=1, seed=seed),
        lambda requests: ctx.engine.generate(requests, adapter=ctx.adapter), mask_judge_format=True)
    judging.both_orders(ctx, how, [(judging.instruction(train[g[0].prompt_id]), g[0], g[1])
                                   for g in groups[: cfg.judge.position_bias_pairs]])


def health(ctx) -> dict[str, float | None]:
    """Judge health metrics for the round, stored as metrics; warnings go to the events log."""
    store, k = ctx.store, ctx.round
    _, selected = round_responses(ctx)
    responses = {r.id: r for r in selected}
    judgements = [j for j in store.judgements(round=k) if j.response_id in responses]
    verified = store.round_verifications(k)
    metrics: dict[str, float | None] = {}

    rubric_rows = [j for j in judgements if j.judge == "self" and j.rubric in judging.SCALES]
    parsed = [j for j in rubric_rows if j.parsed_ok]
    if rubric_rows:
        values = [judging.normalise(j.rubric, j.score) for j in parsed]
        mean, std = judging.spread(values)
        metrics["judge/score_mean"], metrics["judge/score_std"] = mean, std
        metrics["judge/parse_fail_rate"] = 1 - len(parsed) / len(rubric_rows)
        top_share = max(values.count(v) for v in set(values)) / len(values) if values else 1.0
        metrics["judge/collapse"] = float(not values or top_share >= COLLAPSE_SHARE or (std or 0) < 0.02)
    flips = [(v["first"], v["second"]) for v in judging.verdicts(judgements, "self", "pairwise").values()
             if len(v) == 2]
    if flips:
        metrics["judge/position_bias"] = sum(1 for ab, ba in flips if ab != ba) / len(flips)
        metrics["judge/first_position_rate"] = sum(ab + (1 - ba) for ab, ba in flips) / (2 * len(flips))

    csr = {rid: verifiers.share_met(res) for rid, res in verified.items()}
    groups = [[r.id for r in group if r.id in csr] for group in by_prompt(responses.values()).values()]
    if rubric_rows:
        metrics["judge/rubric_verifier_agreement"] = judging.grouped_agreement(
            groups, judging.mean_rubric_scores(rubric_rows), csr)
    metrics["judge/likelihood_verifier_agreement"] = judging.grouped_agreement(
        groups, {rid: r.mean_logprob for rid, r in responses.items()}, csr)
    metrics["judge/hacking_rate"] = (sum(1 for j in judgements if j.judge == "flag") / len(responses)
                                     if responses else None)
    blackbox = [j for j in judgements if j.judge == "blackbox"]
    if blackbox:
        metrics["judge/blackbox_fail_rate"] = sum(1 for j in blackbox if not j.parsed_ok) / len(blackbox)
    metrics["verify/csr_mean"] = sum(csr.values()) / len(csr) if csr else None

    for name, value in metrics.items():
        store.set_metric(k, name, value)
    warnings = []
    if metrics.get("judge/collapse"):
        warnings.append("rubric scores have collapsed onto one value; its weight should go down")
    if metrics_mod.position_biased(metrics):
        warnings.append(f"position bias {metrics['judge/position_bias']:.2f}: verdicts flip with the order")
    if metrics_mod.parse_failing(metrics):
        warnings.append(f"{metrics['judge/parse_fail_rate']:.0%} of judge outputs could not be parsed")
    if metrics.get("judge/hacking_rate"):
        warnings.append(f"{metrics['judge/hacking_rate']:.0%} of responses contain judge-format text (flagged)")
    for text in warnings:
        store.log_event("warning", f"judge health: {text}", round=k, stage=NAME)
    store.log_event("info", "judge health", round=k, stage=NAME, data=metrics)
    return metrics

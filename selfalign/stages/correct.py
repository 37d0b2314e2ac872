"""Stage `correct` (Aligner, correct.mode; off by default): rewrite the round's answers that miss a constraint
with a learned corrector, check each rewrite, and leave the usable ones for the pairs stage.

Round k's corrector is the one of round k-1 (rounds/<k-1>/corrector/adapter: trained on the triples of rounds
1..k-1, correction/triples.py), trained here if missing; round 1 has no earlier round and corrects nothing. It
never learns from its own outputs. Every answer that misses a constraint is corrected, and a fixed share
(PASSING_SHARE, drawn by the run seed) of those that meet all theirs, to measure what it breaks. Each
correction is a response row of kind 'correction' whose policy names the corrector and whose params name the
answer it corrects, verified like a sample; a rerun finds the rows it stored and corrects only the rest.

Metrics: correct/count, fix_rate (failing answers whose usable correction meets everything), break_rate
(passing answers whose usable correction misses something), noop_share, echo_share, usable_share,
added_form_share (correction/outcomes.py).
"""

from __future__ import annotations

from selfalign import verifiers
from selfalign.correction import corrector, outcomes
from selfalign.runs import RunFolder
from selfalign.stages import StageContext, StageStopped, derive_seed, round_responses
from selfalign.store.rows import CORRECTION, NewResponse
from selfalign.training.trainer import StopTraining

NAME = "correct"
PASSING_SHARE = 0.1  # of the answers that meet every constraint, corrected only to measure what the corrector breaks


def chosen_for_correction(ctx: StageContext, train, responses, verified) -> list:
    """The answers to correct: every one that misses a constraint, and a seeded share of those that do not."""
    cfg = ctx.config
    out = []
    for r in responses:
        constraints = train[r.prompt_id].constraints
        if not constraints:
            continue
        results = verified.get(r.id) or verifiers.check_all(constraints, r.text)
        draw = derive_seed(cfg.run.seed, "correct", r.prompt_id, r.sample_index) % 10_000 / 10_000
        if not all(results.values()) or draw < PASSING_SHARE:
            out.append(r)
    return out


def run(ctx: StageContext) -> None:
    cfg, store, k = ctx.config, ctx.store, ctx.round
    if cfg.correct.mode == "off":
        ctx.report(NAME, 0, 0)
        return
    if k < 2:
        store.log_event("info", "correct: round 1 has no earlier round to learn corrections from; the corrector "
                        "starts in round 2", round=k, stage=NAME)
        ctx.report(NAME, 0, 0)
        return
    folder = RunFolder(ctx.run_dir)
    source_round = k - 1
    try:
        adapter = corrector.train_corrector(folder, cfg, store, ctx.engine, source_round,
                                            should_stop=ctx.should_stop)
    except StopTraining:
        raise StageStopped() from None
    if adapter is None:
        store.log_event("warning", f"correct: rounds 1-{source_round} gave no correction triples; nothing is "
                        "corrected this round", round=k, stage=NAME)
        ctx.report(NAME, 0, 0)
        return
    train, responses = round_responses(ctx)
    verified = store.round_verifications(k)
    targets = chosen_for_correction(ctx, train, responses, verified)
    have = corrector.stored(store, k, source_round)
    todo = [r for r in targets if r.id not in have]
    total, done = len(targets), len(targets) - len(todo)
    ctx.report(NAME, done, total)
    items = [(verifiers.attach(train[r.prompt_id].text, train[r.prompt_id].constraints), r.text) for r in todo]

    def store_result(result) -> None:
        nonlocal done
        source = todo[result.key]
        constraints = train[source.prompt_id].constraints
        row = store.add_response(NewResponse(
            source.prompt_id, k, corrector.label(source_round), source.sample_index, result.text, result.tokens,
            result.finish_reason, result.mean_logprob, {"corrected_from": source.id}, result.duration_s,
            kind=CORRECTION))
        if row is not None:
            store.add_verifications(row, verifiers.check_all(constraints, result.text))
        done += 1
        ctx.report(NAME, done, total)

    ctx.check_stop()
    if items:
        corrector.correct(ctx.engine, adapter, items, max_new_tokens=cfg.generate.max_new_tokens,
                          answer_tokens=[r.tokens for r in todo], run_dir=ctx.run_dir, on_result=store_result,
                          should_stop=ctx.should_stop)
    ctx.check_stop()
    have = corrector.stored(store, k, source_round)
    judged = [outcomes.assess(verifiers.attach(train[r.prompt_id].text, train[r.prompt_id].constraints),
                              train[r.prompt_id].constraints, r.text, have[r.id].text, have[r.id].finish_reason)
              for r in targets if r.id in have]
    s = outcomes.summary(judged)
    store.set_metric(k, "correct/count", float(s["n"]))
    for name in ("fix_rate", "break_rate", "noop_share", "echo_share", "usable_share", "added_form_share"):
        store.set_metric(k, f"correct/{name}", s.get(name))
    store.log_event("info", f"correct: {s['fixed']} of {s['failing']} failing answers fixed, {s['broken']} of "
                    f"{s['passing']} passing ones broken (round {source_round}'s corrector)", round=k, stage=NAME)

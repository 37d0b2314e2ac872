"""Stage `evaluate`: the policy on held-out prompts, every round including round 0 (untrained).

Metrics (stored under eval/, computed by heldout.round_figures, the same function `selfalign eval`
prints from): csr_prompt (share of constrained prompts with every constraint met), csr_instruction
(share of all constraints met), length_mean (tokens), clean_length_mean, distinct2, degenerate_rate,
empty_rate and truncated_rate, all over the constrained prompts; unasked_form_rate (share of all answers
wearing a marked form their prompt did not ask for) and eval/unasked/<form> per form; win_rate over round
0 (a fixed judge, the black-box model when one is set, else the base model, compares the two answers in
both orders so position bias cancels; win_rate_decided is the share of comparisons whose two orders
agreed). The loop evaluates the
first eval.prompts of the benchmark (a fixed shuffled sample), so csr_prompt and csr_instruction come
with their 95 % bootstrap interval (`..._low`, `..._high`); `selfalign eval --all` answers the rest.
"""

from __future__ import annotations

from selfalign import judging, prompts, verifiers
from selfalign import metrics as metrics_mod
from selfalign.engines.base import GenerationRequest
from selfalign.heldout import WIN_RATE_MIN_DECIDED
from selfalign.stages import StageContext, derive_seed, policy_request
from selfalign.store.rows import EVAL, NewPrompt, NewResponse

NAME = "evaluate"


# The test split: prompts no setting is ever chosen by. Only `selfalign eval --split test` reads it (through
# prompt_source); the loop, the controller and every ablation read the dev split (eval.heldout_file).
TEST_FILE = "test.jsonl"


def prompt_source(file: str | None, split: str = "dev") -> tuple[str | None, str]:
    """(file, the prompts' source label) for an evaluation: the dev split is eval.heldout_file (source
    'heldout'), the test split prompts/test.jsonl (source 'test'), a user's file is 'user'."""
    if split == "test":
        return TEST_FILE, "test"
    return file, "heldout" if not file else "user"


def heldout_prompts(ctx: StageContext, file: str | None = None, every: bool = False, split: str = "dev"):
    """The held-out prompts this evaluation uses: the first eval.prompts of the file in order, or all (the
    test split is always answered whole)."""
    cfg, store = ctx.config, ctx.store
    file, source = prompt_source(file, split)
    rows = prompts.read_prompt_file(file or cfg.eval.heldout_file, ctx.run_dir)
    rows = rows if every or split == "test" else rows[: cfg.eval.prompts]
    ids = store.add_prompts([NewPrompt(r["prompt"], source, "heldout", r["constraints"]) for r in rows])
    return [store.prompt(i) for i in ids]


def run(ctx: StageContext) -> dict[str, float | None]:
    """The loop's evaluation: the first eval.prompts held-out prompts, stored as the round's metrics."""
    return answer(ctx)


def answer(ctx: StageContext, file: str | None = None, every: bool = False,
           split: str = "dev") -> dict[str, float | None]:
    """Answer the held-out prompts (skipping those answered before) and return the metrics. They are
    stored as the round's eval/ metrics only for the loop's own sample (no file, not every prompt, the dev
    split), so a larger or different evaluation never changes the figures the controller decided on."""
    cfg, store, k = ctx.config, ctx.store, ctx.round
    heldout = heldout_prompts(ctx, file, every, split)
    ids = {p.id for p in heldout}
    have = {r.prompt_id for r in store.responses(round=k) if r.prompt_id in ids and r.policy == ctx.policy
            and r.kind == EVAL}
    todo = [policy_request(ctx, verifiers.attach(p.text, p.constraints), key=p.id, n=1,
                           seed=derive_seed(cfg.run.seed, "eval", p.id), max_new_tokens=cfg.eval.max_new_tokens,
                           temperature=cfg.eval.temperature, top_p=1.0 if cfg.eval.temperature == 0 else 0.95)
            for p in heldout if p.id not in have]
    total = len(heldout)
    done = total - len(todo)
    ctx.report(NAME, done, total)

    def store_result(result) -> None:
        nonlocal done
        params = {"temperature": cfg.eval.temperature, "max_new_tokens": cfg.eval.max_new_tokens}  # kind says eval
        store.add_response(NewResponse(result.key, k, ctx.policy, 0, result.text, result.tokens, result.finish_reason,
                                       result.mean_logprob, params, result.duration_s, kind=EVAL))
        done += 1
        ctx.report(NAME, done, total)

    ctx.check_stop()
    # one call: the engine keeps its batch full across prompts and asks should_stop as it decodes
    ctx.engine.generate(todo, adapter=ctx.adapter, on_result=store_result, should_stop=ctx.should_stop)
    ctx.check_stop()

    answers = {r.prompt_id: r for r in store.responses(round=k) if r.prompt_id in ids and r.policy == ctx.policy
               and r.kind == EVAL}
    metrics = response_metrics([(p, answers[p.id]) for p in heldout if p.id in answers])
    if k > 0 and cfg.eval.win_rate:
        metrics["eval/win_rate"], metrics["eval/win_rate_decided"] = win_rate(ctx, heldout, answers)
        decided = metrics["eval/win_rate_decided"]
        if decided is not None and decided < WIN_RATE_MIN_DECIDED:
            store.log_event("warning", f"evaluate: the win-rate judge ({_judge_label(cfg)}) named the same position in "
                            f"both orders for {1 - decided:.0%} of the compared answers, so the win rate is shown as "
                            "undecided and left out of the controller's score; set judge.blackbox_url for a judge "
                            "that decides, or read the held-out CSR", round=k, stage=NAME)
    if file is None and not every and split == "dev":
        for name, value in metrics.items():
            store.set_metric(k, name, value)
        rounds = store.metrics() if k else {}  # every round's figures, read once for the warnings
        for form, now, then in metrics_mod.habits(rounds, k) if k else []:
            store.log_event("warning", f"evaluate: habit: {now:.0%} of held-out answers wear the form '{form}' their "
                            f"prompt did not ask for (round 0: {then:.0%}); pairs.unasked_form_gate keeps such answers "
                            "from being chosen", round=k, stage=NAME)
        if k and (hollow := metrics_mod.gaming_rise(rounds, k, "eval/hollow_rate")):
            store.log_event("warning", f"evaluate: {hollow[0]:.0%} of held-out answers are hollow, a form met and "
                            f"nothing said (round 0: {hollow[1]:.0%}); pairs.hollow_gate keeps such answers from "
                            "being chosen", round=k, stage=NAME)
        if k and (echo := metrics_mod.gaming_rise(rounds, k, "eval/echo_rate")):
            store.log_event("warning", f"evaluate: {echo[0]:.0%} of held-out answers hand the prompt back "
                            f"(round 0: {echo[1]:.0%}); pairs.hollow_gate = \"echo\" keeps such answers from being "
                            "chosen", round=k, stage=NAME)
    return metrics


def response_metrics(items) -> dict[str, float | None]:
    """items: (prompt, response) pairs; the figures `selfalign eval` prints for the same answers."""
    from selfalign import heldout

    answers = [heldout.Answer.of(p, r) for p, r in items]
    return heldout.eval_metrics(heldout.round_figures(answers))


def _judge_label(cfg) -> str:
    """Who judges the win rate: the black-box model when one is configured, else the base policy."""
    return "blackbox" if cfg.judge.blackbox_url else "base"


def win_rate(ctx: StageContext, heldout, answers) -> tuple[float | None, float | None]:
    """Round k against round 0 on each held-out prompt, judged in both orders so position bias cancels, by a
    fixed judge across rounds: the black-box model when judge.blackbox_url is set, else the base model.

    A win in both orders scores 1, a split (the judge followed the position) 0.5, a loss 0;
    identical answers score 0.5 without asking. Also returns the share of judged prompts whose two
    orders agreed: a small judge often names the same position every time, and then the win rate is
    0.5 because of the judge, not because the rounds are equal."""
    store = ctx.store
    how = _win_rate_judge(ctx)
    baseline = {r.prompt_id: r for r in store.responses(round=0) if r.policy == "base" and r.kind == EVAL}
    items, identical = [], {}
    for p in heldout:
        if p.id not in answers or p.id not in baseline:
            continue
        new, old = answers[p.id], baseline[p.id]
        if new.text.strip() == old.text.strip():
            identical[p.id] = 0.5
        else:
            items.append((judging.instruction(p), new, old))
    judging.both_orders(ctx, how, items)
    mine = {answers[p.id].id: p.id for p in heldout if p.id in answers}  # response id -> its prompt
    judged = judging.verdicts([j for rid in mine for j in store.judgements(response_id=rid)], how.judge, "winrate")
    return summarize_wins({mine[x]: v for (x, _y), v in judged.items()}, identical)


def _win_rate_judge(ctx: StageContext) -> judging.SideBySide:
    """The black-box endpoint (a chat model: always chat messages), or the base model (no adapter)."""
    if _judge_label(ctx.config) == "blackbox":
        from selfalign.engines.http_engine import HttpEngine, blackbox_client

        engine = HttpEngine(blackbox_client(ctx.config.judge), load_adapters=False)
        return judging.SideBySide(
            "blackbox", "winrate", lambda text, key, seed: GenerationRequest(
                key=key, messages=[{"role": "user", "content": text}], n=1, max_new_tokens=16, temperature=0.0,
                top_p=1.0, seed=seed), engine.generate)
    return judging.SideBySide(
        "base", "winrate", lambda text, key, seed: policy_request(ctx, text, key=key, n=1, seed=seed, max_new_tokens=8,
                                                                  temperature=0.0, top_p=1.0),
        lambda requests: ctx.engine.generate(requests, adapter=None))  # a fixed judge across rounds


def summarize_wins(verdicts: dict[int, dict[str, float]], identical: dict[int, float]) -> tuple[float | None,
                                                                                               float | None]:
    """(win rate, share decided) from per-prompt verdicts {"first": new won shown first?, "second": ...}
    and the prompts whose answers were identical (0.5, not counted as judged)."""
    outcomes, agreed = dict(identical), []
    for pid, v in verdicts.items():
        if "first" in v and "second" in v:
            outcomes[pid] = (v["first"] + v["second"]) / 2
            agreed.append(v["first"] == v["second"])
    rate = sum(outcomes.values()) / len(outcomes) if outcomes else None
    return rate, (sum(agreed) / len(agreed) if agreed else None)

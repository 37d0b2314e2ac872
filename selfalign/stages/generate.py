"""Stage `generate`: K samples per training prompt of the round from the current policy.

Each response is stored the moment it is finished (a watcher sees it live), with its sampling
parameters, token count, finish reason, duration and mean token log-probability under the policy.
On resume only the missing sample indices are generated.
"""

from __future__ import annotations

from selfalign import verifiers
from selfalign.stages import StageContext, derive_seed, policy_request, sampled_prompts
from selfalign.store.rows import NewResponse

NAME = "generate"


def run(ctx: StageContext) -> None:
    cfg, store, k = ctx.config, ctx.store, ctx.round
    samples = cfg.generate.samples_per_prompt
    prompts = sampled_prompts(store, k)
    have = store.sample_indices(round=k, policy=ctx.policy)
    total = len(prompts) * samples
    done = sum(len(v) for v in have.values())
    ctx.report(NAME, done, total)

    requests = []
    for prompt in prompts:
        # a prompt with any sample missing is sampled whole and only the missing samples are stored: its rows
        # then share a batch as they did before a kill, so the resumed samples come out as the lost ones would
        missing = list(range(samples)) if len(have.get(prompt.id, set())) < samples else []
        if missing:
            request = policy_request(
                ctx, verifiers.attach(prompt.text, prompt.constraints), key=(prompt.id, tuple(missing)),
                n=len(missing), seed=derive_seed(cfg.run.seed, k, prompt.id),
                max_new_tokens=cfg.generate.max_new_tokens, temperature=cfg.generate.temperature,
                top_p=cfg.generate.top_p)
            # each sample index has its own seed, so a resumed stage draws the missing samples exactly as an
            # uninterrupted one would have
            request.sample_seeds = tuple(derive_seed(cfg.run.seed, k, prompt.id, "sample", i) for i in missing)
            requests.append(request)
    writer = _ResponseWriter(ctx, done, total)
    writer.requests = {r.key: r for r in requests}
    writer.stored = have
    # One call for the whole stage: the engine keeps its batch full across prompts (a batch per call
    # would end with a few long answers decoding alone) and asks should_stop as it decodes.
    ctx.check_stop()
    ctx.engine.generate(requests, adapter=ctx.adapter, on_result=writer, should_stop=ctx.should_stop)
    ctx.check_stop()  # the engine returned early because a stop was asked


class _ResponseWriter:
    """Stores each result as the engine finishes it, so a watcher sees responses live."""

    def __init__(self, ctx: StageContext, done: int, total: int):
        self.ctx, self.done, self.total = ctx, done, total
        self.requests: dict = {}
        self.stored: dict = {}  # prompt id -> sample indices stored before this call

    def __call__(self, result) -> None:
        ctx, k = self.ctx, self.ctx.round
        prompt_id, missing = result.key
        if missing[result.sample_index] in self.stored.get(prompt_id, set()):
            return  # drawn again only so the missing samples share their batch as before
        params = self.requests[result.key].params() | {"prompting": ctx.config.run.prompting}
        if result.detail:
            params["skipped_because"] = result.detail
            ctx.store.log_event("warning", f"prompt {prompt_id} skipped: {result.detail}", round=k, stage=NAME)
        ctx.store.add_response(NewResponse(
            prompt_id=prompt_id, round=k, policy=ctx.policy, sample_index=missing[result.sample_index],
            text=result.text, tokens=result.tokens, finish_reason=result.finish_reason,
            mean_logprob=result.mean_logprob, params=params, duration_s=result.duration_s))
        self.done += 1
        ctx.report(NAME, self.done, self.total)

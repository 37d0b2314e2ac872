"""The controller's rubric rewrite, in the style of Meta Policy Optimization: when the additive
rubric self-judge is unhealthy, the policy proposes new criteria, and the proposal is kept only if
it orders responses like the verifiers do more often than the current rubric, on responses the
policy was not shown.

The round's prompts whose responses the verifiers tell apart are split in two by prompt id: the
even half supplies the examples in the request (answers where rubric and checks disagreed), the odd
half (up to REWRITE_SAMPLE responses) is held aside and scored with both rubrics by the
same model that judged the round. The candidate's scores are stored as judgements under the
rubric label `rewrite<k>`, so a resumed round does not judge twice; the request is greedy and
seeded, so it proposes the same criteria again. A kept rubric is written to the run's prompts/
folder and `judge.rubric_prompt` names it from the next round on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from selfalign import judging, prompts, verifiers
from selfalign.stages import StageContext, by_prompt, derive_seed, policy_request, round_responses

CRITERION_RE = re.compile(r"^\s*(\d+)[.)]\s+(\S.*)$")
MIN_GAIN = 0.05  # agreement the rewrite must add over the current rubric to be kept
EXAMPLES = 3  # disagreements shown to the policy
MAX_NEW_TOKENS = 320

REWRITE_SAMPLE = 24  # held-aside responses the old and the rewritten rubric both score


@dataclass
class Trial:
    kept: bool
    reason: str
    data: dict[str, Any] = field(default_factory=dict)


def criteria(body: str) -> list[str]:
    """The numbered statements of a rubric, in order."""
    return [m.group(2).strip() for line in body.splitlines() if (m := CRITERION_RE.match(line))]


def with_criteria(body: str, new: list[str]) -> str:
    """The rubric with its numbered statements replaced one for one; everything else kept."""
    lines, i = [], 0
    for line in body.splitlines():
        if CRITERION_RE.match(line) and i < len(new):
            i += 1
            lines.append(f"{i}. {new[i - 1]}")
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def attempt(ctx: StageContext) -> Trial:
    """Ask the policy (ctx: the round's judge-time context) for new criteria and test them."""
    cfg, store, k = ctx.config, ctx.store, ctx.round
    name = cfg.judge.rubric_prompt or "judge_additive5.txt"
    current = prompts.load_template(name, ("instruction", "response"), ctx.run_dir)
    old = criteria(current.body)
    train, responses = round_responses(ctx)
    verified = store.round_verifications(k)
    csr = {rid: verifiers.share_met(res) for rid, res in verified.items() if res}
    rubric_scores = judging.mean_rubric_scores(store.judgements(round=k), {"additive5": "additive5"}, raw=True)
    groups = [[r for r in group if r.id in csr] for group in by_prompt(responses).values()]
    groups = [g for g in groups if len({csr[r.id] for r in g}) > 1]  # the verifiers tell them apart
    shown, held = groups[0::2], groups[1::2]
    held_responses = [r for g in held for r in g][:REWRITE_SAMPLE]
    if len(held_responses) < 4 or not old:
        return Trial(False, f"too few held-aside responses the verifiers tell apart ({len(held_responses)}) to "
                     "test a rewrite", {"held": len(held_responses)})

    examples = []
    for group in shown:
        best, worst = max(group, key=lambda r: csr[r.id]), min(group, key=lambda r: csr[r.id])
        if (rubric_scores.get(best.id) or 0) <= (rubric_scores.get(worst.id) or 0):  # rubric disagreed
            examples.append(_example(train[best.prompt_id], best, worst, csr, rubric_scores))
        if len(examples) == EXAMPLES:
            break
    request = prompts.load_template("rubric_rewrite.txt", ("criteria", "count", "examples"), ctx.run_dir).render(
        criteria="\n".join(f"{i}. {c}" for i, c in enumerate(old, 1)), count=len(old),
        examples="\n\n".join(examples) or "(none in this round's sample)")
    reply = ctx.engine.generate([policy_request(ctx, request, key="rewrite", n=1, seed=derive_seed(
        cfg.run.seed, k, "rubric-rewrite"), max_new_tokens=MAX_NEW_TOKENS, temperature=0.0, top_p=1.0)],
        adapter=ctx.adapter)[0].text
    proposed = criteria(reply)[:len(old)]
    data: dict[str, Any] = {"held": len(held_responses), "proposed": proposed, "current": old,
                            "reply": reply[:2000]}  # what the policy wrote, for the decision's record
    if len(proposed) < len(old):
        return Trial(False, f"the policy's rewrite had {len(proposed)} numbered criteria where the rubric needs "
                     f"{len(old)}: discarded", data)

    candidate = prompts.Template(current.path, with_criteria(current.body, proposed), {})
    label = f"rewrite{k}"
    judging.with_template(ctx, candidate, label, "additive5", held_responses, train, store.judgement_keys(k),
                          samples=1)
    held_ids = {r.id for r in held_responses}
    held_groups = [[r.id for r in g if r.id in held_ids] for g in held]
    before = judging.grouped_agreement(held_groups, rubric_scores, csr)
    after = judging.grouped_agreement(held_groups, judging.mean_rubric_scores(
        store.judgements(round=k), {label: "additive5"}, raw=True), csr)
    data |= {"agreement_before": before, "agreement_after": after}
    if after is None or before is None or after < before + MIN_GAIN:
        return Trial(False, f"the policy's rewritten rubric agreed with the verifiers on {_share(after)} of "
                     f"held-aside pairs against {_share(before)} for the current one: discarded", data)
    file_name = f"judge_additive5.r{k}.txt"
    folder = Path(ctx.run_dir) / "prompts"
    folder.mkdir(exist_ok=True)
    tmp = folder / (file_name + ".tmp")
    tmp.write_text(candidate.body, encoding="utf-8")
    tmp.replace(folder / file_name)
    data |= {"file": file_name, "overrides": {"judge.rubric_prompt": file_name}}
    return Trial(True, f"the policy's rewritten rubric agreed with the verifiers on {_share(after)} of held-aside "
                 f"pairs against {_share(before)}: kept as prompts/{file_name}", data)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _example(prompt, best, worst, csr, scores) -> str:
    def show(r) -> str:
        text = r.text if len(r.text) <= 300 else r.text[:300] + "..."
        return (f"Answer ({csr[r.id]:.0%} of the instructions met, rubric gave "
                f"{scores.get(r.id, '-')}):\n{text}")

    return f"Request:\n{verifiers.attach(prompt.text, prompt.constraints)}\n{show(best)}\n{show(worst)}"

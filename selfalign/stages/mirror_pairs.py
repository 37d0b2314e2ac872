"""pairs.mirror: pairs that teach when a form is wanted, not only that it is.

A pair whose chosen answer wears a marked form its prompt asked for (quoted, all capitals, JSON, a P.S.:
verifiers/forms.py) rewards that form, and nothing in the round says it belongs to that request only: after
three default rounds the forms had spread to answers of prompts that never asked (issue 33). Gating the
unasked forms out of the chosen answers did not stop it (docs/gain.md, rows formgate3 and plainfg3).

For each such pair this adds its mirror: a prompt with the same instruction and the constraints that asked
for those forms taken off (source 'mirror'), with a plain answer to it chosen and the formed answer rejected.
The plain answer is the formed one's source when that is a repaired copy (the two then differ in the form
alone, so the preference falls on it), else the best-scored answer to the prompt that wears no unasked marked
form and meets the remaining constraints as it is or after a rule repair. Both answers are stored as copies
on the mirror prompt (kind 'repair', params naming what they copy), so the UI and exports show what was
trained on, and a rerun finds them instead of adding more.
"""

from __future__ import annotations

from selfalign import judging, verifiers
from selfalign.store.rows import MIRROR, REPAIR, NewPair, NewPrompt, NewResponse
from selfalign.verifiers import forms

RULE = "mirror"


def mirror_pairs(ctx, pairs: list[NewPair], scores: dict, weights: dict[str, float]) -> list[NewPair]:
    """The mirror pairs of the round's pairs (at most one per original prompt); `scores` gains the copies."""
    from selfalign.stages import pairs as stage  # pairs imports this module

    store, k = ctx.store, ctx.round
    prompts = {p.id: p for p in store.prompts(split="train", round=k)}
    rows = {r.id: r for r in store.responses(round=k)}
    candidates: dict[int, list[int]] = {}
    for rid, s in scores.items():
        candidates.setdefault(s.prompt_id, []).append(rid)
    out, done = [], set()
    for pair in pairs:
        prompt = prompts.get(pair.prompt_id)
        if pair.rejected_id is None or prompt is None or prompt.source == MIRROR or pair.prompt_id in done:
            continue
        formed = rows[pair.chosen_id]
        dropped = {c["id"] for c in prompt.constraints if c["id"] in forms.MARKED} & forms.shown(formed.text)
        kept = [c for c in prompt.constraints if c["id"] not in dropped]
        habit = sorted(forms.unasked_marked(kept, formed.text))
        if not dropped or not habit:
            continue  # no asked form worn, or another kept constraint brings it along
        order = _plain_first(formed, stage._ranked(candidates[pair.prompt_id], scores, False))
        found = next((hit for rid in order if rid != formed.id and (hit := _plain(kept, rows[rid]))), None)
        if found is None:
            continue
        text, source = found
        done.add(pair.prompt_id)
        (mirror_id,) = store.add_prompts([NewPrompt(prompt.text, MIRROR, "train", kept, round=k)])
        chosen = _copy(store, rows, mirror_id, k, text, source, kept)
        rejected = _copy(store, rows, mirror_id, k, formed.text, formed, kept)
        met = verifiers.share_met(verifiers.check_all(kept, formed.text))
        scores[chosen] = _scored(stage, scores[source.id], rows[chosen], 1.0, weights)
        scores[rejected] = _scored(stage, scores[formed.id], rows[rejected], 1.0 if met is None else met, weights,
                                   habit)
        mirrored = stage._pair(k, mirror_id, chosen, rejected, scores, RULE)
        mirrored.scores |= {"mirror_of": pair.prompt_id, "dropped": sorted(dropped)}
        out.append(mirrored)
    return out


def _plain_first(formed, ranked: list[int]) -> list[int]:
    """The formed answer's source first when it is a repaired copy, then the prompt's answers best first."""
    source = (formed.params or {}).get("repaired_from")
    return ([source] if source in ranked else []) + [rid for rid in ranked if rid != source]


def _plain(kept: list[dict], row) -> tuple[str, object] | None:
    """The answer as a plain answer to the mirror prompt (as it is, or rule-repaired to meet the kept
    constraints), or None when it loops, was cut off, or wears a marked form the mirror prompt does not ask."""
    from selfalign.stages.pairs import TRIMMING
    from selfalign.verifiers.repair import repair

    if verifiers.degenerate(row.text) or forms.unasked_marked(kept, row.text):
        return None
    cut = row.finish_reason == "length"
    if not kept:
        return None if cut else (row.text, row)
    text = repair(kept, row.text)
    if text is None or (cut and not (TRIMMING & {c["id"] for c in kept})) or forms.unasked_marked(kept, text):
        return None
    return text, row


def _copy(store, rows: dict, prompt_id: int, k: int, text: str, source, kept: list[dict]) -> int:
    """A copy of `text` on the mirror prompt: the stored one with that text, or a new row."""
    mine = [r for r in rows.values() if r.prompt_id == prompt_id and r.kind == REPAIR]
    for r in mine:
        if r.text == text:
            return r.id
    edited = text != source.text
    tokens = max(1, round(source.tokens * len(text) / max(1, len(source.text))))  # no tokenizer here
    row = NewResponse(prompt_id=prompt_id, round=k, policy=source.policy,
                      sample_index=max((r.sample_index for r in mine), default=-1) + 1, text=text, tokens=tokens,
                      finish_reason="stop" if edited else source.finish_reason, mean_logprob=None,
                      params={"mirror_of": source.id}, kind=REPAIR)
    row_id = store.add_response(row)
    store.add_verifications(row_id, verifiers.check_all(kept, text))
    rows[row_id] = store.responses_by_id([row_id])[row_id]
    return row_id


def _scored(stage, like, copy, verifier_share: float, weights, habit=()):
    """A copy scored as the answer it copies, with its verifiers share on the mirror prompt; one wearing an
    unasked form is gated, as the form gate would score it."""
    components = {**like.components, "verifiers": verifier_share}
    combined = judging.combine(components, weights)
    if habit and combined is not None:
        combined -= stage.GATE_PENALTY
    return stage.Scored(copy.prompt_id, copy.tokens, components, copy.sample_index, gated=bool(habit),
                        unasked=list(habit), rubric_raw=like.rubric_raw, combined=combined, repaired=True)

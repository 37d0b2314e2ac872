"""Stage `pairs`: combine the judgements into one score per response and build the training set.

Components, each in [0, 1]: rubric (mean normalised self-judge score), verifiers (constraint
satisfaction rate; only on prompts with constraints), likelihood (rank of the mean log-probability
among the prompt's responses) and blackbox (rank given by the black-box judge). The combined score
is their weighted mean over the components present, with the recipe's weights. With
judge.weigh_by_agreement each non-verifier weight is first multiplied by its trust on this round's own
responses: how far above chance (0.5) it orders two answers to one prompt as the verifiers do
(judging.weigh_by_agreement). A 135M model's likelihood and rubric agree at about chance, so they get
no weight. A prompt without constraints scores 1 on the verifiers for every answer (verifier_score), so it
builds a pair only where a gate tells its answers apart.

Quality gate (pairs.quality_gate): a response cut off by the token budget or looping
(verifiers.degenerate) scores below every clean one, so it can be the rejected answer but never the
chosen. Without it a loop is chosen as often as it is rejected (it even meets "use the word X three
times"), and DPO taught the embedded model to loop (docs/gain.md).

Form gate (pairs.unasked_form_gate): the same for an answer wearing a marked form its prompt did not
ask for (quoted, all capitals, JSON, a P.S.: verifiers/forms.py). Without it the forms the verifiers
reward where asked spread to every answer, round after round (issue 33: 43 % of held-out answers
opened with a quote nobody asked for after 3 rounds); with it such an answer is rejected, not chosen.

Hollow gate (pairs.hollow_gate): an answer that meets a form and says nothing (verifiers.hollow: "Hope this
helps." to a prompt asking for that ending) is gated too, and sinks below the other gated answers, so a
prompt that drew one rejects it. Without it a fifth of round 3's held-out answers were hollow (issue 33).
With hollow_gate = "echo" an answer that hands the prompt back (verifiers.echo: the input list of a
"classify these" prompt copied out, a constraint's sentence read back) is treated the same way.

Mirror pairs (pairs.mirror): for a pair whose chosen answer wears a form its prompt asked for, the same
instruction without that request, a plain answer chosen over the formed one (mirror_pairs below).

Rules: best-vs-worst (DPO; up to max_pairs_per_prompt pairs, each with at least min_margin,
ties dropped, equal scores broken by pairs.tie_break: the shorter response, or the chosen taken as the
longest of the answers tied at the top), ranked (every
ordered pair with the margin, for RRHF), sft (I-SHEEP: responses scoring at least sft_min_score on
both scales). Each pair stores its rule and the scores behind it. The stage rebuilds the round's
pairs from the stored judgements in one transaction, so rerunning it is safe.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from selfalign import judging, verifiers
from selfalign.correction import outcomes
from selfalign.stages import StageContext, by_prompt, round_responses
from selfalign.store.rows import MIRROR, REPAIR, NewPair, NewPrompt, NewResponse
from selfalign.verifiers import forms

NAME = "pairs"
TIE = 1e-9
GATE_PENALTY = 2.0  # combined scores lie in [0, 1]: minus 2 puts a gated answer strictly below every clean one
HOLLOW_PENALTY = 2.0  # and minus 2 more puts a hollow one below every other gated answer: it is the one rejected


@dataclass
class Scored:
    """One response as the pairs stage weighs it: its signals, their weighted mean and why it may not win."""

    prompt_id: int
    tokens: int
    components: dict[str, float | None]  # rubric, verifiers, likelihood, blackbox: each in [0, 1] or None
    sample_index: int = 0
    gated: bool = False  # cut off, looping, wearing an unasked form or hollow: it may be rejected, never chosen
    loop: bool = False
    hollow: bool = False  # gated as hollow (pairs.hollow_gate): rejected before the other gated answers
    unasked: list[str] = field(default_factory=list)  # marked forms it wears that its prompt did not ask for
    rubric_raw: dict[str, float] = field(default_factory=dict)  # mean rubric scores on their own scales
    combined: float | None = None
    repaired: bool = False  # an edited copy of a sample: a rule repair (add_repairs) or a correction (add_corrections)
    corrected: bool = False  # that copy is a learned corrector's (add_corrections)

    @property
    def penalty(self) -> float:
        """What its gates take off its combined score: nothing when clean, more when hollow."""
        return (GATE_PENALTY + (HOLLOW_PENALTY if self.hollow else 0.0)) if self.gated else 0.0

    @property
    def order(self) -> int:
        """Position among equal scores: a repaired copy before the samples, then sample order."""
        return -1 if self.repaired else self.sample_index


def says_nothing(cfg, question: str, constraints: list, text: str) -> bool:
    """What pairs.hollow_gate catches: a hollow answer, and with "echo" also one that hands the prompt back."""
    mode = cfg.pairs.hollow_gate
    if mode == "off":
        return False
    return verifiers.hollow(constraints, text) or (mode == "echo" and verifiers.echo(question, text))


def gates(cfg, constraints: list, text: str, finish_reason: str,
          question: str = "") -> tuple[bool, bool, list[str], bool]:
    """Whether an answer is gated (pairs.quality_gate: cut off or looping; pairs.unasked_form_gate: wearing a
    marked form its prompt did not ask for; pairs.hollow_gate: saying nothing), whether it loops, the unasked
    marked forms it wears, and whether the hollow gate caught it. The loop check runs once: the gate and
    pairs.rejected both read it. question: the prompt as the policy saw it (verifiers.attach)."""
    loop = verifiers.degenerate(text)
    habit = sorted(forms.unasked_marked(constraints, text))
    empty = says_nothing(cfg, question, constraints, text)
    gated = (cfg.pairs.quality_gate and (finish_reason == "length" or loop)) or \
        (cfg.pairs.unasked_form_gate and bool(habit)) or empty
    return bool(gated), loop, habit, empty


def scores_for_round(ctx: StageContext) -> tuple[dict[int, Scored], dict[str, float]]:
    """response id -> its Scored value for the round's responses, and the weights the combined scores used."""
    cfg, store, k = ctx.config, ctx.store, ctx.round
    train, responses = round_responses(ctx)
    verified = store.round_verifications(k)
    judgements = store.judgements(round=k)
    rubric = judging.mean_rubric_scores(judgements)
    raw_rubric: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    blackbox: dict[int, float | None] = {}
    for j in judgements:
        if j.judge == "self" and j.rubric in judging.SCALES and j.parsed_ok:
            raw_rubric[j.response_id][j.rubric].append(j.score)
        elif j.judge == "blackbox" and j.parsed_ok:
            blackbox[j.response_id] = j.score
    weights = {"rubric": cfg.judge.weight_rubric, "verifiers": cfg.judge.weight_verifiers,
               "likelihood": cfg.judge.weight_likelihood, "blackbox": cfg.judge.weight_blackbox}
    out = {}
    groups = by_prompt(responses).values()
    for group in groups:
        likelihood = judging.rank_scores(judging.order_by({r.id: r.mean_logprob for r in group}))
        prompt = train[group[0].prompt_id]
        question = verifiers.attach(prompt.text, prompt.constraints)  # the prompt as the policy saw it
        for r in group:
            results = verified.get(r.id)
            components = {
                "rubric": rubric.get(r.id),
                "verifiers": verifier_score(results, prompt.constraints),
                "likelihood": likelihood[r.id] if r.mean_logprob is not None and len(group) > 1 else None,
                "blackbox": blackbox.get(r.id),
            }
            gated, loop, habit, empty = gates(cfg, prompt.constraints, r.text, r.finish_reason, question)
            out[r.id] = Scored(r.prompt_id, r.tokens, components, r.sample_index, gated=gated, loop=loop, unasked=habit,
                               hollow=empty,
                               rubric_raw={name: sum(v) / len(v) for name, v in raw_rubric[r.id].items()})
    if cfg.judge.weigh_by_agreement:
        weights = judging.weigh_by_agreement(weights, signal_agreements(out, [[r.id for r in g] for g in groups]))
    for name in weights:  # a signal that scored nothing this round (switched off) weighs nothing
        if all(s.components[name] is None for s in out.values()):
            weights[name] = 0.0
    for name, weight in weights.items():
        store.set_metric(k, f"pairs/weight_{name}", weight)
    for s in out.values():
        s.combined = judging.combine(s.components, weights)
        if s.combined is not None:
            s.combined -= s.penalty  # below any clean answer, still ordered among the gated ones
    return out, weights


def verifier_score(results: dict[str, bool] | None, constraints: list) -> float | None:
    """Share of the prompt's constraints met. A prompt without constraints (instruct.constraint_share < 1)
    scores 1 on every answer: all of its none are met, so its answers tie and only the gates (a loop, a cut-off,
    an unasked form) tell them apart. That is the one signal such a prompt has, and the one that teaches
    "plain when nothing was asked": the clean answer is chosen over the one wearing a habit."""
    if results:
        return sum(results.values()) / len(results)
    return None if constraints else 1.0


TRIMMING = {"max_words", "max_sentences"}


def estimated_tokens(source, text: str) -> int:
    """Tokens of an edited copy of `source`, scaled from the source's by characters (no tokenizer in this
    stage); only ordering and metrics read it, training tokenizes the text itself."""
    return max(1, round(source.tokens * len(text) / max(1, len(source.text))))


def add_repairs(ctx: StageContext, scores: dict[int, Scored], by_prompt: dict[int, list[int]],
                weights: dict[str, float]) -> None:
    """pairs.repair: for each constrained prompt whose best answer misses a constraint, store an edited
    copy of the best answer that can be fixed (verifiers/repair.py) and add it to the prompt's
    candidates. The copy meets every constraint and keeps its source's other scores (rubric, black box,
    likelihood: the edit changed the form, not the content they judged). A cut-off answer is a source
    only where a length limit trims it back to whole sentences anyway; a looping one never is. The copy
    is a response row (kind 'repair', its source's policy and sample index, params naming the source), so a
    rerun finds it instead of adding another, and the UI shows what was trained on."""
    from selfalign.verifiers.repair import repair

    store, k = ctx.store, ctx.round
    train, responses = round_responses(ctx)
    by_id = {r.id: r for r in responses}
    existing = {(r.prompt_id, r.sample_index): r for r in store.responses(round=k) if r.kind == REPAIR}
    tried = made = 0
    for pid, ids in by_prompt.items():
        constraints = train[pid].constraints if pid in train else []
        ranked = [rid for rid in _ranked(ids, scores, False) if scores[rid].combined is not None]
        if not constraints or not ranked:
            continue
        best = scores[ranked[0]]
        if not best.gated and (best.components["verifiers"] or 0.0) >= 1.0:
            continue  # selection already found an answer that meets everything
        tried += 1
        trims = bool(TRIMMING & {c["id"] for c in constraints})
        for rid in ranked:
            source = by_id[rid]
            if verifiers.degenerate(source.text) or (source.finish_reason == "length" and not trims):
                continue
            text = repair(constraints, source.text)
            if text is None or (ctx.config.pairs.unasked_form_gate and forms.unasked_marked(constraints, text)) \
                    or says_nothing(ctx.config, verifiers.attach(train[pid].text, constraints), constraints, text):
                continue  # unrepairable, or the copy keeps a form nobody asked for or says nothing (gates bar it)
            tokens = estimated_tokens(source, text)
            row = existing.get((pid, source.sample_index))
            if row is None:  # a rerun finds the copy it stored (the rule is deterministic)
                row_id = store.add_response(NewResponse(
                    prompt_id=pid, round=k, policy=source.policy, sample_index=source.sample_index, text=text,
                    tokens=tokens, finish_reason="stop", mean_logprob=None, params={"repaired_from": source.id},
                    kind=REPAIR))
                store.add_verifications(row_id, verifiers.check_all(constraints, text))
            else:
                row_id = row.id
            components = {**scores[rid].components, "verifiers": 1.0}
            scores[row_id] = Scored(pid, tokens, components, source.sample_index, rubric_raw=scores[rid].rubric_raw,
                                    combined=judging.combine(components, weights), repaired=True)
            ids.append(row_id)
            made += 1
            break
    store.set_metric(k, "pairs/repair_tried", float(tried))
    store.set_metric(k, "pairs/repair_rate", made / tried if tried else None)
    store.log_event("info", f"pairs: repaired {made} of {tried} prompts whose best answer missed a constraint",
                    round=k, stage=NAME)


def add_corrections(ctx: StageContext, scores: dict[int, Scored], by_prompt: dict[int, list[int]],
                    weights: dict[str, float]) -> list[NewPair]:
    """correct.mode compete or over-source: the correct stage's usable corrections of answers that missed a
    constraint join their prompt's candidates (scored by their own verification, their source's other signals,
    and the same gates), like repaired copies. With over-source, returns instead one pair per prompt: its best
    usable correction over the answer it corrects, where the correction meets more constraints than it."""
    from selfalign.correction import corrector

    cfg, store, k = ctx.config, ctx.store, ctx.round
    if k < 2:
        return []
    train, _ = round_responses(ctx)
    verified = store.round_verifications(k)
    best: dict[int, tuple[int, int, float]] = {}  # prompt -> (correction id, source id, verifier gain), the largest
    found = corrector.stored(store, k, k - 1)
    texts = {rid: r.text for rid, r in store.responses_by_id(found).items()}
    for source_id, row in found.items():
        source = scores.get(source_id)
        if source is None or source.repaired or (source.components["verifiers"] or 0.0) >= 1.0:
            continue  # corrections of passing answers only measure breakage
        constraints = train[row.prompt_id].constraints
        question = verifiers.attach(train[row.prompt_id].text, constraints)
        if not outcomes.assess(question, constraints, texts[source_id], row.text, row.finish_reason).usable:
            continue  # an echo, a gutted answer, a loop or an added form: never a candidate
        results = verified.get(row.id) or verifiers.check_all(constraints, row.text)
        share = sum(results.values()) / len(results)
        components = {**source.components, "verifiers": share}
        gated, loop, habit, empty = gates(cfg, constraints, row.text, row.finish_reason, question)
        scored = Scored(row.prompt_id, row.tokens, components, source.sample_index, gated=gated, loop=loop,
                        unasked=habit, hollow=empty, rubric_raw=source.rubric_raw,
                        combined=judging.combine(components, weights), repaired=True, corrected=True)
        if scored.combined is not None:
            scored.combined -= scored.penalty
        scores[row.id] = scored
        by_prompt[row.prompt_id].append(row.id)
        gain = share - (source.components["verifiers"] or 0.0)
        if not gated and gain > 0 and (row.prompt_id not in best or gain > best[row.prompt_id][2]):
            best[row.prompt_id] = (row.id, source_id, gain)
    if cfg.correct.mode != "over-source":
        return []
    return [_pair(k, pid, chosen, rejected, scores, "correction-over-source")
            for pid, (chosen, rejected, _) in sorted(best.items())]


def signal_agreements(scores: dict[int, Scored], groups: list[list[int]]) -> dict[str, float | None]:
    """Per signal: how often it orders two answers to one prompt as the verifiers do (pairs the verifiers
    tie are skipped; None when no prompt has answers the verifiers tell apart)."""
    reference = {rid: s.components["verifiers"] for rid, s in scores.items()
                 if s.components["verifiers"] is not None}
    checked = [[rid for rid in group if rid in reference] for group in groups]
    out = {}
    for name in ("rubric", "likelihood", "blackbox"):
        values = {rid: s.components[name] for rid, s in scores.items()}
        if all(v is None for v in values.values()):
            out[name] = None  # the signal is off this round
            continue
        out[name] = judging.grouped_agreement(checked, values, reference)
    return out


def run(ctx: StageContext) -> None:
    cfg, store, k = ctx.config, ctx.store, ctx.round
    scores, weights = scores_for_round(ctx)
    by_prompt: dict[int, list[int]] = defaultdict(list)
    for rid, s in scores.items():
        by_prompt[s.prompt_id].append(rid)
    if cfg.pairs.repair and cfg.pairs.rule != "sft":
        add_repairs(ctx, scores, by_prompt, weights)
    over_source: list[NewPair] = []
    if cfg.correct.mode != "off" and cfg.pairs.rule != "sft":
        over_source = add_corrections(ctx, scores, by_prompt, weights)
    paired = {p.prompt_id for p in over_source}
    pairs = list(over_source)
    prefer_shorter, prefer_longer = cfg.pairs.tie_break == "shorter", cfg.pairs.tie_break == "longer"
    for pid, ids in sorted(by_prompt.items()):
        if pid in paired:  # correct.mode = over-source: the correction over its answer is this prompt's pair
            continue
        if cfg.pairs.rule == "sft":
            pairs += sft_examples(k, pid, ids, scores, cfg.pairs.sft_min_score)
        elif cfg.pairs.rule == "ranked":
            pairs += ranked_pairs(k, pid, ids, scores, cfg.pairs.min_margin, prefer_shorter)
        else:
            pairs += best_vs_worst(k, pid, ids, scores, cfg.pairs.min_margin, prefer_shorter,
                                   cfg.pairs.max_pairs_per_prompt, cfg.pairs.rejected, prefer_longer=prefer_longer)
    if cfg.pairs.unasked_form_gate:  # every answer wore a habit: none is worth learning, the least bad neither
        pairs = [p for p in pairs if not scores[p.chosen_id].unasked]
    if cfg.pairs.hollow_gate != "off":  # every answer said nothing: the least hollow is no lesson either
        pairs = [p for p in pairs if not scores[p.chosen_id].hollow]
    if cfg.pairs.mirror and cfg.pairs.rule != "sft":
        mirrored = mirror_pairs(ctx, pairs, scores, by_prompt, weights)
        store.set_metric(k, "pairs/mirror_count", float(len(mirrored)))
        pairs += mirrored
    with store.transaction():
        store.clear_pairs(k)
        for pair in pairs:
            store.add_pair(pair)
    margins = [p.margin for p in pairs if p.margin is not None]
    store.set_metric(k, "pairs/count", float(len(pairs)))
    store.set_metric(k, "pairs/prompts_used", float(len({p.prompt_id for p in pairs})))
    store.set_metric(k, "pairs/margin_mean", sum(margins) / len(margins) if margins else None)
    store.set_metric(k, "pairs/gated_rate", sum(s.gated for s in scores.values()) / len(scores) if scores else None)
    sampled = [s for s in scores.values() if not s.repaired]
    if cfg.pairs.hollow_gate != "off":
        store.set_metric(k, "pairs/hollow_rate", sum(s.hollow for s in sampled) / len(sampled) if sampled else None)
    store.set_metric(k, "pairs/unasked_form_rate",
                     sum(bool(s.unasked) for s in sampled) / len(sampled) if sampled else None)
    if pairs and cfg.pairs.rule != "sft":
        store.set_metric(k, "pairs/chosen_unasked_form_rate",
                         sum(bool(scores[p.chosen_id].unasked) for p in pairs) / len(pairs))
    if pairs and cfg.correct.mode != "off":
        corrected = sum(scores[p.chosen_id].corrected for p in pairs)
        store.set_metric(k, "pairs/chosen_correction_rate", corrected / len(pairs))
    if pairs and cfg.pairs.rule != "sft":
        chosen_longer = sum(1 for p in pairs if scores[p.chosen_id].tokens > scores[p.rejected_id].tokens)
        store.set_metric(k, "pairs/chosen_longer_rate", chosen_longer / len(pairs))
    ctx.report(NAME, len(by_prompt), len(by_prompt))
    store.log_event("info" if pairs else "warning", f"pairs: {len(pairs)} built with rule {cfg.pairs.rule} from "
                    f"{len(by_prompt)} prompts", round=k, stage=NAME)


def _ranked(ids: list[int], scores: dict, prefer_shorter: bool, prefer_longer: bool = False) -> list[int]:
    """Best first; None scores last; equal scores: shorter (or longer) first when asked, then sample order."""
    length_sign = 1 if prefer_shorter else -1 if prefer_longer else 0

    def key(rid):
        s = scores[rid]
        value = s.combined
        return (value is None, -(value or 0.0), length_sign * s.tokens, s.order)

    return sorted(ids, key=key)


def _pair(k, pid, chosen, rejected, scores, rule) -> NewPair:
    margin = scores[chosen].combined - scores[rejected].combined
    detail = {"chosen": _brief(scores[chosen]), "rejected": _brief(scores[rejected])}
    return NewPair(k, pid, chosen, rejected, margin, rule, detail)


def _brief(s: Scored) -> dict:
    return {"combined": s.combined, **{f"{n}": v for n, v in s.components.items() if v is not None},
            "tokens": s.tokens, **({"gated": True} if s.gated else {}),
            **({"unasked": s.unasked} if s.unasked else {})}


def best_vs_worst(k, pid, ids, scores, min_margin, prefer_shorter, max_pairs, rejected="worst", *,
                  prefer_longer=False) -> list[NewPair]:
    """The n-th best answer against the n-th worst. rejected='finished' takes the rejected answer from the
    answers that finished cleanly (not cut off, not looping) when one of them is at least min_margin below
    the chosen, and falls back to the worst answer otherwise: a cut-off answer is usually also the longest,
    so always rejecting it teaches "say less" as much as "meet the constraint" (docs/gain.md).
    prefer_longer: of the answers tied at the top the longest is chosen (and of those tied at the bottom the
    shortest rejected). The verifiers cannot tell such answers apart, and taking whichever came first lets
    the chosen answers drift shorter round after round (docs/gain.md); a true tie still builds no pair."""
    ranked = [rid for rid in _ranked(ids, scores, prefer_shorter, prefer_longer) if scores[rid].combined is not None]
    pairs, used = [], set()
    for n in range(min(max_pairs, len(ranked) // 2)):
        chosen = ranked[n]
        if chosen in used:
            continue  # an earlier pair rejected it
        if rejected == "finished":
            below = [rid for rid in reversed(ranked[n + 1:]) if rid not in used]
            clean = [rid for rid in below if not scores[rid].gated
                     and scores[chosen].combined - scores[rid].combined >= max(min_margin, TIE)]
            worse = clean[0] if clean else below[0]
        else:
            worse = ranked[-1 - n]
        used.add(worse)
        margin = scores[chosen].combined - scores[worse].combined
        tied = margin <= TIE
        if tied and not (prefer_shorter and scores[chosen].tokens < scores[worse].tokens):
            continue  # a true tie carries no preference
        if not tied and margin < min_margin:
            continue
        pairs.append(_pair(k, pid, chosen, worse, scores, "best-vs-worst" if not tied else "tie-shorter"))
    return pairs


def ranked_pairs(k, pid, ids, scores, min_margin, prefer_shorter) -> list[NewPair]:
    ranked = [rid for rid in _ranked(ids, scores, prefer_shorter) if scores[rid].combined is not None]
    pairs = []
    for i, better in enumerate(ranked):
        for worse in ranked[i + 1:]:
            if scores[better].combined - scores[worse].combined >= max(min_margin, TIE):
                pairs.append(_pair(k, pid, better, worse, scores, "ranked"))
    return pairs


def sft_examples(k, pid, ids, scores, threshold) -> list[NewPair]:
    """I-SHEEP: keep a response only if both 1-10 scales reach the threshold (and the quality gate passes)."""
    kept = []
    for rid in ids:
        raw = scores[rid].rubric_raw
        if {"isheep_quality", "isheep_following"} <= set(raw) and min(raw.values()) >= threshold \
                and not scores[rid].gated:
            kept.append(NewPair(k, pid, rid, None, None, "sft", {"chosen": _brief(scores[rid]) | raw}))
    return kept


# ---------------------------------------------------------------- mirror pairs (pairs.mirror)
# pairs.mirror: pairs that teach when a form is wanted, not only that it is.
#
# A pair whose chosen answer wears a marked form its prompt asked for (quoted, all capitals, JSON, a P.S.:
# verifiers/forms.py) rewards that form, and nothing in the round says it belongs to that request only: after
# three default rounds the forms had spread to answers of prompts that never asked (issue 33). Gating the
# unasked forms out of the chosen answers did not stop it (docs/gain.md, rows formgate3 and plainfg3).
#
# For each such pair this adds its mirror: a prompt with the same instruction and the constraints that asked
# for those forms taken off (source 'mirror'), with a plain answer to it chosen and the formed answer rejected.
# The plain answer is the formed one's source when that is a repaired copy (the two then differ in the form
# alone, so the preference falls on it), else the best-scored answer to the prompt that wears no unasked marked
# form and meets the remaining constraints as it is or after a rule repair. Both answers are stored as copies
# on the mirror prompt (kind 'repair', params naming what they copy), so the UI and exports show what was
# trained on, and a rerun finds them instead of adding more.

MIRROR_RULE = "mirror"


def mirror_pairs(ctx, pairs: list[NewPair], scores: dict, by_prompt: dict[int, list[int]],
                 weights: dict[str, float]) -> list[NewPair]:
    """The mirror pairs of the round's pairs (at most one per original prompt), from each prompt's candidates
    (`by_prompt`: samples, repaired copies, corrections); `scores` gains the copies."""
    store, k = ctx.store, ctx.round
    prompts = {p.id: p for p in store.prompts(split="train", round=k)}
    rows = {r.id: r for r in store.responses(round=k)}
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
        order = _plain_first(formed, _ranked(by_prompt[pair.prompt_id], scores, False))
        found = next((hit for rid in order if rid != formed.id and not scores[rid].hollow
                      and (hit := _plain_answer(kept, rows[rid]))), None)
        if found is None:
            continue
        text, source = found
        done.add(pair.prompt_id)
        (mirror_id,) = store.add_prompts([NewPrompt(prompt.text, MIRROR, "train", kept, round=k)])
        chosen = _mirror_copy(store, rows, mirror_id, k, text, source, kept)
        rejected = _mirror_copy(store, rows, mirror_id, k, formed.text, formed, kept)
        met = verifiers.share_met(verifiers.check_all(kept, formed.text))
        scores[chosen] = _mirror_scored(scores[source.id], rows[chosen], 1.0, weights)
        scores[rejected] = _mirror_scored(scores[formed.id], rows[rejected], 1.0 if met is None else met,
                                          weights, habit)
        mirrored = _pair(k, mirror_id, chosen, rejected, scores, MIRROR_RULE)
        mirrored.scores |= {"mirror_of": pair.prompt_id, "dropped": sorted(dropped)}
        out.append(mirrored)
    return out


def _plain_first(formed, ranked: list[int]) -> list[int]:
    """The formed answer's source first when it is a repaired copy, then the prompt's answers best first."""
    source = (formed.params or {}).get("repaired_from")
    return ([source] if source in ranked else []) + [rid for rid in ranked if rid != source]


def _plain_answer(kept: list[dict], row) -> tuple[str, object] | None:
    """The answer as a plain answer to the mirror prompt (as it is, or rule-repaired to meet the kept
    constraints), or None when it loops, was cut off, or wears a marked form the mirror prompt does not ask."""
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


def _mirror_copy(store, rows: dict, prompt_id: int, k: int, text: str, source, kept: list[dict]) -> int:
    """A copy of `text` on the mirror prompt: the stored one with that text, or a new row."""
    mine = [r for r in rows.values() if r.prompt_id == prompt_id and r.kind == REPAIR]
    for r in mine:
        if r.text == text:
            return r.id
    edited = text != source.text
    tokens = estimated_tokens(source, text)
    row = NewResponse(prompt_id=prompt_id, round=k, policy=source.policy,
                      sample_index=max((r.sample_index for r in mine), default=-1) + 1, text=text, tokens=tokens,
                      finish_reason="stop" if edited else source.finish_reason, mean_logprob=None,
                      params={"mirror_of": source.id}, kind=REPAIR)
    row_id = store.add_response(row)
    store.add_verifications(row_id, verifiers.check_all(kept, text))
    rows[row_id] = store.responses_by_id([row_id])[row_id]
    return row_id


def _mirror_scored(like, copy, verifier_share: float, weights, habit=()):
    """A copy scored as the answer it copies, with its verifiers share on the mirror prompt; one wearing an
    unasked form is gated, as the form gate would score it."""
    components = {**like.components, "verifiers": verifier_share}
    scored = Scored(copy.prompt_id, copy.tokens, components, copy.sample_index, gated=bool(habit),
                    unasked=list(habit), rubric_raw=like.rubric_raw, combined=judging.combine(components, weights),
                    repaired=True)
    if scored.combined is not None:
        scored.combined -= scored.penalty
    return scored

"""Training triples for a corrector (question, answer, correction), built from a run's stored rows.

Three sources, all from rounds up to k, so triples accumulate across rounds:
- a repaired copy against its source (responses of kind 'repair' name theirs in params.repaired_from): the
  rule-made correction of exactly the form the prompt asked for;
- a pair whose chosen answer is close enough to its rejected one (ROUGE-L at least CLOSE) to read as a
  correction of it, not as another answer: the preference data Aligner showed a corrector can learn from;
- identity triples (answer = correction) from answers that meet every constraint of their prompt, finished
  cleanly and wear no form nobody asked for: about IDENTITY_SHARE of the set, so the corrector also learns
  to leave a good answer alone (the warm-up that helped in Aligner's ablation).
A corrector never learns from its own outputs: rows of kind 'correction' are neither answer nor correction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from selfalign import verifiers
from selfalign.rouge import rouge_l, tokens
from selfalign.store.rows import CORRECTION, REPAIR, SAMPLE
from selfalign.verifiers import forms

CLOSE = 0.5  # ROUGE-L of chosen against rejected from which a pair reads as a correction
IDENTITY_SHARE = 0.2


@dataclass(frozen=True)
class Triple:
    prompt_id: int
    question: str  # the prompt as the policy saw it, constraints attached
    answer: str
    correction: str
    source: str  # repair, pair or identity
    answer_id: int
    correction_id: int


def build(store, up_to: int, *, seed: int = 0, identity_share: float = IDENTITY_SHARE,
          close: float = CLOSE) -> list[Triple]:
    """Every triple the run's rounds 1..up_to give, identity ones drawn (by `seed`) to make up about
    `identity_share` of the whole; in a stable order."""
    prompts, responses = {}, {}
    for k in range(1, up_to + 1):
        prompts |= {p.id: p for p in store.prompts(split="train", round=k)}
        responses |= {r.id: r for r in store.responses(round=k) if r.kind != CORRECTION}
    question = {pid: verifiers.attach(p.text, p.constraints) for pid, p in prompts.items()}
    fixes: list[Triple] = []
    for r in responses.values():
        source = responses.get(r.params.get("repaired_from")) if r.kind == REPAIR else None
        if source is not None and r.prompt_id in question and source.text.strip() != r.text.strip():
            fixes.append(Triple(r.prompt_id, question[r.prompt_id], source.text, r.text, "repair", source.id, r.id))
    taken = {(t.answer_id, t.correction_id) for t in fixes}
    for k in range(1, up_to + 1):
        for p in store.pairs(k):
            chosen, rejected = responses.get(p.chosen_id), responses.get(p.rejected_id)
            if chosen is None or rejected is None or p.prompt_id not in question or \
                    (rejected.id, chosen.id) in taken or chosen.text.strip() == rejected.text.strip():
                continue
            if rouge_l(tokens(chosen.text), tokens(rejected.text)) >= close:
                fixes.append(Triple(p.prompt_id, question[p.prompt_id], rejected.text, chosen.text, "pair",
                                    rejected.id, chosen.id))
                taken.add((rejected.id, chosen.id))
    good = [r for r in responses.values() if r.kind == SAMPLE and r.prompt_id in question and
            meets_everything(prompts[r.prompt_id].constraints, r)]
    wanted = round(len(fixes) * identity_share / (1 - identity_share)) if identity_share < 1 else len(good)
    rng = random.Random(seed)
    identity = rng.sample(sorted(good, key=lambda r: r.id), min(wanted, len(good)))
    out = fixes + [Triple(r.prompt_id, question[r.prompt_id], r.text, r.text, "identity", r.id, r.id)
                   for r in identity]
    return sorted(out, key=lambda t: (t.prompt_id, t.answer_id, t.correction_id))


def meets_everything(constraints, response) -> bool:
    """A constrained prompt's answer that needs no correction: every constraint met, ended by itself without
    looping, no form its prompt did not ask for."""
    return bool(constraints) and all(verifiers.check_all(constraints, response.text).values()) and \
        verifiers.finished_cleanly(response.text, response.finish_reason) and \
        not forms.unasked_marked(constraints, response.text)

"""What a correction did to its answer, judged by the verifiers (the inspector Aligner needs, for free).

A correction is **usable** when it ended by itself without looping, does not echo the request, does not gut
the answer and wears no marked form its prompt did not ask for (verifiers/forms.py). Only a usable
correction may replace its answer; the rest are counted and dropped.

Per answer: met every constraint before and after, whether the correction was a no-op (ROUGE-L at least
NOOP against its answer: a public reproduction of Aligner found most corrections came back almost unchanged,
so that share is the first figure to read; a change of case or quotes is not a no-op), an echo, gutted,
or wearing an added form.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfalign import verifiers
from selfalign.rouge import rouge_l, tokens
from selfalign.verifiers import forms

NOOP = 0.9  # ROUGE-L of correction against answer from which nothing worth the name changed
ECHO = 0.7  # ROUGE-L of correction against the request from which it repeats the request, not an answer
GUTTED = 0.5  # a correction with fewer words than this share of its answer's lost the answer
GUTTED_MIN_WORDS = 10  # shorter answers may shrink by half and still be whole
TEMPLATE_LABELS = ("Request:", "Answer:")  # the template's own headings in a correction: it copied the prompt
TRIMMING = {"max_words", "max_sentences"}  # a prompt that asks for fewer words lets a correction cut
CONTENT_TYPES = ("keywords", "min_words", "frequency", "placeholders")  # what rule repair cannot fix


@dataclass(frozen=True)
class Outcome:
    before: bool  # the answer met every constraint
    after: bool  # the correction meets every constraint
    results_before: dict[str, bool]
    results_after: dict[str, bool]
    noop: bool
    echo: bool
    gutted: bool
    degenerate: bool  # looped or was cut off
    added_forms: tuple[str, ...]

    @property
    def usable(self) -> bool:
        return not (self.echo or self.gutted or self.degenerate or self.added_forms)

    @property
    def kept_after(self) -> bool:
        """Whether the answer that is finally given meets everything: the correction when usable, else the answer."""
        return self.after if self.usable else self.before


def assess(question: str, constraints: list[dict], answer: str, correction: str, finish_reason: str) -> Outcome:
    before, after = verifiers.check_all(constraints, answer), verifiers.check_all(constraints, correction)
    answer_tokens, correction_tokens = tokens(answer), tokens(correction)
    # unchanged, or nearly so in words with nothing a verifier sees changed (ROUGE-L ignores case and
    # punctuation, so a correction that only lower-cases or quotes an answer is not a no-op)
    noop = " ".join(correction.split()) == " ".join(answer.split()) or \
        (rouge_l(correction_tokens, answer_tokens) >= NOOP and before == after
         and forms.shown(correction) == forms.shown(answer))
    echo = any(label in correction for label in TEMPLATE_LABELS) or \
        rouge_l(correction_tokens, tokens(question)) >= ECHO > rouge_l(correction_tokens, answer_tokens)
    trims = bool(TRIMMING & {c["id"] for c in constraints})
    gutted = not trims and len(answer_tokens) >= GUTTED_MIN_WORDS and \
        len(correction_tokens) < GUTTED * len(answer_tokens)
    added = sorted(forms.unasked_marked(constraints, correction) - forms.unasked_marked(constraints, answer))
    return Outcome(all(before.values()), all(after.values()), before, after, noop, echo, gutted,
                   not verifiers.finished_cleanly(correction, finish_reason), tuple(added))


def summary(outcomes: list[Outcome]) -> dict:
    """Fix rate (failing answers whose usable correction meets everything), break rate (passing answers whose
    usable correction misses something), no-op, echo, gutted, degenerate and added-form shares, and the
    same fix / break counts per constraint type (instruction level: a type missed before and met after)."""
    n = len(outcomes)
    failing = [o for o in outcomes if not o.before]
    passing = [o for o in outcomes if o.before]
    fixed = sum(1 for o in failing if o.usable and o.after)
    broken = sum(1 for o in passing if o.usable and not o.after)
    per_type: dict[str, list[int]] = {}
    for o in outcomes:
        if not o.usable:
            continue
        for cid, was in o.results_before.items():
            now = o.results_after.get(cid, False)
            row = per_type.setdefault(cid, [0, 0, 0, 0])  # missed, fixed, met, broken
            if not was:
                row[0] += 1
                row[1] += now
            else:
                row[2] += 1
                row[3] += not now
    return {
        "n": n, "failing": len(failing), "passing": len(passing), "fixed": fixed, "broken": broken,
        "fix_rate": fixed / len(failing) if failing else None,
        "break_rate": broken / len(passing) if passing else None,
        "net": (fixed - broken) / n if n else None,
        **{f"{name}_share": (sum(1 for o in outcomes if getattr(o, name)) / n if n else None)
           for name in ("noop", "echo", "gutted", "degenerate", "usable")},
        "added_form_share": sum(1 for o in outcomes if o.added_forms) / n if n else None,
        "per_type": {cid: {"missed": m, "fixed": f, "met": t, "broken": b}
                     for cid, (m, f, t, b) in sorted(per_type.items())},
    }

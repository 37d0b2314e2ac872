"""Constraint verifiers: describe a constraint, check a response, sample compatible constraints.

A constraint is a dict {"id": type id, "params": {...}, "wording": key} as stored with its prompt. The
wording key picks the sentence that asks for it: t0, t1, ... are training wordings (t0 when absent), h0,
h1 belong to the held-out benchmark only. The constraint satisfaction rate (CSR) of a response is the
share of its prompt's constraints it passes.
"""

from __future__ import annotations

import inspect
import random
import re
from collections import Counter
from typing import Any

from selfalign.verifiers.library import REGISTRY, ConstraintType, words

__all__ = ["REGISTRY", "ConstraintType", "describe", "check", "check_all", "csr", "compatible", "sample",
           "attach", "validate", "degenerate", "hollow"]


def _type(constraint: dict[str, Any]) -> ConstraintType:
    return REGISTRY[constraint["id"]]


def validate(constraint: Any) -> dict[str, Any]:
    """Return the constraint normalised to {"id", "params"}; ValueError naming what is wrong."""
    if not isinstance(constraint, dict) or "id" not in constraint:
        raise ValueError(f"constraint {constraint!r} must be an object like "
                         '{"id": "max_words", "params": {"n": 50}}')
    if constraint["id"] not in REGISTRY:
        raise ValueError(f"unknown constraint {constraint['id']!r}; known: {', '.join(sorted(REGISTRY))}")
    params = constraint.get("params") or {}
    wanted = set(inspect.signature(_type(constraint).phrase).parameters)
    if set(params) != wanted:
        raise ValueError(f"constraint {constraint['id']!r} takes parameters {sorted(wanted) or 'none'}, "
                         f"got {sorted(params) or 'none'}")
    if "wording" not in constraint:
        return {"id": constraint["id"], "params": params}
    wording = str(constraint["wording"])
    _type(constraint).wording(wording)  # raises for a key the type does not have
    return {"id": constraint["id"], "params": params, "wording": wording}


def describe(constraint: dict[str, Any]) -> str:
    return _type(constraint).wording(constraint.get("wording", "t0"))(**constraint.get("params", {}))


def check(constraint: dict[str, Any], text: str) -> bool:
    """An empty response satisfies nothing: "at most 20 words" must not reward saying nothing."""
    if not text.strip():
        return False
    return bool(_type(constraint).check(text, **constraint.get("params", {})))


def check_all(constraints: list[dict[str, Any]], text: str) -> dict[str, bool]:
    return {c["id"]: check(c, text) for c in constraints}


def share_met(results: dict[str, bool]) -> float | None:
    """Share of checked constraints that passed; None when nothing was checked."""
    return sum(results.values()) / len(results) if results else None


def csr(constraints: list[dict[str, Any]], text: str) -> float | None:
    """Share of constraints satisfied; None for a prompt without constraints."""
    if not constraints:
        return None
    return share_met(check_all(constraints, text))


def _conflict(a: ConstraintType, b: ConstraintType) -> bool:
    return a.group == b.group or a.id in b.conflicts or b.id in a.conflicts


def compatible(ids: list[str]) -> bool:
    types = [REGISTRY[i] for i in ids]
    return not any(_conflict(a, b) for n, a in enumerate(types) for b in types[n + 1:])


def sample(rng: random.Random, count: int, weights: dict[str, float] | None = None,
           split: str = "train") -> list[dict[str, Any]]:
    """Up to `count` mutually compatible constraints, drawn by weight (a curriculum may set them), each
    asked for in a wording drawn from `split` (train or heldout), so no single sentence is learned."""
    chosen: list[ConstraintType] = []
    pool = sorted(REGISTRY)
    for _ in range(count):
        open_ = [i for i in pool if not any(_conflict(REGISTRY[i], c) for c in chosen)]
        if not open_:
            break
        pick = rng.choices(open_, weights=[(weights or {}).get(i, 1.0) for i in open_])[0]
        chosen.append(REGISTRY[pick])
    return [{"id": c.id, "params": c.sample(rng), "wording": rng.choice(c.wordings(split))} for c in chosen]


def attach(prompt: str, constraints: list[dict[str, Any]]) -> str:
    """The prompt text the policy sees: the instruction, then one sentence per constraint."""
    if not constraints:
        return prompt
    return prompt.rstrip() + "\n\n" + " ".join(describe(c) for c in constraints)


REPEATED_LINE = 3  # a line of at least 3 words this often in one answer is a loop, not content
LOOP_MIN_WORDS = 40  # below this an answer is too short to call its repetition a loop
LOOP_DISTINCT3 = 0.3  # distinct word-trigram share below which a long answer is a loop
HOLLOW_WORDS = 2  # an answer with at most this many distinct words of its own says nothing
ECHO_RUN = 3  # words copied in a row before an answer made of the prompt's words is a copy, not a short answer
PLACEHOLDER_RE = re.compile(r"\[[^\[\]\n]*\]")


def finished_cleanly(text: str, finish_reason: str) -> bool:
    """An answer that ended by itself (not cut off by the token budget) and does not loop: what the
    quality gate lets be chosen, and whose length says whether answers really got shorter."""
    return finish_reason != "length" and not degenerate(text)


def degenerate(text: str) -> bool:
    """Empty, wordless, or looping: the same line of 3+ words three times (code fences and separators
    repeat legitimately), or a long answer made of few distinct word trigrams."""
    ws = words(text)
    if not ws:
        return True
    lines = Counter(line.strip() for line in text.splitlines() if len(words(line)) >= 3)
    if lines and max(lines.values()) >= REPEATED_LINE:
        return True
    if len(ws) >= LOOP_MIN_WORDS:
        trigrams = list(zip(ws, ws[1:], ws[2:], strict=False))
        return len(set(trigrams)) / len(trigrams) < LOOP_DISTINCT3
    return False


def hollow(constraints: list[dict[str, Any]], text: str) -> bool:
    """Meets a form and says nothing: at most HOLLOW_WORDS distinct words once [placeholders] and the words
    its constraints supply (the end phrase, start word, keywords, P.S. or section marker) are taken out.
    "Hope this helps." to a prompt asking to end with that phrase, "*highlight* *text*" repeated, "[city]
    [name]", "<<A Heading>>": every verifier of the prompt may pass them. A short real answer ("Ludwig van
    Beethoven.") keeps three words of its own; "Paris." is hollow by this count, a cost the gate accepts,
    since its gated answers can still be rejected and a plain sentence still be chosen."""
    supplied: set[str] = set()
    for c in constraints:
        for value in (c.get("params") or {}).values():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    supplied.update(w.lower() for w in words(item))
    own = {w.lower() for w in words(PLACEHOLDER_RE.sub(" ", text))} - supplied
    return len(own) <= HOLLOW_WORDS


def echo(question: str, text: str) -> bool:
    """Hands the prompt back: every word of the answer (its [placeholders] aside) is a word of the prompt as the
    policy saw it (`attach`: the instruction and its constraints' sentences), and all but HOLLOW_WORDS of them
    are one run copied from it (ECHO_RUN words at least). "blizzard, heatwave, frost, thunderstorm." to
    "Classify these weather events ...: blizzard, heatwave, frost, thunderstorm.", "The soup was very very
    hot." to "Rewrite this sentence without the word 'very': ...", a constraint's sentence read back. Words
    from the prompt in an order of the answer's own ("Winter: blizzard, frost. Summer: heatwave.") are an
    answer, and so is one word of its own ("The capital of France is Paris.")."""
    own = [w.lower() for w in words(PLACEHOLDER_RE.sub(" ", text))]
    given = [w.lower() for w in words(question)]
    if len(own) < ECHO_RUN or not set(own) <= set(given):
        return False
    return _longest_run(own, given) >= max(ECHO_RUN, len(own) - HOLLOW_WORDS)


def _longest_run(a: list[str], b: list[str]) -> int:
    """Length of the longest run of words that a and b share, in order and unbroken."""
    best, previous = 0, [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best

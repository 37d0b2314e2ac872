"""Forms an answer can show whether or not its prompt asked for them: the habits training may teach.

The constraint checks answer "did the answer do what was asked?". A form detector answers "does this
answer wear this form at all?" (quoted, all capitals, JSON, a <<title>>, a P.S., ...), so the share of
answers that wear a form their prompt never asked for can be counted. Training on verifiable constraints
rewards a form where it was asked; DPO happily generalises it to every prompt (after 3 default rounds 43 %
of the held-out answers to prompts that never asked for quotes opened with one). That share is the
"unasked form" rate, per form and overall, reported beside every gain.

MARKED forms are the ones a reader never expects unasked (wrapping the answer in quotes, shouting, a
P.S.); the pairs stage keeps an answer wearing one unasked from being chosen. The others (bullets,
emphasis, opening with "Sure") are ordinary writing: they are measured, not penalised.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from selfalign.verifiers import library
from selfalign.verifiers.library import END_PHRASES, HIGHLIGHT_RE, PLAIN_BULLET_RE, START_WORDS, TITLE_RE, words

CASE_MIN_WORDS = 3  # "OK." is in capitals without being a habit
NO_COMMAS_MIN_WORDS = 30  # a short answer without a comma is just short
POSTSCRIPT_RE = re.compile(r"^\s*P\.\s?(?:P\.\s?)?S\b", re.MULTILINE)
SECTION_RE = re.compile(r"^\s*(?:#+\s*)?SECTION\s+\d+", re.MULTILINE)
PLACEHOLDER_RE = re.compile(r"\[[^\[\]\n]+\](?!\()")  # [name], not a markdown link [text](url)


def _quoted(text: str) -> bool:
    """Opens with a double quote: a cut-off quoted answer never reaches its closing mark, and an answer
    that opens by quoting the question back is the habit too."""
    return text.lstrip()[:1] in ('"', "“")


def _cased(check: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda text: len(words(text)) >= CASE_MIN_WORDS and check(text)


def _start_word(text: str) -> bool:
    first = words(text.lstrip(" \t\n#*>\"'“-"))
    return bool(first) and first[0].lower() in {w.lower() for w in START_WORDS}


def _no_commas(text: str) -> bool:
    return len(words(text)) >= NO_COMMAS_MIN_WORDS and library._no_commas(text)


# form id (the constraint type that asks for it) -> detector
FORMS: dict[str, Callable[[str], bool]] = {
    "quoted": _quoted,
    "uppercase": _cased(library._uppercase),
    "lowercase": _cased(library._lowercase),
    "json": library._json,
    "title": lambda text: bool(TITLE_RE.search(text)),
    "sections": lambda text: bool(SECTION_RE.search(text)),
    "postscript": lambda text: bool(POSTSCRIPT_RE.search(text)),
    "end_phrase": lambda text: any(text.rstrip().endswith(p) for p in END_PHRASES),
    "bullets": lambda text: len(PLAIN_BULLET_RE.findall(text)) >= 2,
    "highlights": lambda text: bool(HIGHLIGHT_RE.search(text)),
    "placeholders": lambda text: bool(PLACEHOLDER_RE.search(text)),
    "start_word": _start_word,
    "no_commas": _no_commas,
}
MARKED = frozenset({"quoted", "uppercase", "lowercase", "json", "title", "sections", "postscript", "end_phrase"})

# A form that answering another constraint produces by itself is not a habit: JSON carries brackets and
# may hold no comma; an answer in capitals may also open with a quote mark it was asked for, and so on.
IMPLIED: dict[str, frozenset[str]] = {
    "json": frozenset({"placeholders", "no_commas", "quoted", "highlights", "lowercase"}),
    "sections": frozenset({"title"}),
    "max_words": frozenset({"no_commas"}),
    "max_sentences": frozenset({"no_commas"}),
}


def asked(constraints: list[dict[str, Any]]) -> set[str]:
    """The forms a prompt asked for, and those its constraints bring along."""
    ids = {c["id"] for c in constraints}
    out = ids & set(FORMS)
    for cid in ids:
        out |= IMPLIED.get(cid, frozenset())
    return out


def shown(text: str) -> set[str]:
    """Every form the answer wears."""
    if not text.strip():
        return set()
    return {form for form, detect in FORMS.items() if detect(text)}


def unasked(constraints: list[dict[str, Any]], text: str) -> set[str]:
    """Forms the answer wears that its prompt did not ask for."""
    return shown(text) - asked(constraints)


def unasked_marked(constraints: list[dict[str, Any]], text: str) -> set[str]:
    """Unasked forms no reader expects: what the pairs stage keeps from being chosen."""
    return unasked(constraints, text) & MARKED


def rates(items: list[tuple[list[dict[str, Any]], str]]) -> dict[str, Any]:
    """Unasked-form figures over (constraints, answer) items: per form, the share of answers whose prompt
    did not ask for it that wear it anyway (with that count); overall, the share of answers wearing at
    least one unasked marked form, and the share wearing any unasked form."""
    seen = [(asked(constraints), shown(text)) for constraints, text in items]  # each detector runs once
    per_form: dict[str, tuple[float, int]] = {}
    for form in FORMS:
        eligible = [worn for wanted, worn in seen if form not in wanted]
        if eligible:
            per_form[form] = (sum(form in worn for worn in eligible) / len(eligible), len(eligible))
    n = len(items)
    return {
        "n": n,
        "per_form": per_form,
        "marked": sum(bool((worn - wanted) & MARKED) for wanted, worn in seen) / n if n else None,
        "any": sum(bool(worn - wanted) for wanted, worn in seen) / n if n else None,
    }

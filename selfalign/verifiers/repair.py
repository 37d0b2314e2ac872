"""Verifier-guided repair: edit one of the policy's own answers until it meets its prompt's constraints.

Why: on the embedded model five constraint types (JSON, quotes, upper case, exact bullet counts, ending
phrases) are met by none of the sampled answers, so selection alone never shows the policy a positive
example of them, and a DPO pair can only say "less wrong". Most constraints are about form, and form
can be fixed by a rule that keeps the answer's content: upper-case it, quote it, keep the first
sentences within a word limit, turn sentences into the asked number of bullets, append the ending
phrase. The repaired answer is then checked by the same verifiers (and the loop detector); only an
answer that now passes every constraint is returned. Content constraints (keywords, word counts to
reach) have no repair: those still come from selection.

Edits run in a fixed order so that a later one does not undo an earlier one: content words, then
trimming to a length limit, then layout, then additions at the start and end, then case, then
wrappers (quotes, JSON) that must enclose everything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from selfalign.verifiers.library import PLAIN_BULLET_RE, words

SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+")
LIST_ITEM_RE = re.compile(r"^\s*(?:[-*+•●▪–]|\d+[.)])\s+(.*\S)\s*$")
# plain replacements keep a sentence grammatical where deleting the word would not
AVOID_REPLACEMENTS = {"thing": "item", "things": "items", "good": "helpful", "nice": "pleasant",
                      "stuff": "material"}
POSTSCRIPT_NOTES = ["I hope this answer is useful to you.", "Feel free to ask if you want more detail.",
                    "Thank you for the question."]
MIN_KEPT_WORDS = 5  # fewer kept words than this is a marker or a fragment, not an answer
TITLE_STOP_WORDS = {"a", "an", "the", "is", "are", "was", "to", "of", "and", "or", "in", "on", "for", "with", "it",
                    "that", "this", "can", "be"}
ORDER = ["avoid_word", "no_commas", "max_sentences", "max_words", "highlights", "bullets", "paragraphs",
         "sections", "title", "start_word", "end_phrase", "postscript", "lowercase", "uppercase", "quoted", "json"]


class CannotRepair(Exception):
    """This answer cannot be edited into one that meets the constraint without writing new content."""


def repair(constraints: list[dict[str, Any]], text: str) -> str | None:
    """The answer edited to meet every constraint, or None when one cannot be met by an edit (or the
    edits broke another). An answer that already passes comes back unchanged."""
    from selfalign import verifiers

    if not constraints or not text.strip() or verifiers.degenerate(text):
        return None
    ids = {c["id"] for c in constraints}
    if any(i not in REPAIRS for i in ids) and not all(verifiers.check(c, text) for c in constraints
                                                        if c["id"] not in REPAIRS):
        return None  # a constraint only new content could meet, and the answer does not meet it
    reserve = _reserved_words(constraints)
    out = text.strip()
    for c in sorted(constraints, key=lambda c: ORDER.index(c["id"]) if c["id"] in ORDER else -1):
        if c["id"] not in REPAIRS or verifiers.check(c, out):
            continue
        try:
            out = REPAIRS[c["id"]](out, ids=ids, reserve=reserve, **c.get("params", {}))
        except CannotRepair:
            return None
    if not all(verifiers.check(c, out) for c in constraints) or verifiers.degenerate(out):
        return None
    return out


def _reserved_words(constraints: list[dict[str, Any]]) -> int:
    """Words the additions at the start and end will take, so trimming leaves room for them."""
    extra = 0
    for c in constraints:
        p = c.get("params", {})
        if c["id"] == "end_phrase":
            extra += len(words(p["phrase"]))
        elif c["id"] == "postscript":
            extra += len(words(p["marker"])) + max(len(words(n)) for n in POSTSCRIPT_NOTES)
        elif c["id"] == "start_word":
            extra += 1
        elif c["id"] == "title":
            extra += 6
    return extra


# ---------------------------------------------------------------- content words

def _avoid_word(text: str, word: str, **_) -> str:
    def swap(m: re.Match) -> str:
        found = m.group(0)
        new = AVOID_REPLACEMENTS.get(found.lower())
        if new is None:
            return ""
        return new.capitalize() if found[0].isupper() else new

    out = re.sub(rf"\b{re.escape(word)}\b", swap, text, flags=re.IGNORECASE)
    out = re.sub(r"[ \t]{2,}", " ", out)
    out = re.sub(r" +([,.;:!?])", r"\1", out).strip()
    # a sentence that began with the deleted word starts with a capital again
    return re.sub(r"(^|[.!?]\s+|\n\s*)([a-z])", lambda m: m.group(1) + m.group(2).upper(), out)


def _no_commas(text: str, **_) -> str:
    return re.sub(r"\s*[,，]\s*", " ", text).replace("  ", " ")


# ---------------------------------------------------------------- trimming to a limit

def _sentence_spans(text: str) -> list[int]:
    """End offsets of the text's sentences (as the sentence check splits them)."""
    ends = [m.start() for m in SENTENCE_END_RE.finditer(text)]
    return [e for e in ends] + [len(text.rstrip())]


def _keep_sentences(text: str, fits: Callable[[str], bool]) -> str:
    """The longest run of whole leading sentences that fits; the cut never falls inside a sentence."""
    best = ""
    for end in _sentence_spans(text):
        head = text[:end].rstrip()
        if not head or head[-1] not in ".!?" and end != len(text.rstrip()):
            continue
        if fits(head):
            best = head
        else:
            break
    if not best or best[-1] not in ".!?\"'”)" or len(words(best)) < min(MIN_KEPT_WORDS, len(words(text))):
        raise CannotRepair()  # nothing left, or a marker or fragment rather than an answer
    return best


def _max_sentences(text: str, n: int, ids: set, reserve: int = 0, **_) -> str:
    allowed = n - (1 if "end_phrase" in ids else 0) - (2 if "postscript" in ids else 0)
    if allowed < 1:
        raise CannotRepair()

    def fits(head: str) -> bool:
        return len([s for s in SENTENCE_END_RE.split(head.strip()) if words(s)]) <= allowed

    return _keep_sentences(text, fits)


def _max_words(text: str, n: int, reserve: int = 0, **_) -> str:
    budget = n - reserve
    if budget < 5:
        raise CannotRepair()
    return _keep_sentences(text, lambda head: len(words(head)) <= budget)


# ---------------------------------------------------------------- layout

def _sentences(text: str) -> list[str]:
    flat = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return [s.strip() for s in SENTENCE_END_RE.split(flat) if words(s)]


def _bullets(text: str, n: int, **_) -> str:
    """Exactly n '- ' items: the answer's own list items when it has at least n (numbered lists
    become dashes, items beyond the n-th are dropped), else its sentences spread over n items."""
    lines = text.splitlines()
    items = [i for i, line in enumerate(lines) if LIST_ITEM_RE.match(line)]
    if len(items) >= n:
        keep = set(items[:n])
        drop = set(items[n:])
        out = []
        for i, line in enumerate(lines):
            if i in keep:
                out.append("- " + LIST_ITEM_RE.match(line).group(1))
            elif i not in drop and not (items and items[n - 1] < i <= items[-1]):
                out.append(line)  # intro and closing lines stay; lines inside the dropped tail go
        return "\n".join(out).strip()
    sentences = _sentences(text)
    if len(sentences) < n:
        raise CannotRepair()
    groups = _spread(sentences, n)
    return "\n".join("- " + " ".join(g) for g in groups)


def _spread(items: list[str], n: int) -> list[list[str]]:
    """items cut into n consecutive groups of near-equal size."""
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def _blocks(text: str) -> list[str]:
    return [b.strip() for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]


def _paragraphs(text: str, n: int, **_) -> str:
    """Exactly n blocks: adjacent short blocks merged (joined by one line break, so a list or a
    postscript keeps its lines), or the longest block split between its sentences."""
    blocks = _blocks(text)
    while len(blocks) > n:
        i = min(range(len(blocks) - 1), key=lambda j: len(blocks[j]) + len(blocks[j + 1]))
        blocks[i:i + 2] = [blocks[i] + "\n" + blocks[i + 1]]
    while len(blocks) < n:
        i = max(range(len(blocks)), key=lambda j: len(_sentences(blocks[j])) if "\n" not in blocks[j] else 0)
        sentences = _sentences(blocks[i])
        if len(sentences) < 2 or "\n" in blocks[i]:
            raise CannotRepair()
        half = len(sentences) // 2
        blocks[i:i + 1] = [" ".join(sentences[:half]), " ".join(sentences[half:])]
    return "\n\n".join(blocks)


def _sections(text: str, n: int, **_) -> str:
    blocks = _blocks(text)
    parts = _spread(blocks, n) if len(blocks) >= n else None
    if parts is None:
        sentences = _sentences(text)
        if len(sentences) < n:
            raise CannotRepair()
        parts = [[" ".join(g)] for g in _spread(sentences, n)]
    return "\n\n".join(f"SECTION {i + 1}\n" + "\n\n".join(p) for i, p in enumerate(parts))


def _highlights(text: str, n: int, **_) -> str:
    """The opening words (up to four) of the first n sentences or list items set in bold."""
    done = 0

    def bold(m: re.Match) -> str:
        nonlocal done
        if done >= n:
            return m.group(0)
        done += 1
        return f"{m.group(1)}**{m.group(2)}**"

    out = re.sub(r"(^\s*(?:[-*+]\s+)?|(?<=[.!?])\s+)((?:[A-Za-z][\w'’-]*\s){0,3}[A-Za-z][\w'’-]*)", bold, text,
                 flags=re.MULTILINE)
    if done < n:
        raise CannotRepair()
    return out


# ---------------------------------------------------------------- additions at the start and end

def _title(text: str, **_) -> str:
    first = _sentences(text)[:1] or [text]
    head = words(first[0].replace("*", ""))[:4]
    while head and head[-1].lower() in TITLE_STOP_WORDS:
        head.pop()
    if not head:
        raise CannotRepair()
    title = " ".join(w.capitalize() if w.islower() else w for w in head)
    return f"<<{title}>>\n{text}"


def _start_word(text: str, word: str, **_) -> str:
    first_line = text.splitlines()[0] if text else ""
    if LIST_ITEM_RE.match(first_line) or first_line.lstrip().startswith(("#", "<<", "SECTION")):
        return f"{word}:\n{text}"
    # lower-case the old first letter unless it starts a name or "I" (a capital second letter or a
    # one-letter word says so)
    first = words(text)[:1]
    rest = text
    if first and len(first[0]) > 1 and first[0][1:].islower() and text[:1].isupper():
        rest = text[:1].lower() + text[1:]
    return f"{word}, {rest}"


def _end_phrase(text: str, phrase: str, **_) -> str:
    body = text.rstrip()
    last = body.splitlines()[-1] if body else ""
    joiner = "\n" if LIST_ITEM_RE.match(last) or PLAIN_BULLET_RE.match(last) else " "
    if body and body[-1] not in ".!?\"'”)":
        body += "."
    return body + joiner + phrase


def _postscript(text: str, marker: str, ids: set, **_) -> str:
    note = POSTSCRIPT_NOTES[len(text) % len(POSTSCRIPT_NOTES)]
    joiner = "\n" if "paragraphs" in ids else "\n\n"  # a blank line would add a paragraph
    return f"{text.rstrip()}{joiner}{marker} {note}"


# ---------------------------------------------------------------- case and wrappers

def _lowercase(text: str, **_) -> str:
    return text.lower()


def _uppercase(text: str, **_) -> str:
    return text.upper()


def _quoted(text: str, **_) -> str:
    inner = text.strip().strip('"“”').replace('"', "'")
    return f'"{inner}"'


def _json(text: str, **_) -> str:
    """A JSON object holding the answer: its list items as a list when it is a list, else its text."""
    lines = [LIST_ITEM_RE.match(line) for line in text.splitlines() if line.strip()]
    if len(lines) >= 2 and all(lines):
        return json.dumps({"items": [m.group(1) for m in lines]}, indent=2, ensure_ascii=False)
    return json.dumps({"answer": text.strip()}, indent=2, ensure_ascii=False)


REPAIRS: dict[str, Callable[..., str]] = {
    "avoid_word": _avoid_word, "no_commas": _no_commas, "max_sentences": _max_sentences, "max_words": _max_words,
    "bullets": _bullets, "paragraphs": _paragraphs, "sections": _sections, "highlights": _highlights, "title": _title,
    "start_word": _start_word, "end_phrase": _end_phrase, "postscript": _postscript, "lowercase": _lowercase,
    "uppercase": _uppercase, "quoted": _quoted, "json": _json,
}

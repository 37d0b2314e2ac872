"""Verifiable constraint types (ACT / IFEval style): each has parameters, a phrasing and a check.

A constraint is stored with its prompt as {"id": ..., "params": {...}}. `phrase` is the sentence
appended to the prompt; `check(text)` says whether a response satisfies it. Checks are exact and
forgiving only about what a reader would forgive: trailing whitespace, markdown bullet styles,
code fences around JSON, unicode letters.
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

WORD_RE = re.compile(r"\b[\w'’-]+\b", re.UNICODE)
PLAIN_BULLET_RE = re.compile(r"^\s*[-*+•●▪–]\s+\S", re.MULTILINE)
HIGHLIGHT_RE = re.compile(r"\*\*[^*\n]+\*\*|(?<![*\w])\*[^*\n]+\*(?![*\w])")
TITLE_RE = re.compile(r"<<[^<>\n]+>>")
FENCE_RE = re.compile(r"^```[a-zA-Z]*\s*\n(.*?)\n?```\s*$", re.DOTALL)

KEYWORDS = ["simple", "example", "important", "today", "reason", "plan", "future", "careful", "energy",
            "balance", "quickly", "community", "practice", "detail", "budget", "goal", "story", "method"]
AVOID_WORDS = ["very", "really", "thing", "basically", "actually", "just", "good", "nice", "stuff", "also"]
START_WORDS = ["First", "Today", "Yes", "Here", "Imagine", "Sure", "Consider", "Well"]
END_PHRASES = ["Is there anything else I can help with?", "That is all.", "Hope this helps.",
               "Let me know if you have questions."]


def words(text: str) -> list[str]:
    return WORD_RE.findall(text)


@dataclass(frozen=True)
class ConstraintType:
    id: str
    group: str  # at most one constraint per group on a prompt
    sample: Callable[[random.Random], dict[str, Any]]
    phrase: Callable[..., str]
    check: Callable[..., bool]
    conflicts: frozenset[str] = field(default_factory=frozenset)


REGISTRY: dict[str, ConstraintType] = {}


def register(id: str, group: str, sample, phrase, check, conflicts=()) -> None:
    REGISTRY[id] = ConstraintType(id, group, sample, phrase, check, frozenset(conflicts))


# ---------------------------------------------------------------- the checks


def _max_words(text: str, n: int) -> bool:
    return len(words(text)) <= n


def _min_words(text: str, n: int) -> bool:
    return len(words(text)) >= n


def _bullets(text: str, n: int) -> bool:
    return len(PLAIN_BULLET_RE.findall(text)) == n


def _paragraphs(text: str, n: int) -> bool:
    parts = [p for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    return len(parts) == n


def _keywords(text: str, keywords: list[str]) -> bool:
    return all(re.search(rf"\b{re.escape(k)}\b", text, re.IGNORECASE) for k in keywords)


def _avoid(text: str, word: str) -> bool:
    return not re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE)


def _frequency(text: str, word: str, n: int) -> bool:
    return len(re.findall(rf"\b{re.escape(word)}\b", text, re.IGNORECASE)) >= n


def _has_letters(text: str) -> bool:
    return any(unicodedata.category(c).startswith("L") for c in text)


def _lowercase(text: str) -> bool:
    return _has_letters(text) and text == text.lower()


def _uppercase(text: str) -> bool:
    return _has_letters(text) and text == text.upper()


def _quoted(text: str) -> bool:
    s = text.strip()
    return len(s) >= 2 and ((s[0] == '"' and s[-1] == '"') or (s[0] == "“" and s[-1] == "”"))


def _json(text: str) -> bool:
    s = text.strip()
    fenced = FENCE_RE.match(s)
    if fenced:
        s = fenced.group(1).strip()
    try:
        json.loads(s)
    except ValueError:
        return False
    return s[:1] in "{["  # a bare number or string is not what "format as JSON" asks for


def _ends_with(text: str, phrase: str) -> bool:
    return text.rstrip().endswith(phrase)


def _starts_with(text: str, word: str) -> bool:
    first = words(text.lstrip(" \t\n#*>\"'“-"))
    return bool(first) and first[0].lower() == word.lower()


def _title(text: str) -> bool:
    return bool(TITLE_RE.search(text))


def _no_commas(text: str) -> bool:
    return "," not in text and "，" not in text


def _highlights(text: str, n: int) -> bool:
    return len(HIGHLIGHT_RE.findall(text)) >= n


def _postscript(text: str, marker: str) -> bool:
    return bool(re.search(rf"^\s*{re.escape(marker)}", text, re.MULTILINE))


def _max_sentences(text: str, n: int) -> bool:
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if words(s)]
    return 0 < len(sentences) <= n


def _placeholders(text: str, n: int) -> bool:
    return len(re.findall(r"\[[^\[\]\n]+\]", text)) >= n


def _sections(text: str, n: int) -> bool:
    return len(re.findall(r"^\s*(?:#+\s*)?SECTION\s+\d+", text, re.MULTILINE)) == n


# ---------------------------------------------------------------- the registry

STRUCTURED = ("json", "quoted")
register("max_words", "length", lambda r: {"n": r.choice([20, 30, 50, 80])},
         lambda n: f"Answer in at most {n} words.", _max_words)
register("min_words", "length", lambda r: {"n": r.choice([60, 100, 150])},
         lambda n: f"Write at least {n} words.", _min_words, conflicts=STRUCTURED)
register("bullets", "layout", lambda r: {"n": r.randint(2, 5)},
         lambda n: f"Format the answer as exactly {n} bullet points using markdown, like: - point.", _bullets,
         conflicts=STRUCTURED)
register("paragraphs", "layout", lambda r: {"n": r.randint(2, 4)},
         lambda n: f"Write exactly {n} paragraphs separated by one blank line.", _paragraphs,
         conflicts=STRUCTURED)
register("sections", "layout", lambda r: {"n": r.randint(2, 3)},
         lambda n: f"Split the answer into {n} sections, each starting with SECTION X (X = 1, 2, ...).",
         _sections, conflicts=STRUCTURED + ("lowercase",))
register("keywords", "keywords", lambda r: {"keywords": r.sample(KEYWORDS, r.randint(1, 2))},
         lambda keywords: "Include the word" + ("s " if len(keywords) > 1 else " ")
         + " and ".join(f'"{k}"' for k in keywords) + ".", _keywords, conflicts=("uppercase",))
register("avoid_word", "avoid", lambda r: {"word": r.choice(AVOID_WORDS)},
         lambda word: f'Do not use the word "{word}".', _avoid)
register("frequency", "keywords", lambda r: {"word": r.choice(KEYWORDS), "n": r.randint(2, 3)},
         lambda word, n: f'Use the word "{word}" at least {n} times.', _frequency, conflicts=("uppercase",))
register("lowercase", "case", lambda r: {},
         lambda: "Write everything in lowercase letters; no capital letters at all.", _lowercase,
         conflicts=("start_word", "end_phrase", "postscript", "sections", "title"))
register("uppercase", "case", lambda r: {},
         lambda: "Write your entire answer in capital letters.", _uppercase,
         conflicts=("start_word", "end_phrase", "postscript", "keywords", "frequency"))
register("quoted", "wrap", lambda r: {},
         lambda: "Wrap your entire answer in double quotation marks.", _quoted,
         conflicts=("json", "end_phrase", "start_word", "title", "bullets", "paragraphs", "sections",
                    "postscript", "min_words"))
register("json", "wrap", lambda r: {},
         lambda: "Format your entire answer as valid JSON.", _json,
         conflicts=("quoted", "bullets", "paragraphs", "sections", "end_phrase", "start_word", "title",
                    "postscript", "highlights", "min_words", "no_commas", "placeholders", "max_sentences"))
register("end_phrase", "end", lambda r: {"phrase": r.choice(END_PHRASES)},
         lambda phrase: f'End your answer with the exact phrase "{phrase}" and nothing after it.', _ends_with,
         conflicts=("quoted", "json", "postscript", "lowercase", "uppercase"))
register("start_word", "start", lambda r: {"word": r.choice(START_WORDS)},
         lambda word: f'Start your answer with the word "{word}".', _starts_with,
         conflicts=("quoted", "json", "lowercase", "uppercase", "title"))
register("title", "title", lambda r: {},
         lambda: "Give the answer a title wrapped in double angular brackets, like <<my title>>.", _title,
         conflicts=("quoted", "json", "lowercase", "start_word"))
register("no_commas", "punctuation", lambda r: {},
         lambda: "Do not use any commas.", _no_commas, conflicts=("json",))
register("highlights", "emphasis", lambda r: {"n": r.randint(1, 3)},
         lambda n: f"Highlight at least {n} part{'s' if n > 1 else ''} with markdown, like *this part*.",
         _highlights, conflicts=("json",))
register("postscript", "end", lambda r: {"marker": r.choice(["P.S.", "P.P.S"])},
         lambda marker: f"At the end, add a postscript starting with {marker}", _postscript,
         conflicts=("quoted", "json", "end_phrase", "lowercase", "uppercase"))
register("max_sentences", "sentences", lambda r: {"n": r.randint(1, 4)},
         lambda n: f"Use at most {n} sentence{'s' if n > 1 else ''}.", _max_sentences, conflicts=("json",))
register("placeholders", "placeholders", lambda r: {"n": r.randint(1, 3)},
         lambda n: f"Include at least {n} placeholder{'s' if n > 1 else ''} in square brackets, like [name].",
         _placeholders, conflicts=("json",))

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
    phrases: tuple[Callable[..., str], ...]  # training wordings ("t0", "t1", ...); all take the same parameters
    check: Callable[..., bool]
    conflicts: frozenset[str] = field(default_factory=frozenset)
    # Wordings kept for the held-out benchmark ("h0", "h1"): training never sees them, so a gain
    # on the benchmark means the policy learned what the constraint asks, not one sentence.
    heldout_phrases: tuple[Callable[..., str], ...] = ()

    @property
    def phrase(self) -> Callable[..., str]:
        return self.phrases[0]

    def wordings(self, split: str = "train") -> list[str]:
        """Wording keys of a split: t0, t1, ... for training, h0, h1, ... for the held-out benchmark."""
        if split == "train":
            return [f"t{i}" for i in range(len(self.phrases))]
        return [f"h{i}" for i in range(len(self.heldout_phrases))]

    def wording(self, key: str) -> Callable[..., str]:
        """The phrasing a wording key names; ValueError for one this type does not have."""
        pool = self.phrases if key[:1] == "t" else self.heldout_phrases if key[:1] == "h" else ()
        if not key[1:].isdigit() or int(key[1:]) >= len(pool):
            raise ValueError(f"constraint {self.id!r} has no wording {key!r}; it has "
                             f"{', '.join(self.wordings('train') + self.wordings('heldout'))}")
        return pool[int(key[1:])]


REGISTRY: dict[str, ConstraintType] = {}


def register(id: str, group: str, sample, phrases, check, conflicts=(), heldout=()) -> None:
    REGISTRY[id] = ConstraintType(id, group, sample, tuple(phrases), check, frozenset(conflicts), tuple(heldout))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _quoted_words(keywords: list[str]) -> str:
    return " and ".join(f'"{k}"' for k in keywords)


def _the_words(keywords: list[str]) -> str:
    return ("the words " if len(keywords) > 1 else "the word ") + _quoted_words(keywords)


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
         [lambda n: f"Answer in at most {n} words.",
          lambda n: f"Use no more than {n} words.",
          lambda n: f"Your response must not exceed {n} words."], _max_words,
         heldout=[lambda n: f"Limit yourself to {n} words or fewer.",
                  lambda n: f"Be brief: {n} words is the maximum."])
register("min_words", "length", lambda r: {"n": r.choice([60, 100, 150])},
         [lambda n: f"Write at least {n} words.",
          lambda n: f"Your answer should be {n} words or longer.",
          lambda n: f"Use a minimum of {n} words."], _min_words, conflicts=STRUCTURED,
         heldout=[lambda n: f"Make the response no shorter than {n} words.",
                  lambda n: f"Aim for a detailed reply of {n} words or more."])
register("bullets", "layout", lambda r: {"n": r.randint(2, 5)},
         [lambda n: f"Format the answer as exactly {n} bullet points using markdown, like: - point.",
          lambda n: f"Give exactly {n} markdown bullet points (lines starting with '- ').",
          lambda n: f"Answer with {n} markdown bullets, no more and no fewer."], _bullets, conflicts=STRUCTURED,
         heldout=[lambda n: f"Present your reply as a markdown list of precisely {n} items, each line beginning "
                            "with a dash.",
                  lambda n: f"Structure the response as {n} bulleted lines (use '* ' or '- '), nothing more."])
register("paragraphs", "layout", lambda r: {"n": r.randint(2, 4)},
         [lambda n: f"Write exactly {n} paragraphs separated by one blank line.",
          lambda n: f"Use {n} paragraphs, with a blank line between each.",
          lambda n: f"Your answer must have exactly {n} paragraphs."], _paragraphs, conflicts=STRUCTURED,
         heldout=[lambda n: f"Organize the text into {n} paragraphs divided by empty lines.",
                  lambda n: f"Write {n} separate blocks of prose, leaving a blank line between them."])
register("sections", "layout", lambda r: {"n": r.randint(2, 3)},
         [lambda n: f"Split the answer into {n} sections, each starting with SECTION X (X = 1, 2, ...).",
          lambda n: f"Divide your answer into {n} parts, labelled SECTION 1, SECTION 2 and so on.",
          lambda n: f"Use {n} sections and begin each with the marker SECTION followed by its number."],
         _sections, conflicts=STRUCTURED + ("lowercase",),
         heldout=[lambda n: f"Your reply needs {n} numbered parts; open each part with SECTION and its number, "
                            "like SECTION 1.",
                  lambda n: f"Break the response into {n} pieces headed SECTION 1 through SECTION {n}."])
register("keywords", "keywords", lambda r: {"keywords": r.sample(KEYWORDS, r.randint(1, 2))},
         [lambda keywords: f"Include {_the_words(keywords)}.",
          lambda keywords: f"Make sure {_the_words(keywords)} appear{'s' if len(keywords) == 1 else ''} in your "
                           "answer.",
          lambda keywords: f"Mention {_the_words(keywords)} somewhere in the response."], _keywords,
         conflicts=("uppercase",),
         heldout=[lambda keywords: f"Your text must contain {_the_words(keywords)}.",
                  lambda keywords: f"Work {_the_words(keywords)} into your reply."])
register("avoid_word", "avoid", lambda r: {"word": r.choice(AVOID_WORDS)},
         [lambda word: f'Do not use the word "{word}".',
          lambda word: f'Never write the word "{word}".',
          lambda word: f'Avoid the word "{word}" entirely.'], _avoid,
         heldout=[lambda word: f'The word "{word}" must not appear anywhere in your response.',
                  lambda word: f'Leave out the word "{word}" completely.'])
register("frequency", "keywords", lambda r: {"word": r.choice(KEYWORDS), "n": r.randint(2, 3)},
         [lambda word, n: f'Use the word "{word}" at least {n} times.',
          lambda word, n: f'The word "{word}" should appear {n} or more times.',
          lambda word, n: f'Repeat the word "{word}" at least {n} times in your answer.'], _frequency,
         conflicts=("uppercase",),
         heldout=[lambda word, n: f'Mention "{word}" no fewer than {n} times.',
                  lambda word, n: f'Make sure "{word}" shows up at least {n} times.'])
register("lowercase", "case", lambda r: {},
         [lambda: "Write everything in lowercase letters; no capital letters at all.",
          lambda: "Use only lowercase letters in your response.",
          lambda: "Do not use any capital letters."], _lowercase,
         conflicts=("start_word", "end_phrase", "postscript", "sections", "title"),
         heldout=[lambda: "Your whole reply must be in small letters, with no uppercase anywhere.",
                  lambda: "Type the response entirely in lower case."])
register("uppercase", "case", lambda r: {},
         [lambda: "Write your entire answer in capital letters.",
          lambda: "Respond using only CAPITAL LETTERS.",
          lambda: "Use uppercase letters for every word."], _uppercase,
         conflicts=("start_word", "end_phrase", "postscript", "keywords", "frequency"),
         heldout=[lambda: "Your whole reply must be in block capitals.",
                  lambda: "Type the response entirely in upper case, with no lowercase letters."])
register("quoted", "wrap", lambda r: {},
         [lambda: "Wrap your entire answer in double quotation marks.",
          lambda: "Put your whole response inside double quotes.",
          lambda: 'Begin and end your answer with a double quotation mark (").'], _quoted,
         conflicts=("json", "end_phrase", "start_word", "title", "bullets", "paragraphs", "sections",
                    "postscript", "min_words"),
         heldout=[lambda: "Enclose the complete reply in a pair of double quotes.",
                  lambda: 'Your response must start with " and end with ".'])
register("json", "wrap", lambda r: {},
         [lambda: "Format your entire answer as valid JSON.",
          lambda: "Reply with valid JSON only.",
          lambda: "Return your answer as a JSON object."], _json,
         conflicts=("quoted", "bullets", "paragraphs", "sections", "end_phrase", "start_word", "title",
                    "postscript", "highlights", "min_words", "no_commas", "placeholders", "max_sentences"),
         heldout=[lambda: "Give the output in JSON format, with nothing outside the JSON.",
                  lambda: "The entire response must parse as JSON."])
register("end_phrase", "end", lambda r: {"phrase": r.choice(END_PHRASES)},
         [lambda phrase: f'End your answer with the exact phrase "{phrase}" and nothing after it.',
          lambda phrase: f'Finish your response with "{phrase}" and write nothing after it.',
          lambda phrase: f'The last words of your answer must be "{phrase}".'], _ends_with,
         conflicts=("quoted", "json", "postscript", "lowercase", "uppercase"),
         heldout=[lambda phrase: f'Close your reply with this exact sentence: "{phrase}" No other words may '
                                 "follow it.",
                  lambda phrase: f'Make "{phrase}" the final sentence of the response.'])
register("start_word", "start", lambda r: {"word": r.choice(START_WORDS)},
         [lambda word: f'Start your answer with the word "{word}".',
          lambda word: f'Begin your response with "{word}".',
          lambda word: f'The first word of your answer must be "{word}".'], _starts_with,
         conflicts=("quoted", "json", "lowercase", "uppercase", "title"),
         heldout=[lambda word: f'Open your reply with the word "{word}".',
                  lambda word: f'Your response should start with "{word}" as its very first word.'])
register("title", "title", lambda r: {},
         [lambda: "Give the answer a title wrapped in double angular brackets, like <<my title>>.",
          lambda: "Include a title in double angle brackets, such as <<title>>.",
          lambda: "Add a title wrapped like <<this>>."], _title,
         conflicts=("quoted", "json", "lowercase", "start_word"),
         heldout=[lambda: "Put a heading inside double angle brackets, for example <<A Heading>>.",
                  lambda: "Your reply needs a title enclosed in << and >>."])
register("no_commas", "punctuation", lambda r: {},
         [lambda: "Do not use any commas.",
          lambda: "Write your answer without commas.",
          lambda: "Commas are not allowed in your response."], _no_commas, conflicts=("json",),
         heldout=[lambda: "Avoid the comma character entirely.",
                  lambda: "Your reply must contain zero commas."])
register("highlights", "emphasis", lambda r: {"n": r.randint(1, 3)},
         [lambda n: f"Highlight at least {_plural(n, 'part')} with markdown, like *this part*.",
          lambda n: f"Emphasize at least {_plural(n, 'phrase')} in markdown, for example *key idea*.",
          lambda n: f"Use markdown italics or bold for at least {_plural(n, 'passage')}, like *this*."],
         _highlights, conflicts=("json",),
         heldout=[lambda n: f"Mark at least {_plural(n, 'important part')} with asterisks, such as *important*.",
                  lambda n: f"Highlight {n} or more passages using markdown emphasis (*text* or **text**)."])
register("postscript", "end", lambda r: {"marker": r.choice(["P.S.", "P.P.S"])},
         [lambda marker: f"At the end, add a postscript starting with {marker}",
          lambda marker: f"Finish with a postscript that begins with {marker}",
          lambda marker: f"Add a note after your answer that starts with {marker}"], _postscript,
         conflicts=("quoted", "json", "end_phrase", "lowercase", "uppercase"),
         heldout=[lambda marker: f"Close with a short extra note beginning with {marker}",
                  lambda marker: f"After the main answer, write a postscript that opens with {marker}"])
register("max_sentences", "sentences", lambda r: {"n": r.randint(1, 4)},
         [lambda n: f"Use at most {_plural(n, 'sentence')}.",
          lambda n: f"Keep your answer to {_plural(n, 'sentence')} or fewer.",
          lambda n: f"Do not write more than {_plural(n, 'sentence')}."], _max_sentences, conflicts=("json",),
         heldout=[lambda n: f"Your reply may contain no more than {_plural(n, 'sentence')}.",
                  lambda n: f"Limit the response to a maximum of {_plural(n, 'sentence')}."])
register("placeholders", "placeholders", lambda r: {"n": r.randint(1, 3)},
         [lambda n: f"Include at least {_plural(n, 'placeholder')} in square brackets, like [name].",
          lambda n: f"Use at least {_plural(n, 'placeholder')} in square brackets, such as [address].",
          lambda n: f"Add {n} or more bracketed placeholders, like [date]."], _placeholders, conflicts=("json",),
         heldout=[lambda n: f"Leave at least {_plural(n, 'blank')} to fill in, written in square brackets such "
                            "as [city].",
                  lambda n: f"Your response should include {n} or more fields in square brackets, for instance "
                            "[price]."])

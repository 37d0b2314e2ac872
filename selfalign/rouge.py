"""ROUGE-L near-duplicate detection against everything a run already holds.

Self-instruct keeps a new instruction only if its ROUGE-L F1 against every earlier one is at most
a threshold (0.7). Comparing each candidate with thousands of texts by dynamic programming is slow,
so an inverted index first bounds the score: the longest common subsequence can never be longer
than the multiset overlap of the two token lists, and only texts whose bound reaches the
threshold get the exact computation.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

TOKEN_RE = re.compile(r"\w+", re.UNICODE)


def tokens(text: str) -> list[str]:
    return TOKEN_RE.findall(text.lower())


def lcs_length(a: list[str], b: list[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l(a: list[str], b: list[str]) -> float:
    if not a or not b:
        return 0.0
    lcs = lcs_length(a, b)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


class RougeIndex:
    """Texts seen so far; `max_score` finds the most similar one quickly."""

    def __init__(self) -> None:
        self.docs: list[list[str]] = []
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)  # token -> (doc, count)

    def __len__(self) -> int:
        return len(self.docs)

    def add(self, text: str) -> None:
        toks = tokens(text)
        doc = len(self.docs)
        self.docs.append(toks)
        for token, count in Counter(toks).items():
            self.postings[token].append((doc, count))

    def max_score(self, text: str, threshold: float = 0.0) -> float:
        """Highest ROUGE-L F1 against the indexed texts (exact for every text that could reach `threshold`)."""
        toks = tokens(text)
        if not toks:
            return 0.0
        overlap: dict[int, int] = defaultdict(int)
        for token, count in Counter(toks).items():
            for doc, doc_count in self.postings.get(token, ()):
                overlap[doc] += min(count, doc_count)
        best = 0.0
        # F1 with LCS <= overlap: 2 * overlap / (len(a) + len(b)) bounds the score from above.
        bounded = sorted(((2 * n / (len(toks) + len(self.docs[d])), d) for d, n in overlap.items()), reverse=True)
        for bound, doc in bounded:
            if bound <= best or bound < threshold:
                break
            best = max(best, rouge_l(toks, self.docs[doc]))
        return best

    def is_near_duplicate(self, text: str, threshold: float) -> bool:
        return self.max_score(text, threshold) > threshold

"""ROUGE-L and the indexed near-duplicate search agree with the plain definition."""

import random

import pytest

from selfalign.rouge import RougeIndex, lcs_length, rouge_l, tokens


def test_values_by_hand():
    a, b = tokens("the cat sat on the mat"), tokens("the cat lay on a mat")
    assert lcs_length(a, b) == 4  # the cat on mat
    assert rouge_l(a, b) == pytest.approx(4 / 6)
    assert rouge_l(a, a) == 1.0 and rouge_l(a, tokens("dogs bark")) == 0.0 and rouge_l([], a) == 0.0
    assert tokens("Hello, WORLD! ünï") == ["hello", "world", "ünï"]


def test_index_matches_brute_force_on_random_texts():
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(30)]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(3, 20))) for _ in range(300)]
    index = RougeIndex()
    for text in texts[:250]:
        index.add(text)
    for query in texts[250:]:
        exact = max(rouge_l(tokens(query), tokens(t)) for t in texts[:250])
        for threshold in (0.3, 0.5, 0.7):
            assert index.is_near_duplicate(query, threshold) == (exact > threshold)
        assert index.max_score(query) == pytest.approx(exact)


def test_copy_is_a_duplicate_and_reworded_text_is_not():
    index = RougeIndex()
    index.add("Write a short poem about the first frost of autumn.")
    assert index.is_near_duplicate("Write a short poem about the first frost of autumn", 0.7)
    assert not index.is_near_duplicate("Explain how glaciers carve valleys over thousands of years.", 0.7)
    assert len(index) == 1

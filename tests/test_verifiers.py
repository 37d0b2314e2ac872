"""Every constraint type with passing and failing responses, edge cases included."""

import random

import pytest

from selfalign import verifiers

CASES = {
    # id: (params, [passing responses], [failing responses])
    "max_words": ({"n": 5}, ["One two three four five.", "  short answer  \n", "l'été est beau"],
                  ["one two three four five six", ""]),
    "min_words": ({"n": 3}, ["one two three", "a b c d"], ["one two", "   "]),
    "bullets": ({"n": 3}, ["- a\n- b\n- c", "* a\n* b\n* c\n", "Intro:\n  + a\n  • b\n  - c\nDone.",
                           "- a\n-  b\n– c"],
                ["- a\n- b", "1. a\n2. b\n3. c", "- a\n- b\n- c\n- d", "-a\n-b\n-c", "**bold**\n**b**\n**c**"]),
    "paragraphs": ({"n": 2}, ["First para.\n\nSecond para.", "A\nstill A.\n\n   \nB\n\n"],
                   ["Only one.", "A\n\nB\n\nC"]),
    "sections": ({"n": 2}, ["SECTION 1\nintro\nSECTION 2\nbody", "## SECTION 1 Intro\nx\n## SECTION 2\ny"],
                 ["Section 1\nSection 2", "SECTION 1\nonly"]),
    "keywords": ({"keywords": ["plan", "goal"]}, ["My plan has one goal.", "PLAN and Goal!"],
                 ["planning goals", "a plan only"]),
    "avoid_word": ({"word": "very"}, ["This is quite nice.", "everything is fine"],
                   ["Very well.", "it is very", ""]),
    "frequency": ({"word": "energy", "n": 2}, ["energy, Energy!"], ["energy once", "energetic energies"]),
    "lowercase": ({}, ["all lower case, 123.", "über café"], ["Not lower", "ÜBER", "123 456"]),
    "uppercase": ({}, ["ALL CAPS 1 2 3!", "ÜBER CAFÉ"], ["ALL CAPs", "123"]),
    "quoted": ({}, ['"a quoted answer"', '  "quoted"\n', "“curly quotes”"], ['"unfinished', 'not "quoted"', '"']),
    "json": ({}, ['{"a": 1}', '[1, 2]', '```json\n{"a": [1, 2]}\n```\n', '  {"a": "b"}  '],
             ["{'a': 1}", "42", '"just a string"', "Here is JSON: {\"a\": 1}", "```\n{oops}\n```"]),
    "end_phrase": ({"phrase": "That is all."}, ["Answer. That is all.", "Answer. That is all.  \n"],
                   ["That is all. More.", "Answer. That is all"]),
    "start_word": ({"word": "First"}, ["First, do this.", "  first things first", "**First** step", "# First"],
                   ["At first", "Firstly, no", ""]),
    "title": ({}, ["<<A Title>>\nbody", "Intro <<Another>> text"], ["<A Title>", "<<>>", "<<broken\ntitle>>"]),
    "no_commas": ({}, ["No commas here."], ["One, two", "全角，逗号", "  \n"]),
    "highlights": ({"n": 2}, ["*one* and *two*", "**bold** and *it*"], ["*one* only", "2 * 3 * 4", "plain"]),
    "postscript": ({"marker": "P.S."}, ["Body.\n\nP.S. Bye", "Body\n  P.S. x"], ["Body. p.s. bye", "Body P.S. inline"]),
    "max_sentences": ({"n": 2}, ["One. Two!", "Just one"], ["One. Two. Three.", "", "..."]),
    "placeholders": ({"n": 2}, ["Dear [name], at [place]."], ["Dear [name].", "[\n]", "no brackets"]),
}


def test_there_are_at_least_15_types_and_each_has_cases():
    assert len(verifiers.REGISTRY) >= 15
    assert set(CASES) == set(verifiers.REGISTRY)


@pytest.mark.parametrize("type_id", sorted(CASES))
def test_passing_and_failing_responses(type_id):
    params, good, bad = CASES[type_id]
    constraint = verifiers.validate({"id": type_id, "params": params})
    for text in good:
        assert verifiers.check(constraint, text), f"{type_id} should pass {text!r}"
    for text in bad:
        assert not verifiers.check(constraint, text), f"{type_id} should fail {text!r}"
    phrase = verifiers.describe(constraint)
    assert phrase[0].isupper() and len(phrase) < 160


@pytest.mark.parametrize("type_id", sorted(CASES))
def test_every_type_has_several_training_and_heldout_wordings(type_id):
    params = CASES[type_id][0]
    kind = verifiers.REGISTRY[type_id]
    assert len(kind.wordings("train")) >= 3 and len(kind.wordings("heldout")) >= 2
    texts = [verifiers.describe({"id": type_id, "params": params, "wording": key})
             for key in kind.wordings("train") + kind.wordings("heldout")]
    assert len(set(texts)) == len(texts)
    assert texts[0] == verifiers.describe({"id": type_id, "params": params})  # no wording: t0


def test_sampling_uses_the_wordings_of_its_split_and_validate_rejects_unknown_ones():
    rng = random.Random(1)
    train = [c for _ in range(200) for c in verifiers.sample(rng, 3)]
    assert {c["wording"][0] for c in train} == {"t"} and len({c["wording"] for c in train}) >= 3
    held = [c for _ in range(50) for c in verifiers.sample(rng, 3, split="heldout")]
    assert {c["wording"][0] for c in held} == {"h"}
    assert verifiers.validate({"id": "no_commas", "params": {}, "wording": "h1"})["wording"] == "h1"
    with pytest.raises(ValueError, match="has no wording 'h9'"):
        verifiers.validate({"id": "no_commas", "params": {}, "wording": "h9"})


def test_csr_and_check_all():
    constraints = [{"id": "lowercase", "params": {}}, {"id": "max_words", "params": {"n": 3}}]
    assert verifiers.check_all(constraints, "two words") == {"lowercase": True, "max_words": True}
    assert verifiers.csr(constraints, "Two words here now") == 0.0
    assert verifiers.csr(constraints, "two words here now") == 0.5
    assert verifiers.csr([], "anything") is None


def test_sampled_constraints_are_compatible_and_valid():
    rng = random.Random(0)
    seen = set()
    for _ in range(300):
        constraints = verifiers.sample(rng, 3)
        ids = [c["id"] for c in constraints]
        assert 1 <= len(ids) <= 3 and verifiers.compatible(ids)
        for c in constraints:
            assert verifiers.validate(c) == c
        seen.update(ids)
    assert seen == set(verifiers.REGISTRY)  # every type can be drawn


def test_incompatible_pairs():
    assert not verifiers.compatible(["lowercase", "uppercase"])
    assert not verifiers.compatible(["json", "bullets"])
    assert not verifiers.compatible(["max_words", "min_words"])  # same group
    assert verifiers.compatible(["max_words", "lowercase", "no_commas"])


def test_weights_steer_sampling():
    rng = random.Random(1)
    weights = {i: (50.0 if i == "no_commas" else 1.0) for i in verifiers.REGISTRY}
    draws = [verifiers.sample(rng, 1, weights)[0]["id"] for _ in range(200)]
    assert draws.count("no_commas") > 100


@pytest.mark.parametrize("bad, message", [
    ({"id": "nope"}, "unknown constraint 'nope'"),
    ({"id": "max_words", "params": {}}, "takes parameters \\['n'\\]"),
    ({"id": "lowercase", "params": {"x": 1}}, "takes parameters none"),
    ("max_words", "must be an object"),
])
def test_validate_names_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        verifiers.validate(bad)


def test_attach_appends_one_sentence_per_constraint():
    text = verifiers.attach("Describe a cat.  ", [{"id": "no_commas", "params": {}},
                                                   {"id": "max_words", "params": {"n": 20}}])
    assert text == "Describe a cat.\n\nDo not use any commas. Answer in at most 20 words."
    assert verifiers.attach("Describe a cat.", []) == "Describe a cat."

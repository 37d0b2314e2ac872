"""Unasked forms: what an answer wears that its prompt never asked for, and the pairs gate that stops
the loop from teaching it."""

import pytest

from selfalign import config, verifiers
from selfalign.stages import StageContext
from selfalign.stages import pairs as pairs_stage
from selfalign.store import open_store
from selfalign.store.rows import NewPrompt, NewResponse
from selfalign.verifiers import forms

QUOTE = [{"id": "quoted", "params": {}}]
WORDS = [{"id": "keywords", "params": {"keywords": ["plan"]}}]


def test_a_form_counts_only_where_the_prompt_did_not_ask_for_it():
    answer = '"A good plan starts with a goal."'
    assert forms.unasked(QUOTE, answer) == set()  # asked: counts for nothing
    assert forms.unasked(WORDS, answer) == {"quoted"}  # the same answer, not asked: counts
    assert forms.unasked([], "PACK LIGHT AND LEAVE EARLY.") == {"uppercase"}
    assert forms.unasked([{"id": "uppercase", "params": {}}], "PACK LIGHT AND LEAVE EARLY.") == set()
    assert forms.unasked([], "OK.") == set()  # two letters in capitals are not a habit
    assert forms.unasked([], "<<Plan>>\nStart early.\nP.S. Bring water.") == {"title", "postscript"}
    assert forms.unasked([], "Sure, here it is.") == {"start_word"}
    assert forms.unasked_marked([], "Sure, here it is.") == set()  # ordinary writing is measured, not barred
    assert forms.unasked([{"id": "json", "params": {}}], '{"answer": "see [link]"}') == set()  # JSON brings these
    assert forms.unasked([], '{"answer": "yes"}') == {"json"}
    assert forms.unasked([], "") == set()


def test_rates_count_per_form_over_the_prompts_that_did_not_ask():
    items = [(QUOTE, '"Quoted because asked."'), (WORDS, '"Quoted unasked, a plan."'), (WORDS, "Plain plan here."),
             ([], "PLAIN ANSWER IN CAPITALS"), ([], "a plain answer in lower case")]
    r = forms.rates(items)
    assert r["n"] == 5
    assert r["per_form"]["quoted"] == (pytest.approx(1 / 4), 4)  # the prompt that asked is not counted
    assert r["per_form"]["uppercase"] == (pytest.approx(1 / 5), 5)
    assert r["per_form"]["lowercase"] == (pytest.approx(1 / 5), 5)
    assert r["marked"] == pytest.approx(3 / 5)  # quoted unasked, capitals, lower case


def _round_with(tmp_path, answers):
    store = open_store(tmp_path / "f.db", create=True)
    (pid,) = store.add_prompts([NewPrompt("make a plan", "seed", constraints=WORDS, round=1)])
    ids = {}
    for i, (label, text) in enumerate(answers):
        ids[label] = store.add_response(NewResponse(pid, 1, "base", i, text, 9, "stop", -1.0))
        store.add_verifications(ids[label], verifiers.check_all(WORDS, text))
    return store, ids


# each test turns on the gate it is about (all three are on by default)
GATES_OFF = ["pairs.unasked_form_gate=false", "pairs.mirror=false", "pairs.hollow_gate=false"]


def _pairs(store, *sets):
    cfg = config.build(sets=["judge.weight_likelihood=0", *GATES_OFF, *sets])
    pairs_stage.run(StageContext(cfg, store, None, round=1))
    return store.pairs(1), store.metrics(1)[1]


def test_the_gate_never_chooses_an_unasked_form_over_an_equal_plain_answer(tmp_path):
    """Both meet the constraint; the quoted one comes first and is longer, so without the gate it wins
    the tie-break toward the longer answer; with the gate the plain one is chosen and the quoted one rejected."""
    store, ids = _round_with(tmp_path, [("quoted", '"Write the plan down, then follow the plan step by step."'),
                                        ("plain", "Write the plan down."), ("miss", "Nothing to say.")])
    (pair,), metrics = _pairs(store)
    assert pair.chosen_id == ids["quoted"] and metrics["pairs/chosen_unasked_form_rate"] == 1.0
    (pair,), metrics = _pairs(store, "pairs.unasked_form_gate=true")
    assert (pair.chosen_id, pair.rejected_id) == (ids["plain"], ids["quoted"])
    assert pair.scores["rejected"]["unasked"] == ["quoted"]
    assert metrics["pairs/unasked_form_rate"] == pytest.approx(1 / 3)
    assert metrics["pairs/chosen_unasked_form_rate"] == 0.0


def test_the_gate_builds_no_pair_whose_chosen_answer_wears_a_habit(tmp_path):
    store, ids = _round_with(tmp_path, [("loud", "A PLAN MAKES THE DAY EASIER."), ("quiet", '"nothing to say here"')])
    pairs, _ = _pairs(store, "pairs.unasked_form_gate=true")
    assert pairs == []
    pairs, _ = _pairs(store)  # without the gate the loud answer is learned
    assert [p.chosen_id for p in pairs] == [ids["loud"]]


def test_a_prompt_without_constraints_teaches_plain_answers_only_through_the_gates(tmp_path):
    """Every answer to a plain prompt meets its (no) constraints, so they tie: without a gate no pair is built;
    with the form gate the clean answer is chosen over the quoted one, the longer clean answer winning the tie."""
    store = open_store(tmp_path / "p.db", create=True)
    (pid,) = store.add_prompts([NewPrompt("describe a river", "self", constraints=[], round=1)])
    ids = {}
    for i, (label, text) in enumerate([("short", "It flows."), ("quoted", '"A river runs to the sea, slowly."'),
                                       ("long", "A river carries water from the hills to the sea.")]):
        ids[label] = store.add_response(NewResponse(pid, 1, "base", i, text, 3 + 4 * i, "stop", -1.0))
    pairs, _ = _pairs(store)
    assert pairs == []
    (pair,), _ = _pairs(store, "pairs.unasked_form_gate=true")
    assert (pair.chosen_id, pair.rejected_id) == (ids["long"], ids["quoted"])
    assert pair.scores["chosen"]["verifiers"] == 1.0


def test_a_form_worn_unasked_far_more_often_than_at_round_0_is_a_habit_and_is_shown():
    from rich.console import Console

    from selfalign import metrics
    from selfalign.tui.widgets import health_lines

    rounds = {0: {"eval/unasked/quoted": 0.03, "eval/unasked/uppercase": 0.00, "eval/unasked/bullets": 0.40},
              1: {"eval/unasked/quoted": 0.43, "eval/unasked/uppercase": 0.04, "eval/unasked/bullets": 0.30}}
    assert metrics.habits(rounds, 1) == [("quoted", 0.43, 0.03)]  # +4 points and a drop are not habits
    assert metrics.habits(rounds, 0) == []
    console = Console(width=120, record=True)
    console.print(health_lines(rounds))
    text = console.export_text()
    assert "habit: quoted unasked 43% (round 0 3%)" in text and "round 0: healthy" in text


def test_a_mirror_pair_teaches_that_a_form_belongs_to_the_prompt_that_asked(tmp_path):
    """The prompt asks for quotes and a keyword; the chosen answer is the repaired (quoted) copy of a plain
    sample. The mirror prompt keeps the keyword, drops the quotes, and prefers that plain sample over the
    quoted copy; a rerun of the stage finds the mirror prompt and copies instead of adding more."""
    asked = QUOTE + WORDS
    store = open_store(tmp_path / "m.db", create=True)
    (pid,) = store.add_prompts([NewPrompt("make a plan", "self", constraints=asked, round=1)])
    plain = "Write the plan down and keep it short."
    for i, text in enumerate([plain, "Nothing to say at all here."]):
        rid = store.add_response(NewResponse(pid, 1, "base", i, text, 9, "stop", -1.0))
        store.add_verifications(rid, verifiers.check_all(asked, text))
    before, _ = _pairs(store, "pairs.unasked_form_gate=true")
    pairs, metrics = _pairs(store, "pairs.unasked_form_gate=true", "pairs.mirror=true")
    assert [p.rule for p in pairs] == ["best-vs-worst", "mirror"] and len(before) == 1
    original, mirror = pairs
    mirror_prompt = store.prompt(mirror.prompt_id)
    assert mirror_prompt.source == "mirror" and mirror_prompt.text == "make a plan"
    assert mirror_prompt.constraints == WORDS and mirror.scores["dropped"] == ["quoted"]
    texts = store.responses_by_id([original.chosen_id, mirror.chosen_id, mirror.rejected_id])
    assert texts[original.chosen_id].text == f'"{plain}"'  # the repaired copy, quoted as asked
    assert texts[mirror.chosen_id].text == plain and texts[mirror.rejected_id].text == f'"{plain}"'
    assert mirror.scores["rejected"]["unasked"] == ["quoted"] and mirror.margin > 0
    assert metrics["pairs/mirror_count"] == 1.0
    rows = len(store.responses(round=1))
    again, _ = _pairs(store, "pairs.unasked_form_gate=true", "pairs.mirror=true")
    assert [(p.prompt_id, p.chosen_id, p.rejected_id) for p in again] == \
        [(p.prompt_id, p.chosen_id, p.rejected_id) for p in pairs]
    assert len(store.responses(round=1)) == rows and len(store.prompts(source="mirror")) == 1
    # the next generate stage samples only the prompts written for it, never a mirror prompt
    from selfalign.stages import sampled_prompts
    assert [p.id for p in sampled_prompts(store, 1)] == [pid]


def test_no_mirror_when_no_answer_to_the_prompt_is_plain(tmp_path):
    """The other answer shouts: nothing plain to choose on the mirror prompt, so no mirror pair (and no prompt)."""
    store = open_store(tmp_path / "n.db", create=True)
    (pid,) = store.add_prompts([NewPrompt("make a plan", "self", constraints=QUOTE, round=1)])
    for i, text in enumerate(['"A plan, written down, is half done."', "NO PLAN FOR TODAY."]):
        rid = store.add_response(NewResponse(pid, 1, "base", i, text, 9 - i, "stop", -1.0))
        store.add_verifications(rid, verifiers.check_all(QUOTE, text))
    pairs, _ = _pairs(store, "pairs.mirror=true")
    assert [p.rule for p in pairs] == ["best-vs-worst"] and store.prompts(source="mirror") == []

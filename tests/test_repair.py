"""Verifier-guided repair: every edit is checked by the same verifiers, keeps the answer's words, and
gives up (None) where only new content could help; the pairs stage trains on the stored copy."""

import json

import pytest

from selfalign import config, verifiers
from selfalign.stages import StageContext
from selfalign.stages import pairs as pairs_stage
from selfalign.store import open_store
from selfalign.store.rows import NewPrompt, NewResponse
from selfalign.verifiers.repair import REPAIRS, repair

ANSWER = ("Learning to cook is a very good skill. It saves money, and it is healthy. You can start with simple "
          "recipes like pasta. Practice every day and you will improve quickly.\n\nMany people find it relaxing.")
LIST_ANSWER = "Here are some tips:\n1. Sleep well.\n2. Eat vegetables.\n3. Walk every day.\n4. Drink water."


def c(id, **params):
    return {"id": id, "params": params}


@pytest.mark.parametrize("constraints", [
    [c("uppercase")], [c("lowercase")], [c("quoted")], [c("json")], [c("bullets", n=3)], [c("bullets", n=5)],
    [c("paragraphs", n=3)], [c("paragraphs", n=1)], [c("sections", n=2)], [c("highlights", n=2)], [c("title")],
    [c("start_word", word="Sure")], [c("end_phrase", phrase="That is all.")], [c("postscript", marker="P.S.")],
    [c("max_words", n=30)], [c("max_sentences", n=2)], [c("avoid_word", word="very")], [c("no_commas")],
    [c("end_phrase", phrase="Hope this helps."), c("max_words", n=30)],
    [c("postscript", marker="P.P.S"), c("paragraphs", n=3)], [c("title"), c("bullets", n=2)],
    [c("start_word", word="Yes"), c("max_sentences", n=2), c("avoid_word", word="good")],
    [c("highlights", n=1), c("sections", n=2), c("no_commas")],
])
def test_a_repaired_answer_meets_every_constraint_and_keeps_the_words(constraints):
    assert not all(verifiers.check(x, ANSWER) for x in constraints)  # there is something to repair
    out = repair(constraints, ANSWER)
    assert out is not None
    assert all(verifiers.check(x, out) for x in constraints), out
    assert not verifiers.degenerate(out)
    # the content is the answer's own: its opening words survive every edit (case and quotes aside)
    flat = out.lower().replace("*", "")
    assert "cook" in flat or "learning" in flat


def test_each_form_is_edited_as_a_reader_would_expect():
    assert repair([c("uppercase")], "Hello there, friend.") == "HELLO THERE, FRIEND."
    assert repair([c("quoted")], 'He said "hi" to me.') == "\"He said 'hi' to me.\""
    assert json.loads(repair([c("json")], ANSWER)) == {"answer": ANSWER}
    assert json.loads(repair([c("json")], "- one\n- two")) == {"items": ["one", "two"]}
    assert repair([c("end_phrase", phrase="That is all.")], "It rains in spring") == "It rains in spring. That is all."
    assert repair([c("start_word", word="Sure")], "Cats sleep a lot.") == "Sure, cats sleep a lot."
    assert repair([c("avoid_word", word="very")], "Very good. It is very fine.") == "Good. It is fine."
    assert repair([c("avoid_word", word="thing")], "One thing matters.") == "One item matters."
    # trimming keeps whole sentences only
    assert repair([c("max_sentences", n=1)], ANSWER) == "Learning to cook is a very good skill."
    assert repair([c("max_words", n=25)], ANSWER) == ("Learning to cook is a very good skill. It saves money, and "
                                                      "it is healthy. You can start with simple recipes like pasta.")


def test_a_numbered_list_becomes_exactly_the_asked_dashes():
    out = repair([c("bullets", n=3)], LIST_ANSWER)
    assert out == "Here are some tips:\n- Sleep well.\n- Eat vegetables.\n- Walk every day."


def test_no_repair_where_only_new_content_would_help():
    assert repair([c("keywords", keywords=["budget"])], ANSWER) is None
    assert repair([c("min_words", n=150)], ANSWER) is None
    assert repair([c("uppercase"), c("keywords", keywords=["budget"])], ANSWER) is None  # one is enough to refuse
    # the keyword is there, so the form can still be fixed
    assert repair([c("uppercase"), c("frequency", word="it", n=2)], ANSWER) == ANSWER.upper()
    assert repair([c("bullets", n=9)], ANSWER) is None  # too few sentences to make nine items
    assert repair([c("max_words", n=5)], ANSWER) is None  # no whole sentence fits
    assert repair([c("uppercase")], "\n".join(["the same line again here"] * 4)) is None  # a loop stays a loop
    assert repair([c("uppercase")], "   ") is None


def test_trimming_that_leaves_a_fragment_is_refused():
    text = ("P.S. The process that occurs in leaves during the fall is slow and it involves many small steps each "
            "day. It is a long story.")
    assert repair([c("postscript", marker="P.S."), c("max_words", n=20)], text) is None


def test_a_passing_answer_comes_back_unchanged():
    assert repair([c("max_words", n=200)], ANSWER) == ANSWER


def test_every_type_with_a_repair_is_a_real_constraint():
    assert set(REPAIRS) <= set(verifiers.REGISTRY)


def _store_with_round(tmp_path):
    store = open_store(tmp_path / "r.db", create=True)
    upper = [c("uppercase")]
    words = [c("keywords", keywords=["budget"])]
    shout, content, met = store.add_prompts([
        NewPrompt("shout a tip", "seed", constraints=upper, round=1),
        NewPrompt("money tip", "seed", constraints=words, round=1),
        NewPrompt("loud hello", "seed", constraints=upper, round=1)])
    rows = {shout: [("Sleep well every night.", "stop"), ("Drink water and rest.", "stop"),
                    ("\n".join(["drink drink drink water"] * 4), "stop")],
            content: [("Save a little each week.", "stop"), ("Spend less on food.", "stop")],
            met: [("HELLO THERE, MY FRIEND!", "stop"), ("hello there, my friend", "stop")]}
    constraints = {shout: upper, content: words, met: upper}
    ids = {}
    for pid, group in rows.items():
        for i, (text, finish) in enumerate(group):
            rid = store.add_response(NewResponse(pid, 1, "base", i, text, 8, finish, -1.0 - i))
            store.add_verifications(rid, verifiers.check_all(constraints[pid], text))
            ids[text] = rid
    return store, (shout, content, met), ids


def test_the_pairs_stage_trains_on_a_stored_repaired_copy(tmp_path):
    store, (shout, content, met), ids = _store_with_round(tmp_path)
    cfg = config.build(sets=["pairs.repair=true", "judge.weight_likelihood=0"])
    pairs_stage.run(StageContext(cfg, store, None, round=1))
    pairs = {p.prompt_id: p for p in store.pairs(1)}
    copies = [r for r in store.responses(round=1) if r.kind == "repair" and "repaired_from" in r.params]
    assert len(copies) == 1  # beside it, mirror copies (pairs.mirror, on by default) name what they mirror
    (copy,) = copies
    assert copy.prompt_id == shout and copy.text == "SLEEP WELL EVERY NIGHT." and copy.finish_reason == "stop"
    assert copy.params["repaired_from"] == ids["Sleep well every night."]
    assert {v.constraint_id: v.passed for v in store.verifications(copy.id)} == {"uppercase": True}
    assert pairs[shout].chosen_id == copy.id
    assert pairs[shout].rejected_id == ids["\n".join(["drink drink drink water"] * 4)]  # the loop, gated
    assert content not in pairs  # a missing keyword has no repair, and both answers miss it: a tie
    assert pairs[met].chosen_id == ids["HELLO THERE, MY FRIEND!"]  # selection already found it: no copy
    metrics = store.metrics(1)[1]
    assert metrics["pairs/repair_tried"] == 2.0 and metrics["pairs/repair_rate"] == pytest.approx(0.5)

    pairs_stage.run(StageContext(cfg, store, None, round=1))  # a rerun reuses the stored copy
    assert [r.id for r in store.responses(round=1) if r.kind == "repair" and "repaired_from" in r.params] == [copy.id]
    assert {p.prompt_id: p.chosen_id for p in store.pairs(1)}[shout] == copy.id


def test_without_repair_no_copy_is_made(tmp_path):
    store, (shout, _, _), _ = _store_with_round(tmp_path)
    cfg = config.build(sets=["pairs.repair=false", "judge.weight_likelihood=0"])
    pairs_stage.run(StageContext(cfg, store, None, round=1))
    assert not [r for r in store.responses(round=1) if r.kind == "repair"]
    assert shout in {p.prompt_id for p in store.pairs(1)}  # the clean answers still beat the loop

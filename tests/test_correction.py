"""Corrector training triples from a run's stored rows (Aligner), on a real SQLite file."""

from selfalign.correction import triples
from selfalign.store import open_store
from selfalign.store.rows import NewPair, NewPrompt, NewResponse

LOWER = [{"id": "lowercase", "params": {}}]


def _run(tmp_path):
    store = open_store(tmp_path / "c.db", create=True)
    (p1,) = store.add_prompts([NewPrompt("Greet me.", "self", constraints=LOWER, round=1)])
    (p2,) = store.add_prompts([NewPrompt("Greet my friend.", "self", constraints=LOWER, round=2)])
    ids = {}

    def add(label, pid, k, text, index, kind="sample", params=None, finish="stop"):
        ids[label] = store.add_response(NewResponse(pid, k, "base", index, text, 4, finish, params=params or {},
                                                    kind=kind))

    add("shout", p1, 1, "Hello World, nice to see you.", 0)
    add("fixed", p1, 1, "hello world, nice to see you.", 0, "repair", {"repaired_from": 0})
    add("good", p1, 1, "hello there, nice to meet you.", 1)
    add("near", p1, 1, "Hello there, nice to meet you.", 2)
    add("far", p1, 1, "Greetings are a social custom found in many cultures.", 3)
    add("cut", p1, 1, "hello and then it went on", 4, finish="length")  # meets the constraint, cut off
    add("own", p1, 1, "hello, i am the corrector.", 0, "correction", {"corrected_from": 0})
    add("loud2", p2, 2, "Hi Friend, welcome aboard.", 0)
    add("fixed2", p2, 2, "hi friend, welcome aboard.", 0, "repair", {"repaired_from": 0})
    with store.transaction():  # repaired_from must name the stored source
        store.db.execute("UPDATE responses SET params = json_object('repaired_from', ?) WHERE id = ?",
                         [ids["shout"], ids["fixed"]])
        store.db.execute("UPDATE responses SET params = json_object('repaired_from', ?) WHERE id = ?",
                         [ids["loud2"], ids["fixed2"]])
    store.add_pair(NewPair(1, p1, ids["good"], ids["near"], 1.0, "best-vs-worst"))  # close: a correction
    store.add_pair(NewPair(1, p1, ids["good"], ids["far"], 1.0, "best-vs-worst"))  # far: another answer
    store.add_pair(NewPair(1, p1, ids["own"], ids["shout"], 1.0, "best-vs-worst"))  # the corrector's own row
    return store, ids


def test_triples_from_repairs_close_pairs_and_identity_match_a_hand_count(tmp_path):
    store, ids = _run(tmp_path)
    built = triples.build(store, 2, identity_share=0.25)
    by_source = {}
    for t in built:
        by_source.setdefault(t.source, []).append((t.answer_id, t.correction_id))
    # two repaired copies (one per round: triples accumulate), one close pair, and identity triples making up
    # a quarter: 3 fixes -> 1 identity, drawn from the answers that meet everything ("good" is the only one;
    # the cut-off one meets the constraint but never finished)
    assert sorted(by_source["repair"]) == sorted([(ids["shout"], ids["fixed"]), (ids["loud2"], ids["fixed2"])])
    assert by_source["pair"] == [(ids["near"], ids["good"])]
    assert by_source["identity"] == [(ids["good"], ids["good"])]
    assert len(built) == 4
    assert all(t.question.startswith(("Greet me.", "Greet my friend.")) and "lower" in t.question for t in built)
    only_round_1 = triples.build(store, 1, identity_share=0.25)
    assert {t.source for t in only_round_1} == {"repair", "pair", "identity"} and len(only_round_1) == 3


def test_the_corrector_never_learns_from_its_own_outputs_and_the_identity_share_holds(tmp_path):
    store, ids = _run(tmp_path)
    for share in (0.0, 0.2, 0.25):
        built = triples.build(store, 2, identity_share=share)
        assert ids["own"] not in {t.answer_id for t in built} | {t.correction_id for t in built}
        identity = sum(t.source == "identity" for t in built)
        assert identity == round((len(built) - identity) * share / (1 - share))
    assert triples.build(store, 2, seed=1) == triples.build(store, 2, seed=1)  # a seed gives one set

"""Pair rules on fixed scores."""

from selfalign.stages.pairs import Scored, best_vs_worst, ranked_pairs, sft_examples


def scores(*rows):
    """rows of (response id, combined, tokens)."""
    return {rid: Scored(1, t, {"verifiers": c}, i, combined=c) for i, (rid, c, t) in enumerate(rows)}


def test_best_vs_worst_with_margin_and_several_pairs():
    s = scores((1, 0.9, 10), (2, 0.5, 10), (3, 0.4, 10), (4, 0.1, 10))
    (pair,) = best_vs_worst(1, 1, [1, 2, 3, 4], s, 0.05, False, 1)
    assert (pair.chosen_id, pair.rejected_id, round(pair.margin, 6), pair.rule) == (1, 4, 0.8, "best-vs-worst")
    assert pair.scores["chosen"]["combined"] == 0.9 and pair.scores["rejected"]["verifiers"] == 0.1
    two = best_vs_worst(1, 1, [1, 2, 3, 4], s, 0.05, False, 2)
    assert [(p.chosen_id, p.rejected_id) for p in two] == [(1, 4), (2, 3)]
    assert best_vs_worst(1, 1, [1, 2, 3, 4], s, 0.5, False, 2) == [best_vs_worst(1, 1, [1, 2, 3, 4], s, 0.5,
                                                                                 False, 1)[0]]


def test_finished_rejects_the_worst_clean_answer_not_the_cut_off_one():
    s = scores((1, 0.9, 40), (2, 0.5, 60), (3, 0.4, 50), (4, 0.3, 192))
    s[4].gated = True
    s[4].combined -= 2.0  # what the quality gate does to a cut-off answer
    (pair,) = best_vs_worst(1, 1, [1, 2, 3, 4], s, 0.05, False, 1, "finished")
    assert (pair.chosen_id, pair.rejected_id, round(pair.margin, 6)) == (1, 3, 0.5)
    assert best_vs_worst(1, 1, [1, 2, 3, 4], s, 0.05, False, 1)[0].rejected_id == 4  # the default keeps the worst
    # a second pair: no clean answer is left below the second best, so it falls back to the cut-off one
    two = best_vs_worst(1, 1, [1, 2, 3, 4], s, 0.05, False, 2, "finished")
    assert [(p.chosen_id, p.rejected_id) for p in two] == [(1, 3), (2, 4)]
    # no clean answer far enough below the chosen: fall back to the worst (a loop is still worth rejecting)
    s[3].combined = s[2].combined = 0.88
    (pair,) = best_vs_worst(1, 1, [1, 2, 3, 4], s, 0.05, False, 1, "finished")
    assert pair.rejected_id == 4


def test_ties_are_dropped_unless_shorter_breaks_them():
    s = scores((1, 0.5, 40), (2, 0.5, 12), (3, 0.5, 25))
    assert best_vs_worst(1, 1, [1, 2, 3], s, 0.05, False, 1) == []
    (pair,) = best_vs_worst(1, 1, [1, 2, 3], s, 0.05, True, 1)
    assert (pair.chosen_id, pair.rejected_id, pair.rule) == (2, 1, "tie-shorter")


def test_prefer_longer_chooses_the_longest_of_the_top_ties():
    s = scores((1, 0.9, 30), (2, 0.9, 80), (3, 0.9, 55), (4, 0.2, 40), (5, 0.2, 20))
    (pair,) = best_vs_worst(1, 1, [1, 2, 3, 4, 5], s, 0.05, False, 1)
    assert (pair.chosen_id, pair.rejected_id) == (1, 5)  # without it: sample order
    (pair,) = best_vs_worst(1, 1, [1, 2, 3, 4, 5], s, 0.05, False, 1, prefer_longer=True)
    assert (pair.chosen_id, pair.rejected_id, pair.rule) == (2, 5, "best-vs-worst")
    # the score still decides first: a longer answer with a lower score is never chosen
    s[4].tokens = 300
    assert best_vs_worst(1, 1, [1, 2, 3, 4, 5], s, 0.05, False, 1, prefer_longer=True)[0].chosen_id == 2
    # a true tie still builds no pair
    tie = scores((1, 0.5, 40), (2, 0.5, 12))
    assert best_vs_worst(1, 1, [1, 2], tie, 0.05, False, 1, prefer_longer=True) == []


def test_missing_scores_never_pair():
    s = scores((1, None, 5), (2, None, 9))
    assert best_vs_worst(1, 1, [1, 2], s, 0.0, True, 1) == []


def test_ranked_pairs_for_rrhf():
    s = scores((1, 0.9, 5), (2, 0.6, 5), (3, 0.58, 5))
    assert [(p.chosen_id, p.rejected_id) for p in ranked_pairs(1, 1, [3, 2, 1], s, 0.05, False)] == [(1, 2), (1, 3)]


def test_sft_needs_both_scales_at_threshold():
    s = scores((1, 0.9, 5), (2, 0.9, 5), (3, 0.9, 5))
    s[1].rubric_raw = {"isheep_quality": 9.0, "isheep_following": 10.0}
    s[2].rubric_raw = {"isheep_quality": 10.0, "isheep_following": 8.0}
    s[3].rubric_raw = {"isheep_quality": 10.0}
    (example,) = sft_examples(1, 1, [1, 2, 3], s, 9.0)
    assert (example.chosen_id, example.rejected_id, example.rule) == (1, None, "sft")


def test_prefer_longer_rejects_the_shortest_of_the_bottom_ties():
    s = scores((1, 0.9, 30), (2, 0.2, 20), (3, 0.2, 60))
    assert best_vs_worst(1, 1, [1, 2, 3], s, 0.05, False, 1)[0].rejected_id == 3  # sample order: the last
    assert best_vs_worst(1, 1, [1, 2, 3], s, 0.05, False, 1, prefer_longer=True)[0].rejected_id == 2


def test_length_margin_on_gives_each_rule_its_own_flags():
    """train.length_margin_on on crafted rejected answers (a loop, one cut off by the budget, a clean one):
    all applies the length term to each, finished only to the clean one, unless-loop to all but the loop."""
    from types import SimpleNamespace

    from selfalign import config
    from selfalign.stages.train import length_term

    loop = SimpleNamespace(text="\n".join(["we plan the day and we plan it well"] * 5), finish_reason="stop")
    cut = SimpleNamespace(text="A long answer that was still going when the budget ran", finish_reason="length")
    clean = SimpleNamespace(text="A short answer that ended by itself.", finish_reason="stop")
    flags = {}
    for rule in ("all", "finished", "unless-loop"):
        cfg = config.build(sets=[f"train.length_margin_on={rule}"])
        flags[rule] = [length_term(cfg, r) for r in (loop, cut, clean)]
    assert flags == {"all": [True, True, True], "finished": [False, False, True],
                     "unless-loop": [False, True, True]}

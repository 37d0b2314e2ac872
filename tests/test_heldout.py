"""Held-out figures: degenerate answers, per-round figures with intervals, paired gains, the report."""

import pytest

from selfalign import heldout, verifiers
from selfalign.heldout import Answer

LOWER = [{"id": "lowercase", "params": {}}]
TWO = [{"id": "lowercase", "params": {}}, {"id": "no_commas", "params": {}}]


def test_degenerate_answers():
    assert verifiers.degenerate("")
    assert verifiers.degenerate("  ...  \n")
    assert verifiers.degenerate("- a long tale\n- a long tale\n- a long tale\n- the end")
    loop = " ".join(["the cat sat on the mat"] * 12)
    assert verifiers.degenerate(loop)
    assert not verifiers.degenerate("A short, honest answer.")
    fences = "```python\nx = 1\n```\nthen\n```python\ny = 2\n```\nand\n```\nz\n```"
    assert not verifiers.degenerate(fences)  # short lines (fences, separators) may repeat
    varied = " ".join(f"word{i}" for i in range(80))
    assert not verifiers.degenerate(varied)


def test_round_figures_by_hand():
    items = [Answer(1, TWO, "all lowercase no commas", 5, "stop"),  # 2 of 2
             Answer(2, TWO, "Capital, and a comma", 5, "stop"),  # 0 of 2
             Answer(3, LOWER, "fine here", 3, "length"),  # 1 of 1
             Answer(4, LOWER, "", 0, "stop")]  # 0 of 1: empty satisfies nothing
    f = heldout.round_figures(items)
    assert f["n"] == 4
    assert f["csr_prompt"].value == pytest.approx(2 / 4)
    assert f["csr_instruction"].value == pytest.approx(3 / 6)
    assert f["csr_prompt"].low <= 0.5 <= f["csr_prompt"].high
    assert f["per_type"] == {"lowercase": (2 / 4, 4), "no_commas": (1 / 2, 2)}
    assert f["length_mean"] == pytest.approx(13 / 4)
    assert f["clean_length_mean"] == pytest.approx(5.0)  # the cut-off and the empty answer left out
    assert f["empty_share"] == 0.25 and f["degenerate_share"] == 0.25 and f["truncated_share"] == 0.25


def test_gain_figures_pair_by_prompt_and_skip_unshared_prompts():
    before = {1: Answer(1, LOWER, "No", 1, "stop"), 2: Answer(2, LOWER, "yes", 1, "stop"),
              3: Answer(3, LOWER, "Only before", 2, "stop")}
    after = {1: Answer(1, LOWER, "no", 1, "stop"), 2: Answer(2, LOWER, "yes", 1, "stop"),
             4: Answer(4, LOWER, "only after", 2, "stop")}
    g = heldout.gain_figures(before, after)
    assert g["n"] == 2  # prompts 1 and 2
    assert g["csr_prompt"].value == pytest.approx(0.5)  # 1/2 -> 2/2
    assert g["csr_instruction"].value == pytest.approx(0.5)
    assert heldout.gain_figures(before, {})["n"] == 0


def test_report_shows_intervals_gain_and_every_type():
    items = {i: Answer(i, TWO, "plain words" if i % 2 else "Plain, words", 2, "stop") for i in range(1, 9)}
    base = {i: Answer(i, TWO, "Plain, words", 2, "stop") for i in range(1, 9)}
    figures = heldout.round_figures(list(items.values()))
    text = heldout.render_md("demo", 2, figures, heldout.gain_figures(base, items), 0)
    assert "round 2 (8 held-out prompts" in text
    assert "| prompt-level satisfaction | 0.500 [" in text
    assert "| prompt-level gain over round 0 (8 paired prompts) | +0.500 [" in text
    assert "| lowercase |" in text and "| no_commas |" in text
    data = heldout.as_json({"gain": heldout.gain_figures(base, items)})
    assert data["gain"]["csr_prompt"]["value"] == pytest.approx(0.5) and data["gain"]["n"] == 8

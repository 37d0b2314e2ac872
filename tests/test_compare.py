"""`selfalign compare` on real tiny-model runs with different configs, and `selfalign note`."""

import asyncio
import json

import pytest
from click.testing import CliRunner
from test_loop import LOOP_SETS
from textual.widgets import DataTable, Static

from selfalign import compare, config, loop, runs
from selfalign.cli import cli
from selfalign.store import open_store
from selfalign.tui.compare_app import CompareApp
from selfalign.tui.widgets import RoundsPlot


@pytest.fixture(scope="module")
def two_runs(tiny_model_dir, tmp_path_factory):
    """self-reward for two rounds against isheep for one, on the same held-out prompts."""
    root = tmp_path_factory.mktemp("compare-runs")
    made = []
    for name, recipe, rounds in (("sr", "self-reward", 2), ("ish", "isheep", 1)):
        lr = "0.0002" if recipe == "isheep" else "0.00005"
        cfg = config.build(sets=[f"model.name={tiny_model_dir}", *LOOP_SETS, f"run.rounds={rounds}",
                                 f"train.learning_rate={lr}"], recipe=recipe)
        folder = runs.create(name, config.dumps(cfg), root=root, note=f"why {name} exists")
        assert loop.run(folder, quiet=True) == 0
        made.append(folder)
    return root, made


def test_compare_json_on_two_real_runs(two_runs):
    root, (sr, ish) = two_runs
    result = CliRunner().invoke(cli, ["--runs-dir", str(root), "compare", "sr", "ish", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [r["name"] for r in data["runs"]] == ["sr", "ish"]
    assert [r["note"] for r in data["runs"]] == ["why sr exists", "why ish exists"]
    assert [r["rounds_done"] for r in data["runs"]] == [[0, 1, 2], [0, 1]]
    assert [d["kind"] for d in data["runs"][1]["decisions"] if d["round"] == 1][0] == "promote"
    differing = {s["key"]: s["values"] for s in data["settings"]}
    assert differing["run.recipe"] == ["self-reward", "isheep"] and differing["run.rounds"] == [2, 1]
    assert differing["train.learning_rate"] == [0.00005, 0.0002] and "model.name" not in differing
    assert all(s["differs"] for s in data["settings"])
    assert any("different recipes" in w for w in data["warnings"])
    assert not any("held-out" in w for w in data["warnings"])  # same held-out file

    csr = next(m for m in data["metrics"] if m["name"] == "eval/csr_instruction")
    assert csr["rounds"] == [0, 1, 2]
    assert csr["series"]["ish"]["2"] is None and csr["series"]["sr"]["2"] is not None  # missing stays missing
    with open_store(sr.db_path) as store:
        assert csr["series"]["sr"]["1"] == store.metrics(1)[1]["eval/csr_instruction"]
    assert any(m["name"] == "time/train" for m in data["metrics"])

    # answers: each run's latest evaluated round, joined by prompt, most disagreement first
    assert [r["answers_round"] for r in data["runs"]] == [2, 1]
    answers = data["answers"]
    assert answers and data["answers_total"] == 4  # eval.prompts=4 in LOOP_SETS
    assert [a["run"] for a in answers[0]["answers"]] == ["sr", "ish"]
    scores = [a["disagreement"] for a in answers]
    assert scores == sorted(scores, reverse=True)
    with open_store(ish.db_path) as store:
        texts = {p.text: r.text for p, r in store.heldout_answers(1)}
    assert all(a["answers"][1]["text"] == texts[a["prompt"]] for a in answers)


def test_compare_markdown_and_round_choice(two_runs):
    root, _ = two_runs
    result = CliRunner().invoke(cli, ["--runs-dir", str(root), "compare", "sr", "ish", "--format", "md", "--round", "1",
                                      "--answers", "2"])
    assert result.exit_code == 0, result.output
    md = result.output
    assert md.startswith("# Comparison: sr vs ish")
    assert "why sr exists" in md and "| train.learning_rate | 5e-05 | 0.0002 |" in md
    assert "**held-out CSR (instruction)** (`eval/csr_instruction`)" in md and "| 2 | " in md
    assert "(2 of 4 shared prompts; sr round 1, ish round 1)" in md
    assert "## Controller decisions" in md and "- round 1 promote: held-out score" in md


def test_compare_warns_when_heldout_sets_differ(two_runs, tiny_model_dir, runs_root):
    _, (sr, _) = two_runs
    cfg = config.build(sets=[f"model.name={tiny_model_dir}", *LOOP_SETS, "run.rounds=1", "eval.prompts=3"])
    other = runs.create("fewer", config.dumps(cfg))
    with open_store(other.db_path):
        pass
    assert loop.run(other, rounds=1, quiet=True) == 0
    data = compare.compare([sr, other])
    assert any("held-out prompt sets differ" in w for w in data["warnings"])
    assert data["answers_total"] == 3


def test_compare_needs_two_runs_and_existing_ones(two_runs):
    root, _ = two_runs
    one = CliRunner().invoke(cli, ["--runs-dir", str(root), "compare", "sr", "--format", "md"])
    assert one.exit_code == 2 and "at least two runs" in one.output
    missing = CliRunner().invoke(cli, ["--runs-dir", str(root), "compare", "sr", "nope", "--format", "md"])
    assert missing.exit_code == 1 and "no run named 'nope'" in missing.output


def test_note_shows_and_replaces(two_runs):
    root, _ = two_runs
    base = ["--runs-dir", str(root), "note", "ish"]
    assert CliRunner().invoke(cli, base).output.strip() == "why ish exists"
    assert CliRunner().invoke(cli, [*base, "isheep with a 4x learning rate"]).exit_code == 0
    assert CliRunner().invoke(cli, base).output.strip() == "isheep with a 4x learning rate"
    CliRunner().invoke(cli, [*base, "why ish exists"])


def test_comparison_screen(two_runs):
    _, folders = two_runs
    result = compare.compare(folders, all_settings=True, answers_limit=0)

    async def scenario():
        app = CompareApp(result)
        async with app.run_test(size=(120, 40)) as pilot:
            notes = str(app.query_one("#notes", Static).content)
            assert "why sr exists" in notes and "different recipes" in notes
            settings = app.query_one("#settings-table", DataTable)
            differing = sum(s["differs"] for s in result["settings"])
            assert settings.row_count == differing
            await pilot.press("d")
            assert settings.row_count == len(result["settings"]) > differing
            await pilot.press("2")
            metrics = app.query_one("#metrics-table", DataTable)
            assert metrics.row_count == len(result["metrics"])
            plot = app.query_one("#metrics-plot", RoundsPlot)
            first = plot.title
            await pilot.press("down")
            assert plot.title != first and set(plot.series) == {"sr", "ish"}
            await pilot.press("3")
            answers = app.query_one("#answers-table", DataTable)
            assert answers.row_count == result["answers_total"]
            shown = str(app.query_one("#answer-1", Static).content)
            assert shown.startswith("ish") and result["answers"][0]["answers"][1]["text"][:20] in shown

    asyncio.run(scenario())


def test_paired_gain_against_the_first_run(two_runs):
    _, (sr, ish) = two_runs
    data = compare.compare([sr, ish], answers_limit=0)
    (paired,) = data["paired"]
    assert (paired["run"], paired["round"], paired["against"], paired["against_round"]) == ("ish", 1, "sr", 2)
    # by hand: the share of shared constrained prompts whose every constraint is met, ish minus sr
    constrained = [j for j in data["answers"] if j["constraints"]]
    assert constrained and paired["n"] == len(constrained)
    met = [[all(a["answers"][i]["checks"].values()) for a in constrained] for i in (0, 1)]
    by_hand = (sum(met[1]) - sum(met[0])) / len(constrained)
    gain = paired["csr_prompt"]
    assert gain["value"] == pytest.approx(by_hand) and gain["low"] <= by_hand <= gain["high"]
    checks = [[a["answers"][i]["checks"] for a in constrained] for i in (0, 1)]
    instruction = [sum(sum(c.values()) for c in side) / sum(len(c) for c in side) for side in checks]
    assert paired["csr_instruction"]["value"] == pytest.approx(instruction[1] - instruction[0])
    md = compare.to_markdown(data)
    assert "## Held-out satisfaction, paired against sr round 2" in md
    assert f"| ish | 1 | {len(constrained)} | {compare.points(gain)} |" in md
    # a run against itself: exactly no gain, with no width
    same = compare.compare([sr, sr])["paired"][0]
    assert same["csr_prompt"] == {"value": 0.0, "low": 0.0, "high": 0.0, "n": paired["n"]}

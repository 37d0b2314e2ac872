"""The round controller: decisions from metric histories (unit), and a forced regression on the tiny model
(functional): the round is rejected, the next starts from the best adapter with softer settings, the
TUI's Rounds view shows it, a user can promote it, and export picks the best kept round."""

import asyncio

import pytest
from test_loop import LOOP_SETS
from textual.widgets import Static

from selfalign import config, controller, export, loop, runs
from selfalign.store import open_store
from selfalign.store.rows import Decision
from selfalign.tui.app import RunApp


def cfg_with(*sets):
    return config.build(sets=list(sets))


def m(csr, win=None, **extra):
    out = {"eval/csr_instruction": csr}
    if win is not None:
        out["eval/win_rate"] = win
    return out | extra


def kinds(decisions):
    return {d.kind: d for d in decisions}


def test_score_combines_csr_and_win_rate():
    cfg = cfg_with("controller.score_weight_csr=1.0", "controller.score_weight_win_rate=0.5")
    assert controller.heldout_score(m(0.4), cfg) == pytest.approx(0.65)  # round 0: win rate 0.5 by definition
    assert controller.heldout_score(m(0.4, 0.8), cfg) == pytest.approx(0.8)
    assert controller.heldout_score({}, cfg) is None


def test_a_drop_beyond_the_tolerance_is_rejected_with_softer_settings():
    cfg = cfg_with("controller.tolerance=0.02", "train.learning_rate=0.0001", "train.beta=0.1")
    history = {0: m(0.40), 1: m(0.50, 0.5), 2: m(0.45, 0.5)}
    d = kinds(controller.decide(cfg, cfg, 2, history, [0, 1], {}, 0.1))
    assert "reject" in d and "promote" not in d
    assert d["reject"].data["best_round"] == 1
    assert d["reject"].data["overrides"] == {"train.learning_rate": pytest.approx(5e-5), "train.beta": 0.2}
    assert "0.050 below the best kept round 1" in d["reject"].reason


def test_a_small_drop_is_kept_and_a_rise_is_kept():
    cfg = cfg_with("controller.tolerance=0.02")
    for k2 in (0.49, 0.6):
        d = kinds(controller.decide(cfg, cfg, 2, {0: m(0.4), 1: m(0.5, 0.5), 2: m(k2, 0.5)}, [0, 1], {}, 0.1))
        assert "promote" in d and "reject" not in d


def test_gate_off_keeps_everything():
    cfg = cfg_with("controller.gate=false")
    d = kinds(controller.decide(cfg, cfg, 1, {0: m(0.9), 1: m(0.1, 0.5)}, [0], {}, 0.1))
    assert "promote" in d and "gate off" in d["promote"].reason


def test_curriculum_weights_follow_failures_within_bounds():
    cfg = cfg_with()
    assert (controller.CURRICULUM_FLOOR, controller.CURRICULUM_CEILING) == (0.5, 3.0)
    counts = {"lowercase": (9, 10), "json": (0, 10), "no_commas": (5, 10), "word_max": (10, 10)}
    d = kinds(controller.decide(cfg, cfg, 1, {0: m(0.4), 1: m(0.4, 0.5)}, [0], counts, 0.1))["curriculum"]
    w = d.data["weights"]
    assert w["json"] > w["no_commas"] > w["lowercase"] and w["word_max"] == 0.5  # never below the floor
    assert max(w.values()) <= 3.0 and d.reason.startswith("more prompts with the constraints met least: json 0% met")
    off = controller.decide(cfg_with("controller.curriculum=false"), cfg, 1, {0: m(0.4), 1: m(0.4)}, [0], counts, 0)
    assert "curriculum" not in kinds(off)


def test_an_unhealthy_rubric_judge_is_switched_off():
    cfg = cfg_with("judge.rubric=additive5")
    sick = m(0.4, 0.5, **{"judge/collapse": 1.0, "judge/score_std": 0.0, "judge/position_bias": 1.0,
                          "judge/likelihood_verifier_agreement": 0.41})
    d = kinds(controller.decide(cfg, cfg, 1, {0: m(0.4), 1: sick}, [0], {}, 0.1))["judge"]
    assert d.data["overrides"] == {"judge.rubric": "none", "judge.weight_rubric": 0.0,
                                   "judge.weight_likelihood": 0.25}
    assert "score collapse" in d.reason and "position bias 1.00" in d.reason
    healthy = m(0.4, 0.5, **{"judge/collapse": 0.0, "judge/position_bias": 0.1})
    assert "judge" not in kinds(controller.decide(cfg, cfg, 1, {0: m(0.4), 1: healthy}, [0], {}, 0.1))
    # I-SHEEP filters its SFT set with the rubric: it is kept, and the note says why
    isheep = config.build(recipe="isheep")
    d = kinds(controller.decide(isheep, isheep, 1, {0: m(0.4), 1: sick}, [0], {}, 0.1))["judge"]
    assert "overrides" not in d.data and "SFT filter" in d.reason


def test_stop_on_patience_and_on_budget():
    cfg = cfg_with("controller.patience=2")
    history = {0: m(0.4), 1: m(0.5, 0.5), 2: m(0.49, 0.5), 3: m(0.495, 0.5)}
    assert "stop" not in kinds(controller.decide(cfg, cfg, 2, history, [0, 1], {}, 0.1))
    stop = kinds(controller.decide(cfg, cfg, 3, history, [0, 1, 2], {}, 0.1))["stop"]
    assert "has not improved for 2 rounds" in stop.reason
    budget = cfg_with("controller.max_hours=1.0", "controller.patience=0")
    assert "time budget" in kinds(controller.decide(budget, budget, 1, {0: m(0.4), 1: m(0.5)}, [0], {}, 1.5))[
        "stop"].reason


def test_decisions_are_deterministic():
    cfg = cfg_with()
    args = (cfg, cfg, 2, {0: m(0.4), 1: m(0.5, 0.5), 2: m(0.3, 0.5)}, [0, 1], {"json": (1, 4)}, 0.2)
    assert controller.decide(*args) == controller.decide(*args)


def test_plan_rolls_back_to_the_best_kept_adapter_and_folds_overrides():
    cfg = cfg_with("controller.patience=5")
    decisions = [Decision(1, "promote", "", {}), Decision(1, "judge", "", {"overrides": {"judge.rubric": "none"}}),
                 Decision(2, "reject", "", {"overrides": {"train.learning_rate": 2.5e-5}}),
                 Decision(2, "curriculum", "", {"weights": {"json": 2.0}})]
    scores = {0: 0.6, 1: 0.7, 2: 0.5}
    p = controller.plan(cfg, decisions, {}, [0, 1, 2], scores, [1, 2])
    assert (p.adapter_round, p.best_round, p.rejected) == (1, 1, [2])
    assert p.overrides == {"judge.rubric": "none", "train.learning_rate": 2.5e-5}
    assert p.constraint_weights == {"json": 2.0} and p.stop_reason is None
    promoted = controller.plan(cfg, decisions, {2: "promote"}, [0, 1, 2], scores, [1, 2])
    assert promoted.adapter_round == 2 and promoted.rejected == []
    eff = controller.effective_config(cfg, p.overrides)
    assert (eff.judge.rubric, eff.train.learning_rate) == ("none", 2.5e-5)


def test_a_stop_lifts_when_the_config_allows_more():
    decisions = [Decision(3, "stop", "no improvement", {"best_round": 1, "best_score": 0.7})]
    assert controller.plan(cfg_with("controller.patience=2"), decisions, {}, [0, 1, 2, 3], {}, []).stop_reason
    assert controller.plan(cfg_with("controller.patience=3"), decisions, {}, [0, 1, 2, 3], {}, []).stop_reason is None


def test_a_forced_regression_is_rejected_and_rolled_back(tiny_model_dir, runs_root, monkeypatch):
    """Round 1's held-out CSR is forced below round 0's (a regression the gate must catch); round 2 must
    then sample from and train on round 0's policy (the base) with the backed-off settings."""
    from selfalign.stages import evaluate

    real = evaluate.response_metrics
    calls = {"n": 0}

    def regressing(items):
        out = real(items)
        calls["n"] += 1
        out["eval/csr_instruction"] = 0.8 if calls["n"] == 1 else (0.2 if calls["n"] == 2 else 0.8)
        return out

    monkeypatch.setattr(evaluate, "response_metrics", regressing)
    cfg = config.build(sets=[f"model.name={tiny_model_dir}", *LOOP_SETS, "run.rounds=2", "eval.win_rate=false",
                             "train.learning_rate=0.001", "train.beta=0.1"])
    folder = runs.create("gated", config.dumps(cfg))
    assert loop.run(folder, quiet=True) == 0
    with open_store(folder.db_path) as store:
        assert [r.status for r in store.rounds()] == ["done", "rejected", "done"]
        reject = next(d for d in store.decisions(1) if d.kind == "reject")
        assert reject.data["best_round"] == 0 and "round 1's adapter is not promoted" in reject.reason
        assert store.round(2).policy_adapter is None  # rolled back to the base, not round 1's adapter
        sampled = [r for r in store.responses(round=2) if r.kind != "eval"]
        assert {r.policy for r in sampled} == {"base"}  # repaired copies keep their source's policy
        assert any("controller: reject" in e.message for e in store.events())
    saved = config.load(folder.adapter_dir(2) / "selfalign_config.toml")
    assert saved.train.learning_rate == pytest.approx(0.0005) and saved.train.beta == pytest.approx(0.2)
    # export defaults to the best kept round with an adapter: round 2, not the rejected round 1
    target = export.export_round(folder, None)
    assert target == folder.path / "export" / "2"
    exported = (target / "adapter" / "selfalign_config.toml").read_text()
    assert exported == (folder.adapter_dir(2) / "selfalign_config.toml").read_text()

    async def rounds_view():
        app = RunApp(folder, poll_interval=0.1)
        async with app.run_test(size=(120, 40)) as pilot:
            while app.polls < 1:
                await pilot.pause(0.05)
            await pilot.press("5")
            shown = str(app.query_one("#decisions", Static).content)
            assert "round 1: REJECTED" in shown and "not promoted" in shown
            await pilot.press("a")  # the user promotes the rejected round
            while not app.overrides_written:
                await pilot.pause(0.05)
        with open_store(folder.db_path) as store:
            assert store.overrides() == {1: "promote"}

    asyncio.run(rounds_view())


def test_an_undecided_win_rate_is_left_out_of_the_score():
    """A judge whose two orders agree on fewer than half of the comparisons measured its own habit: the
    score counts such a round's win rate as 0.5, like round 0's."""
    cfg = cfg_with("controller.score_weight_csr=1.0", "controller.score_weight_win_rate=0.5")
    assert controller.heldout_score(m(0.4, 0.9, **{"eval/win_rate_decided": 0.2}), cfg) == pytest.approx(0.65)
    assert controller.heldout_score(m(0.4, 0.9, **{"eval/win_rate_decided": 0.5}), cfg) == pytest.approx(0.85)

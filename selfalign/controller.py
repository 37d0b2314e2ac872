"""The round controller: after each round's evaluation it decides what the next round does, and says why.

Decisions (each stored with its reason and the figures behind it; each can be switched off in the
`controller` config section):
- promote / reject: a round whose held-out score falls more than `tolerance` below the best kept
  round is rejected; the next round starts from the best round's adapter with a lower learning rate
  and a larger DPO beta. A user can promote a rejected round (or reject a kept one) from the TUI.
- curriculum: constraint types the policy satisfied least on this round's training prompts get more
  weight when the next round attaches constraints (between a floor and a ceiling: none disappears).
- judge: when the rubric self-judge is unhealthy (score collapse, position bias, low agreement with
  the verifiers), the next rounds switch it off and lean on verifiers and likelihood.
- stop: no improvement of the best held-out score for `patience` rounds, or the time budget spent.

`decide()` is a pure function of the metrics, the round's verification counts and the config, so a
resumed run decides the same way; `plan()` folds every decision so far (and the user's overrides)
into what the next round does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from selfalign import config as config_mod
from selfalign import heldout
from selfalign import metrics as metrics_mod
from selfalign.store.rows import Decision, NewDecision


def heldout_score(metrics: dict[str, float | None], cfg: config_mod.Config) -> float | None:
    """The number a round is judged by: weighted instruction-level CSR plus weighted win rate over round 0
    (round 0 against itself counts as 0.5)."""
    csr = metrics.get("eval/csr_instruction")
    if csr is None:
        return None
    win = heldout.decided_win_rate(metrics)  # an undecided judge's 0.5 says nothing: count it as no win rate
    c = cfg.controller
    return c.score_weight_csr * csr + c.score_weight_win_rate * (0.5 if win is None else win)


def heldout_scores(metrics: dict[int, dict[str, float | None]], cfg: config_mod.Config) -> dict[int, float | None]:
    return {k: heldout_score(m, cfg) for k, m in metrics.items()}


@dataclass
class Plan:
    """What the next round does, from every decision so far."""

    adapter_round: int | None = None  # start from this round's adapter; None: the base model
    overrides: dict[str, Any] = field(default_factory=dict)  # settings changed from config.toml
    constraint_weights: dict[str, float] | None = None
    stop_reason: str | None = None
    kept: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    best_round: int | None = None


def kept_rounds(decisions: Sequence[NewDecision], user: dict[int, str],
                rounds: list[int]) -> tuple[list[int], list[int]]:
    """Rounds kept and rejected, the user's overrides winning over the controller's verdicts."""
    verdict = {d.round: d.kind for d in decisions if d.kind in ("promote", "reject")}
    verdict.update({k: "promote" if action == "promote" else "reject" for k, action in user.items()})
    kept = [k for k in rounds if verdict.get(k, "promote") == "promote"]
    return kept, [k for k in rounds if k not in kept]


def best_round(scores: dict[int, float | None], kept: list[int]) -> int | None:
    """The kept round with the highest held-out score; on a tie the later one (it trained more)."""
    candidates = [(scores[k], k) for k in kept if scores.get(k) is not None]
    return max(candidates)[1] if candidates else None


def best_kept_round(cfg: config_mod.Config, store, adapters: list[int]) -> int | None:
    """With the controller's decisions: the kept round with an adapter and the best held-out score (None
    without decisions). What export, eval and serve use when no round is named."""
    decisions = store.decisions()
    if not decisions:
        return None
    kept, _ = kept_rounds(decisions, store.overrides(), [r.k for r in store.rounds()])
    return best_round(heldout_scores(store.metrics(), cfg), [k for k in kept if k in adapters])


def plan(cfg: config_mod.Config, decisions: list[Decision], user: dict[int, str], finished: list[int],
         scores: dict[int, float | None], adapter_rounds: list[int]) -> Plan:
    kept, rejected = kept_rounds(decisions, user, finished)
    out = Plan(kept=kept, rejected=rejected, best_round=best_round(scores, kept))
    for d in decisions:  # in round order: later overrides win
        out.overrides.update(d.data.get("overrides", {}))
        if d.kind == "curriculum":
            out.constraint_weights = d.data["weights"]
        if d.kind == "stop" and _still_stops(cfg, d):
            out.stop_reason = d.reason
    last = max(finished) if finished else None
    rolled_back = last is not None and last in rejected and out.best_round is not None
    start = out.best_round if rolled_back else last  # roll back: start from the best kept round
    with_adapters = [k for k in adapter_rounds if start is not None and k <= start and k in kept]
    out.adapter_round = max(with_adapters) if with_adapters else None
    return out


def _still_stops(cfg: config_mod.Config, d: Decision) -> bool:
    """A stop holds while the setting that caused it still says so (raise patience or the budget in
    config.toml to go on)."""
    c = cfg.controller
    if not c.enabled:
        return False
    if "best_round" in d.data:
        return bool(c.patience) and d.round - d.data["best_round"] >= c.patience
    return bool(c.max_hours) and d.data.get("hours", 0) >= c.max_hours


def effective_config(cfg: config_mod.Config, overrides: dict[str, Any]) -> config_mod.Config:
    """config.toml with the controller's overrides applied (validated like `--set`)."""
    if not overrides:
        return cfg
    return config_mod.build(cfg.to_dict(), sets=[f"{key}={config_mod.toml_value(value)}"
                                                 for key, value in overrides.items()])


def decide(cfg: config_mod.Config, round_cfg: config_mod.Config, k: int, metrics: dict[int, dict[str, float | None]],
           kept_before: list[int], verification_counts: dict[str, tuple[int, int]],
           hours_spent: float, rubric_trial=None) -> list[NewDecision]:
    """The decisions after round k. `round_cfg` is the configuration round k ran with (overrides applied);
    `kept_before` are the kept rounds before k; `verification_counts` maps a constraint type to
    (passed, checked) on round k's training responses; `rubric_trial` is the outcome of the rubric
    rewrite the loop ran when wants_rubric_rewrite() said so."""
    c = cfg.controller
    out: list[NewDecision] = []
    scores = heldout_scores(metrics, cfg)
    score = scores.get(k)
    best = best_round(scores, kept_before)
    kept_now = list(kept_before)

    if c.gate and score is not None and best is not None and score < scores[best] - c.tolerance:
        overrides = {"train.learning_rate": round_cfg.train.learning_rate * c.lr_backoff,
                     "train.beta": round_cfg.train.beta * c.beta_boost}
        out.append(NewDecision(k, "reject", f"held-out score {score:.3f} is {scores[best] - score:.3f} below the "
                               f"best kept round {best} ({scores[best]:.3f}), more than the tolerance "
                               f"{c.tolerance}: round {k}'s adapter is not promoted; the next round starts from "
                               f"round {best} with learning rate {overrides['train.learning_rate']:.3g} and beta "
                               f"{overrides['train.beta']:.3g}",
                               {"score": score, "best_round": best, "best_score": scores[best],
                                "overrides": overrides}))
    else:
        why = (f"held-out score {score:.3f}" + (f" vs best kept round {best} ({scores[best]:.3f})"
                                                  if best is not None else "")) if score is not None \
            else "no held-out score"
        out.append(NewDecision(k, "promote", f"{why}: kept" + ("" if c.gate else " (gate off)"),
                               {"score": score, "best_round": best}))
        kept_now.append(k)

    if c.curriculum and verification_counts:
        out.append(_curriculum(k, c, verification_counts))

    judge = _judge_repair(k, round_cfg, metrics.get(k, {}), rubric_trial) if c.repair_judge else None
    if judge:
        out.append(judge)

    new_best = best_round(scores, kept_now)
    if c.patience and new_best is not None and k - new_best >= c.patience:
        out.append(NewDecision(k, "stop", f"the best held-out score ({scores[new_best]:.3f}, round {new_best}) "
                               f"has not improved for {k - new_best} rounds (patience {c.patience})",
                               {"best_round": new_best, "best_score": scores[new_best]}))
    elif c.max_hours and hours_spent >= c.max_hours:
        out.append(NewDecision(k, "stop", f"time budget spent: {hours_spent:.2f} h of {c.max_hours} h",
                               {"hours": hours_spent}))
    return out


CURRICULUM_FLOOR = 0.5  # the least weight a constraint type keeps (1.0 = uniform): none disappears
CURRICULUM_CEILING = 3.0  # the most weight a constraint type gets


def _curriculum(k: int, c, counts: dict[str, tuple[int, int]]) -> NewDecision:
    """Weight each constraint type by how often it failed, relative to the mean failure rate, between the
    floor and the ceiling."""
    fail = {cid: 1 - passed / checked for cid, (passed, checked) in sorted(counts.items()) if checked}
    mean = sum(fail.values()) / len(fail) if fail else 0.0
    weights = {cid: round(min(CURRICULUM_CEILING, max(CURRICULUM_FLOOR, f / mean if mean else 1.0)), 3)
               for cid, f in fail.items()}
    hardest = sorted(weights, key=lambda cid: (-weights[cid], cid))[:3]
    figures = ", ".join(f"{cid} {1 - fail[cid]:.0%} met -> weight {weights[cid]}" for cid in hardest)
    return NewDecision(k, "curriculum", f"more prompts with the constraints met least: {figures}",
                       {"weights": weights, "satisfaction": {cid: round(1 - f, 4) for cid, f in fail.items()}})


def judge_problems(round_cfg: config_mod.Config, m: dict[str, float | None]) -> list[str]:
    """What is wrong with the rubric self-judge of a round, from its health metrics (empty: healthy or off)."""
    if round_cfg.judge.rubric == "none" or round_cfg.judge.weight_rubric == 0:
        return []
    problems = []
    if m.get("judge/collapse"):
        problems.append(f"score collapse (std {m.get('judge/score_std') or 0:.2f})")
    if metrics_mod.position_biased(m):
        problems.append(f"position bias {m['judge/position_bias']:.2f}")
    if metrics_mod.disagrees(m, "judge/rubric_verifier_agreement"):
        problems.append(f"rubric/verifier agreement {m['judge/rubric_verifier_agreement']:.2f}")
    return problems


def wants_rubric_rewrite(cfg: config_mod.Config, round_cfg: config_mod.Config,
                         m: dict[str, float | None]) -> bool:
    """Whether the loop should run a rubric rewrite trial before deciding (it needs the model)."""
    c = cfg.controller
    return (c.enabled and c.repair_judge and c.rewrite_rubric and round_cfg.judge.rubric == "additive5"
            and round_cfg.pairs.rule != "sft" and bool(judge_problems(round_cfg, m)))


def _judge_repair(k: int, round_cfg: config_mod.Config, m: dict[str, float | None],
                  trial=None) -> NewDecision | None:
    """`trial`: the rubric rewrite's outcome (rubric_rewrite.Trial) when one ran."""
    problems = judge_problems(round_cfg, m)
    if not problems:
        return None
    if trial is not None and trial.kept:
        return NewDecision(k, "judge", "rubric self-judge unhealthy (" + "; ".join(problems) + "); "
                           + trial.reason + "; it judges from the next round",
                           {"problems": problems, "rewrite": trial.data, "overrides": trial.data["overrides"]})
    if round_cfg.pairs.rule == "sft":
        return NewDecision(k, "judge", "rubric judge unhealthy (" + "; ".join(problems) + ") but kept: the SFT "
                           "filter of this recipe is built on it", {"problems": problems})
    overrides: dict[str, Any] = {"judge.rubric": "none", "judge.weight_rubric": 0.0}
    if metrics_mod.disagrees(m, "judge/likelihood_verifier_agreement"):
        overrides["judge.weight_likelihood"] = round_cfg.judge.weight_likelihood * 0.5
    data: dict[str, Any] = {"problems": problems, "overrides": overrides}
    if trial is not None:
        data["rewrite"] = trial.data
    return NewDecision(k, "judge", "rubric self-judge unhealthy (" + "; ".join(problems) + "): switched off from "
                       "the next round; pairs rest on " + ("verifiers and half-weight likelihood"
                                                           if "judge.weight_likelihood" in overrides
                                                           else "verifiers and likelihood")
                       + (f" ({trial.reason})" if trial is not None else ""), data)

"""Metric names, how every view labels them, and the judge-health thresholds: one table for all.

Names are stored with slashes (`eval/csr_prompt`). `compare`, the UI's rounds table and `selfalign
status` each show a list of names from here, with the long label (compare) or the short one (the UI).
The judge stage warns, the UI colours and the controller repairs at the same thresholds.
"""

from __future__ import annotations

# name -> (long label, short label for narrow tables)
LABELS: dict[str, tuple[str, str]] = {
    "eval/csr_prompt": ("held-out CSR (prompt)", "CSR (prompt)"),
    "eval/csr_prompt_low": ("  95 % interval, low", "CSR low"),
    "eval/csr_prompt_high": ("  95 % interval, high", "CSR high"),
    "eval/csr_instruction": ("held-out CSR (instruction)", "CSR (instruction)"),
    "eval/degenerate_rate": ("degenerate (looping or empty) answers", "degenerate"),
    "eval/win_rate": ("win rate over round 0", "win rate vs r0"),
    "eval/win_rate_decided": ("win-rate comparisons decided (both orders agree)", "win rate decided"),
    "eval/length_mean": ("mean length (tokens)", "length (tokens)"),
    "eval/clean_length_mean": ("mean length of clean answers (finished, no loop)", "clean length"),
    "eval/distinct2": ("distinct-2", "distinct-2"),
    "eval/truncated_rate": ("truncated answers", "truncated"),
    "eval/unasked_form_rate": ("answers wearing a marked form their prompt did not ask for", "unasked form"),
    "eval/hollow_rate": ("hollow answers (a form met, nothing said: verifiers.hollow)", "hollow"),
    "eval/echo_rate": ("echoes (the prompt handed back: verifiers.echo)", "echo"),
    "judge/score_mean": ("judge score mean", "judge score"),
    "judge/position_bias": ("judge position bias", "position bias"),
    "judge/collapse": ("judge score collapse", "collapse"),
    "judge/likelihood_verifier_agreement": ("likelihood/verifier agreement", "lik./verifier agree"),
    "pairs/weight_likelihood": ("likelihood weight after agreement", "lik. weight"),
    "pairs/count": ("pairs built", "pairs"),
    "pairs/chosen_unasked_form_rate": ("chosen answers wearing an unasked marked form", "chosen unasked"),
    "train/loss_last": ("final training loss", "final loss"),
    "correct/fix_rate": ("corrector: failing answers it fixed", "fixed"),
    "correct/break_rate": ("corrector: passing answers it broke", "broke"),
    "correct/noop_share": ("corrector: corrections that changed nothing", "no-op"),
}

COMPARE = ("eval/csr_prompt", "eval/csr_prompt_low", "eval/csr_prompt_high", "eval/csr_instruction",
           "eval/degenerate_rate", "eval/unasked_form_rate", "eval/hollow_rate", "eval/echo_rate",
           "pairs/chosen_unasked_form_rate",
           "eval/win_rate",
           "eval/win_rate_decided", "eval/length_mean", "eval/distinct2", "judge/score_mean", "judge/position_bias",
           "judge/collapse", "judge/likelihood_verifier_agreement", "pairs/weight_likelihood", "pairs/count",
           "train/loss_last", "correct/fix_rate", "correct/break_rate", "correct/noop_share")
ROUNDS_TABLE = ("eval/csr_prompt", "eval/csr_instruction", "eval/win_rate", "eval/length_mean", "eval/distinct2",
                "eval/truncated_rate", "eval/unasked_form_rate", "pairs/count", "train/loss_last", "judge/score_mean",
                "judge/position_bias", "judge/likelihood_verifier_agreement", "correct/fix_rate", "correct/break_rate",
                "correct/noop_share")
# status shows each of these the run has (the corrector's only where the correct stage ran)
HEADLINE = ("eval/csr_prompt", "eval/csr_instruction", "eval/win_rate", "eval/length_mean", "eval/unasked_form_rate",
            "eval/hollow_rate", "eval/echo_rate", "pairs/count", "correct/fix_rate", "correct/break_rate",
            "correct/noop_share")


def labelled(names, short: bool = False) -> list[tuple[str, str]]:
    """(name, label) for each name, in order."""
    return [(name, LABELS[name][1 if short else 0]) for name in names]


# ------------------------------------------------------------------ judge health

POSITION_BIAS_MAX = 0.5  # above: verdicts follow the order more than the answers
PARSE_FAIL_MAX = 0.3  # above: the judge's replies are too often unreadable
AGREEMENT_MIN = 0.5  # below: a judge orders responses against the verifiers more often than with them


def position_biased(m: dict) -> bool:
    return (m.get("judge/position_bias") or 0) > POSITION_BIAS_MAX


def parse_failing(m: dict) -> bool:
    return (m.get("judge/parse_fail_rate") or 0) > PARSE_FAIL_MAX


def disagrees(m: dict, name: str) -> bool:
    """Whether an agreement metric (judge/..._verifier_agreement) is measured and below AGREEMENT_MIN."""
    value = m.get(name)
    return value is not None and value < AGREEMENT_MIN


# ------------------------------------------------------------------ habits the loop taught

HABIT_RISE = 0.05  # a form worn unasked this much more often than at round 0 is a habit the loop taught
UNASKED_PREFIX = "eval/unasked/"


def habits(metrics: dict[int, dict], k: int) -> list[tuple[str, float, float]]:
    """(form, round k's unasked share, round 0's) for each form worn unasked more than HABIT_RISE more often
    than at round 0, on the same held-out sample (verifiers/forms.py)."""
    now, then = metrics.get(k, {}), metrics.get(0, {})
    out = []
    for name, value in sorted(now.items()):
        if name.startswith(UNASKED_PREFIX) and value is not None and then.get(name) is not None \
                and value - then[name] > HABIT_RISE:
            out.append((name[len(UNASKED_PREFIX):], value, then[name]))
    return out


def gaming_rise(metrics: dict[int, dict], k: int, name: str) -> tuple[float, float] | None:
    """(round k's share, round 0's) of answers that game the verifiers (name: eval/hollow_rate, a form met and
    nothing said; eval/echo_rate, the prompt handed back) when it rose more than HABIT_RISE above round 0's on
    the same held-out sample."""
    now, then = metrics.get(k, {}).get(name), metrics.get(0, {}).get(name)
    if now is None or then is None or now - then <= HABIT_RISE:
        return None
    return now, then

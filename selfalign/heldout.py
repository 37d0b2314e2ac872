"""Held-out figures with intervals: the one computation behind the loop's eval/ metrics, `selfalign eval`,
`compare`, the UI and `benchmarks/gain.py`.

Reads the answers the evaluate stage stored (one greedy answer per held-out prompt and round) and
computes, per round (`round_figures`):
- over the answers to prompts **with** constraints: prompt- and instruction-level constraint satisfaction
  with 95 % bootstrap intervals, satisfaction per constraint type, and the signs of an answer that games
  the verifiers (mean length, clean length, distinct-2, empty, degenerate and truncated shares);
- over **every** answer: the unasked-form rates (verifiers/forms.py: per form, the share of answers whose
  prompt did not ask for it that wear it), and the same over the prompts **without** any constraint alone,
  the clearest view of a habit; and the shares of hollow answers (a form met, nothing said) and of echoes
  (the prompt handed back), verifiers.hollow and verifiers.echo.
Between two rounds: the paired gain on the constrained prompts both answered, with its interval. No model
and no writes. `eval_metrics` flattens a round's figures into the names the loop stores.
"""

from __future__ import annotations

from dataclasses import dataclass

from selfalign import stats, verifiers
from selfalign.store.rows import EVAL
from selfalign.verifiers import forms


@dataclass(frozen=True)
class Answer:
    prompt_id: int
    constraints: list[dict]
    text: str
    tokens: int
    finish_reason: str
    question: str = ""  # the prompt as the policy saw it (verifiers.attach), for the echo share

    @classmethod
    def of(cls, prompt, response) -> Answer:
        """A stored prompt's answer, with the prompt as the policy saw it."""
        return cls(prompt.id, prompt.constraints, response.text, response.tokens, response.finish_reason,
                   verifiers.attach(prompt.text, prompt.constraints))

    @property
    def results(self) -> dict[str, bool]:
        return verifiers.check_all(self.constraints, self.text)


# Below this share of comparisons whose two orders named the same winner, the win rate over round 0 is the
# judge's habit (a small judge names one position every time), not a comparison of the rounds.
WIN_RATE_MIN_DECIDED = 0.5
UNDECIDED = "undecided"


def decided_win_rate(metrics: dict) -> float | None:
    """A round's win rate over round 0 when its judge decided; None when it did not, or none was measured."""
    rate, decided = metrics.get("eval/win_rate"), metrics.get("eval/win_rate_decided")
    if rate is None or (decided is not None and decided < WIN_RATE_MIN_DECIDED):
        return None
    return rate


def shown(metrics: dict) -> dict:
    """A round's metrics for people (UI, status, compare): an undecided win rate reads 'undecided', not the
    0.5 the judge's habit produced."""
    if metrics.get("eval/win_rate") is not None and decided_win_rate(metrics) is None:
        return {**metrics, "eval/win_rate": UNDECIDED}
    return metrics


def answers(store, round_k: int, prompt_ids=None) -> dict[int, Answer]:
    """prompt id -> round k's evaluation answer, for the given prompts (default: the run's held-out
    prompts), with or without constraints."""
    if prompt_ids is None:
        pairs = store.heldout_answers(round_k)
    else:
        wanted = set(prompt_ids)
        found = {}
        for r in store.responses(round=round_k):
            if r.prompt_id in wanted and r.kind == EVAL and r.prompt_id not in found:
                found[r.prompt_id] = r
        prompts = store.prompts_by_id(found)
        pairs = [(prompts[i], r) for i, r in sorted(found.items())]
    return {p.id: Answer.of(p, r) for p, r in pairs}


def distinct2(texts: list[str]) -> float | None:
    bigrams = [pair for t in texts for pair in zip(t.split(), t.split()[1:], strict=False)]
    return len(set(bigrams)) / len(bigrams) if bigrams else None


def _prompt_met(item: tuple[int, int]) -> float:
    met, asked = item
    return float(met == asked)


def satisfaction_items(items: list[Answer]) -> list[tuple[int, int]]:
    """(constraints met, constraints asked) per answer: the unit every interval resamples."""
    out = []
    for a in items:
        results = a.results
        out.append((sum(results.values()), len(results)))
    return out


def round_figures(items: list[Answer], seed: int = 0) -> dict:
    """One round's held-out figures (see the module's docstring for the population of each)."""
    plain = [a for a in items if not a.constraints]
    habits = {"unasked": forms.rates([(a.constraints, a.text) for a in items]),
              "hollow_share": _mean([float(verifiers.hollow(a.constraints, a.text)) for a in items]),
              "echo_share": _mean([float(verifiers.echo(a.question, a.text)) for a in items if a.question]),
              "unasked_plain": forms.rates([(a.constraints, a.text) for a in plain]), "n_plain": len(plain)}
    items = [a for a in items if a.constraints]
    if not items:
        return {"n": 0, **habits}
    sat = satisfaction_items(items)
    per_type: dict[str, list[int]] = {}
    for a in items:
        for cid, passed in a.results.items():
            per_type.setdefault(cid, [0, 0])
            per_type[cid][0] += passed
            per_type[cid][1] += 1
    n = len(items)
    return {
        "n": n,
        "csr_prompt": stats.bootstrap(sat, lambda s: stats.mean([_prompt_met(x) for x in s]), seed=seed),
        "csr_instruction": stats.bootstrap(sat, stats.ratio, seed=seed),
        "per_type": {cid: (met / asked, asked) for cid, (met, asked) in sorted(per_type.items())},
        "length_mean": sum(a.tokens for a in items) / n,
        "clean_length_mean": _mean([a.tokens for a in items if verifiers.finished_cleanly(a.text, a.finish_reason)]),
        "distinct2": distinct2([a.text for a in items]),
        "empty_share": sum(1 for a in items if not a.text.strip()) / n,
        "degenerate_share": sum(1 for a in items if verifiers.degenerate(a.text)) / n,
        "truncated_share": sum(1 for a in items if a.finish_reason == "length") / n,
        **habits,
    }


def eval_metrics(figures: dict) -> dict[str, float | None]:
    """A round's figures under the names the loop stores (eval/...), so stored and printed figures are one."""
    out: dict[str, float | None] = {"eval/unasked_form_rate": figures["unasked"]["marked"],
                                    "eval/hollow_rate": figures.get("hollow_share"),
                                    "eval/echo_rate": figures.get("echo_share"),
                                    "eval/unasked_form_rate_plain": figures["unasked_plain"]["marked"]}
    out |= {f"eval/unasked/{form}": share for form, (share, _) in figures["unasked"]["per_form"].items()}
    if not figures["n"]:
        return {"eval/csr_prompt": None, "eval/csr_instruction": None, **out}
    prompt_level, instruction_level = figures["csr_prompt"], figures["csr_instruction"]
    return {
        "eval/csr_prompt": prompt_level.value, "eval/csr_instruction": instruction_level.value,
        "eval/csr_prompt_low": prompt_level.low, "eval/csr_prompt_high": prompt_level.high,
        "eval/csr_instruction_low": instruction_level.low, "eval/csr_instruction_high": instruction_level.high,
        "eval/degenerate_rate": figures["degenerate_share"], "eval/length_mean": figures["length_mean"],
        "eval/clean_length_mean": figures["clean_length_mean"], "eval/distinct2": figures["distinct2"],
        "eval/empty_rate": figures["empty_share"], "eval/truncated_rate": figures["truncated_share"],
        **out,
    }


def gain_figures(before: dict[int, Answer], after: dict[int, Answer], seed: int = 0) -> dict:
    """Paired gain of `after` over `before` on the constrained prompts both answered."""
    common = sorted(i for i in set(before) & set(after) if before[i].constraints)
    if not common:
        return {"n": 0}
    b = satisfaction_items([before[i] for i in common])
    a = satisfaction_items([after[i] for i in common])
    return {
        "n": len(common),
        "csr_prompt": stats.paired_gain(b, a, lambda s: stats.mean([_prompt_met(x) for x in s]), seed=seed),
        "csr_instruction": stats.paired_gain(b, a, stats.ratio, seed=seed),
    }


def _plain(value):
    """Estimates and tuples as JSON-friendly values."""
    if isinstance(value, stats.Estimate):
        return value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return list(value)
    return value


def as_json(figures: dict) -> dict:
    return _plain(figures)


def render_md(name: str, k: int, figures: dict, gain: dict | None = None, against: int | None = None,
              baseline: dict | None = None) -> str:
    """Markdown: the round's figures with intervals, its gain over `against` (whose figures are `baseline`),
    every constraint type, and the unasked forms."""
    if not figures.get("n"):
        return f"### {name}, round {k}\n\nno held-out answers with constraints yet"
    lines = [f"### {name}, round {k} ({figures['n']} held-out prompts with constraints)", "",
             "| figure | value [95 % interval] |", "|---|---|",
             f"| prompt-level satisfaction | {figures['csr_prompt'].fmt()} |",
             f"| instruction-level satisfaction | {figures['csr_instruction'].fmt()} |"]
    if gain and gain.get("n"):
        lines += [f"| prompt-level gain over round {against} ({gain['n']} paired prompts) | "
                  f"{gain['csr_prompt'].fmt(signed=True)} |",
                  f"| instruction-level gain over round {against} | {gain['csr_instruction'].fmt(signed=True)} |"]
    lines += [f"| mean length (tokens) | {figures['length_mean']:.1f} |",
              f"| mean length of answers that finished cleanly (no cut-off, no loop) | "
              f"{_num(figures['clean_length_mean'], '.1f')} |",
              f"| distinct-2 | {_num(figures['distinct2'])} |",
              f"| empty / degenerate / truncated | {figures['empty_share']:.3f} / {figures['degenerate_share']:.3f}"
              f" / {figures['truncated_share']:.3f} |",
              f"| hollow (meets a form, says nothing: at most 2 words of its own) | "
              f"{_num(figures.get('hollow_share'))} |",
              f"| echo (hands the prompt back: only its words, mostly one copied run) | "
              f"{_num(figures.get('echo_share'))} |",
              "", "| constraint type | satisfied | prompts |", "|---|---|---|"]
    lines += [f"| {cid} | {share:.3f} | {asked} |" for cid, (share, asked) in figures["per_type"].items()]
    return "\n".join(lines + ["", render_unasked(figures, baseline)])


def render_unasked(figures: dict, baseline: dict | None = None) -> str:
    """Markdown: per form, the share of answers wearing it unasked (over every answer, and over the prompts
    without constraints), beside the baseline round's when given; marked forms are flagged."""
    now, plain = figures["unasked"], figures["unasked_plain"]
    then = (baseline or {}).get("unasked")
    head = ("| form | unasked, all answers | " + ("baseline | " if then else "")
            + "unasked, prompts without constraints |")
    lines = [f"Unasked forms ({now['n']} answers, {figures['n_plain']} to prompts without constraints; a marked "
             "form (*) is one no reader expects unasked):", "", head, "|---" * (3 + bool(then)) + "|"]
    rows = [("any marked form", now["marked"], then["marked"] if then else None, plain["marked"])]
    rows += [(form + (" *" if form in forms.MARKED else ""), share, then["per_form"].get(form, (None,))[0] if then
              else None, plain["per_form"].get(form, (None,))[0]) for form, (share, _) in now["per_form"].items()]
    for label, share, before, bare in rows:
        lines.append(f"| {label} | {_num(share)} | " + (f"{_num(before)} | " if then else "") + f"{_num(bare)} |")
    return "\n".join(lines)


def _num(value, spec: str = ".3f") -> str:
    return "-" if value is None else f"{value:{spec}}"


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


"""Correct a round's held-out answers with a corrector and measure what it did, against rule repair.

The corrections are stored as response rows (kind 'correction', policy naming the corrector, params naming
the answer they correct), so a stopped measurement resumes where it stopped and the UI can show them;
`store.heldout_answers` reads kind 'eval' only, so they never mix with the policy's own answers.

Four ways to give an answer, each paired with the policy alone on the same prompts:
- policy: the evaluation answer as it is;
- repair: rule repair (verifiers/repair.py) of an answer that misses a constraint, where a rule can fix it;
- corrector: the corrector's rewrite of an answer that misses a constraint, where it is usable
  (correction/outcomes.py); the verifiers are the inspector that decides what needs correcting;
- both: rule repair where it can, else the corrector.
The corrector also rewrites every answer that already passes, so its break rate is measured, not assumed.
"""

from __future__ import annotations

from collections.abc import Callable

from selfalign import heldout, stats, verifiers
from selfalign.correction import corrector, outcomes
from selfalign.rouge import tokens
from selfalign.store.rows import CORRECTION, NewResponse

WAYS = ("policy", "repair", "corrector", "both")


def correct_answers(folder, store, engine, corrector_round: int, answer_round: int, prompt_ids: list[int], *,
                    max_new_tokens: int, progress: Callable[[int, int], None] | None = None,
                    should_stop: Callable[[], bool] | None = None) -> dict[int, tuple]:
    """prompt id -> (evaluation answer, stored correction) for round answer_round's answers to prompt_ids,
    correcting (and storing) those not corrected before."""
    label = corrector.label(corrector_round)
    answers = {}
    for r in store.responses(round=answer_round):
        if r.kind == "eval" and r.prompt_id in prompt_ids and r.prompt_id not in answers:
            answers[r.prompt_id] = r
    done = {r.prompt_id: r for r in corrector.stored(store, answer_round, corrector_round).values()}
    prompts = store.prompts_by_id(answers)
    todo = [pid for pid in sorted(answers) if pid not in done]
    total, count = len(answers), len(answers) - len(todo)
    items = [(verifiers.attach(prompts[pid].text, prompts[pid].constraints), answers[pid].text) for pid in todo]

    def store_result(result) -> None:
        nonlocal count
        pid = todo[result.key]
        store.add_response(NewResponse(pid, answer_round, label, 0, result.text, result.tokens, result.finish_reason,
                                       result.mean_logprob, {"corrected_from": answers[pid].id,
                                                             "max_new_tokens": max_new_tokens},
                                       result.duration_s, kind=CORRECTION))
        count += 1
        if progress:
            progress(count, total)

    if items:
        corrector.correct(engine, corrector.adapter_dir(folder, corrector_round), items, max_new_tokens=max_new_tokens,
                          answer_tokens=[answers[pid].tokens for pid in todo], run_dir=folder.path,
                          on_result=store_result, should_stop=should_stop)
    done = {r.prompt_id: r for r in corrector.stored(store, answer_round, corrector_round).values()}
    return {pid: (answers[pid], done[pid]) for pid in sorted(answers) if pid in done}


def figures(store, corrected: dict[int, tuple], seed: int = 0) -> dict:
    """Outcomes over every corrected answer, and the four ways' prompt-level satisfaction with their paired gain
    over the policy alone, on the prompts with constraints; content types reported on their own."""
    from selfalign.verifiers.repair import repair

    prompts = store.prompts_by_id(corrected)
    rows = []
    for pid, (answer, correction) in corrected.items():
        p = prompts[pid]
        if not p.constraints:
            continue
        question = verifiers.attach(p.text, p.constraints)
        o = outcomes.assess(question, p.constraints, answer.text, correction.text, correction.finish_reason)
        repaired = None if o.before else repair(p.constraints, answer.text)
        repair_ok = repaired is not None and all(verifiers.check_all(p.constraints, repaired).values())
        rows.append((p, o, repair_ok, len(tokens(correction.text)), len(tokens(answer.text))))
    if not rows:
        return {"n": 0}
    met = {
        "policy": [o.before for _, o, _, _, _ in rows],
        "repair": [o.before or ok for _, o, ok, _, _ in rows],
        "corrector": [o.before or (o.usable and o.after) for _, o, _, _, _ in rows],
        "both": [o.before or ok or (o.usable and o.after) for _, o, ok, _, _ in rows],
    }
    base = [float(x) for x in met["policy"]]
    ways = {}
    for way, values in met.items():
        after = [float(x) for x in values]
        ways[way] = {"csr_prompt": stats.bootstrap(after, stats.mean, seed=seed),
                     "gain": None if way == "policy" else stats.paired_gain(base, after, stats.mean, seed=seed)}
    failing = [o for _, o, _, _, _ in rows if not o.before]
    content = set(outcomes.CONTENT_TYPES)
    content_rows = [o for p, o, _, _, _ in rows if content & {c["id"] for c in p.constraints}]
    words_answer = sum(a for *_, a in rows)
    return {
        "n": len(rows),
        "ways": ways,
        "all": outcomes.summary([o for _, o, _, _, _ in rows]),
        "failing_only": outcomes.summary(failing),
        "content_prompts": outcomes.summary(content_rows),
        "length_ratio": sum(c for *_, c, _ in rows) / words_answer if words_answer else None,
    }


def render_md(title: str, f: dict) -> str:
    """Markdown for one (corrector, answers) measurement."""
    if not f.get("n"):
        return f"### {title}\n\nno corrected answers to prompts with constraints"
    lines = [f"### {title} ({f['n']} prompts with constraints)", "",
             "| way | prompt-level % [95 % CI] | gain over the policy alone, points [95 % CI] |", "|---|---|---|"]
    for way in WAYS:
        w = f["ways"][way]
        gain = "-" if w["gain"] is None else w["gain"].fmt(100, 1, signed=True)
        lines.append(f"| {way} | {w['csr_prompt'].fmt(100, 1)} | {gain} |")
    a = f["all"]
    lines += ["", "| figure | all answers | answers that missed a constraint | prompts with a content constraint |",
              "|---|---|---|---|"]
    for key, label in (("fix_rate", "fix rate (failing answers whose usable correction meets everything)"),
                       ("break_rate", "break rate (passing answers whose usable correction misses something)"),
                       ("noop_share", "no-op share (ROUGE-L >= 0.9 against the answer)"),
                       ("echo_share", "echo share"), ("gutted_share", "gutted share"),
                       ("degenerate_share", "looped or cut off"), ("added_form_share", "added an unasked form"),
                       ("usable_share", "usable")):
        lines.append(f"| {label} | {_num(a[key])} | {_num(f['failing_only'][key])} | "
                     f"{_num(f['content_prompts'][key])} |")
    lines += ["", f"Correction length / answer length (words): {_num(f['length_ratio'], '.2f')}", "",
              "Per constraint type (usable corrections of every answer; instruction level):", "",
              "| type | missed before | fixed | met before | broken |", "|---|---|---|---|---|"]
    for cid, t in a["per_type"].items():
        mark = " (content)" if cid in outcomes.CONTENT_TYPES else ""
        lines.append(f"| {cid}{mark} | {t['missed']} | {t['fixed']} | {t['met']} | {t['broken']} |")
    return "\n".join(lines)


def as_json(f: dict) -> dict:
    return heldout.as_json(f)


def _num(value, spec: str = ".3f") -> str:
    return "-" if value is None else f"{value:{spec}}"

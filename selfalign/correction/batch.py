"""`selfalign correct RUN --in answers.jsonl --out corrected.jsonl`: a run's corrector over any answers.

Each input line is a JSON object with "prompt" and "answer" (and optionally "constraints", the benchmark's
{id, params} list). Each output line is the input plus "correction" (what the corrector wrote), "final" (the
answer to give: the correction when it is usable and meets no fewer of the constraints than the answer, else
the answer) and "outcome" (met before / after, no-op, echo, gutted, added forms). The output file is written
whole or not at all.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from selfalign import verifiers
from selfalign.correction import corrector, outcomes
from selfalign.errors import UsageError


def read_items(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no file {path}; give a JSONL file with one {{\"prompt\", \"answer\"}} object per line")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}:{number} is not valid JSON ({exc.msg}); fix that line") from None
        if not isinstance(item, dict) or not isinstance(item.get("prompt"), str) or \
                not isinstance(item.get("answer"), str):
            raise UsageError(f"{path}:{number} needs string fields \"prompt\" and \"answer\"; fix that line")
        constraints = item.get("constraints", [])
        if not isinstance(constraints, list):
            raise UsageError(f"{path}:{number}: \"constraints\" must be a list of {{\"id\", \"params\"}} objects")
        try:
            item["constraints"] = [verifiers.validate(c) for c in constraints]
        except ValueError as exc:
            raise UsageError(f"{path}:{number}: {exc}") from None
        items.append(item)
    if not items:
        raise UsageError(f"{path} holds no answers; give one JSON object per line")
    return items


def final_answer(item: dict, correction: str, outcome: outcomes.Outcome) -> str:
    """The correction when it is usable and meets at least as many of the constraints as the answer."""
    met_before, met_after = sum(outcome.results_before.values()), sum(outcome.results_after.values())
    return correction if outcome.usable and met_after >= met_before else item["answer"]


def run(folder, cfg, engine, corrector_round: int, in_path: str | Path, out_path: str | Path,
        max_new_tokens: int) -> dict:
    """Correct every item of in_path into out_path; returns counts (items, changed, usable)."""
    items = read_items(in_path)
    questions = [verifiers.attach(item["prompt"], item.get("constraints", [])) for item in items]
    results = corrector.correct(engine, corrector.adapter_dir(folder, corrector_round),
                                [(q, item["answer"]) for q, item in zip(questions, items, strict=True)],
                                max_new_tokens=max_new_tokens, run_dir=folder.path)
    lines, changed, usable = [], 0, 0
    for question, item, result in zip(questions, items, results, strict=True):
        o = outcomes.assess(question, item.get("constraints", []), item["answer"], result.text, result.finish_reason)
        final = final_answer(item, result.text, o)
        changed += final != item["answer"]
        usable += o.usable
        lines.append(json.dumps({**item, "correction": result.text, "final": final, "outcome": {
            "met_before": o.before, "met_after": o.after, "noop": o.noop, "echo": o.echo, "gutted": o.gutted,
            "degenerate": o.degenerate, "added_forms": list(o.added_forms), "usable": o.usable}}))
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, out_path)
    return {"items": len(items), "changed": changed, "usable": usable}

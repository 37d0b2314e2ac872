"""Run comparison data (no UI): config differences, metrics per round, held-out answers joined by
prompt, each later run's held-out satisfaction paired against the first run's, and each run's note.
The TUI's comparison screen and `compare --format md|json` both render what `compare()` returns.

Runs with different numbers of rounds, recipes or held-out files compare cleanly: a missing cell is
None (shown as "-"), and a warning says when the held-out prompt sets differ (answers are joined on
the prompts the runs share).
"""

from __future__ import annotations

import difflib
import json
from typing import Any

from selfalign import config as config_mod
from selfalign import heldout, runs, stats, verifiers
from selfalign import metrics as metrics_mod
from selfalign.stages import STAGES
from selfalign.store import open_store
from selfalign.store.rows import ROUND_FINISHED

METRICS = metrics_mod.labelled(metrics_mod.COMPARE)


def _run_data(folder: runs.RunFolder, answers_round: int | None) -> dict[str, Any]:
    cfg = config_mod.load(folder.config_path)
    with open_store(folder.db_path) as store:
        info = store.run_info()
        rounds = [r for r in store.rounds() if r.status in ROUND_FINISHED]
        decisions = [{"round": d.round, "kind": d.kind, "reason": d.reason} for d in store.decisions()]
        metrics = {k: heldout.shown(m) for k, m in store.metrics().items()}
        for stage in store.stages():
            if stage.seconds is not None:
                metrics.setdefault(stage.round, {})[f"time/{stage.name}"] = stage.seconds
            if stage.peak_rss_mib is not None:
                metrics.setdefault(stage.round, {})[f"memory/{stage.name}"] = stage.peak_rss_mib
        evaluated = sorted(k for k, m in metrics.items() if "eval/length_mean" in m)
        k = answers_round if answers_round is not None else (evaluated[-1] if evaluated else None)
        answers, scored = {}, {}  # scored: the constrained ones, as the paired gain reads them
        if k is not None:
            for prompt, response in store.heldout_answers(k):
                answers[prompt.hash] = {"prompt": prompt.text, "constraints": prompt.constraints,
                                        "text": response.text, "tokens": response.tokens,
                                        "finish_reason": response.finish_reason,
                                        "checks": verifiers.check_all(prompt.constraints, response.text)}
                if prompt.constraints:
                    scored[prompt.hash] = heldout.Answer.of(prompt, response)
        return {"name": folder.name, "note": info.note if info else "", "recipe": cfg.run.recipe,
                "model": cfg.model.name, "config": config_mod.flat(cfg), "rounds_done": [r.k for r in rounds],
                "rejected": [r.k for r in rounds if r.status == "rejected"], "decisions": decisions,
                "metrics": metrics, "answers_round": k, "answers": answers, "scored": scored}


def compare(folders: list[runs.RunFolder], *, answers_round: int | None = None, all_settings: bool = False,
            answers_limit: int = 20) -> dict[str, Any]:
    """Everything the comparison shows, as plain data (JSON-serialisable)."""
    if len(folders) < 2:
        from selfalign.errors import UsageError

        raise UsageError("compare needs at least two runs: selfalign compare RUN_A RUN_B [RUN_C ...]")
    data = [_run_data(f, answers_round) for f in folders]
    names = [d["name"] for d in data]
    warnings = []
    if len({frozenset(d["answers"]) for d in data}) > 1:  # the held-out prompts each run was evaluated on
        warnings.append("the runs' held-out prompt sets differ; answers are compared on the prompts they share")
    if len({d["recipe"] for d in data}) > 1:
        warnings.append("the runs use different recipes (" + ", ".join(f"{d['name']}: {d['recipe']}" for d in data)
                        + ")")

    keys = sorted(set().union(*(d["config"] for d in data)))
    settings = []
    for key in keys:
        values = [d["config"].get(key) for d in data]
        differs = any(v != values[0] for v in values[1:])
        if differs or all_settings:
            settings.append({"key": key, "values": values, "differs": differs})

    rounds = sorted(set().union(*(d["metrics"] for d in data)))
    metric_names = METRICS + [(f"time/{s}", f"{s} seconds") for s in STAGES] + \
        [(f"memory/{s}", f"{s} peak MiB") for s in STAGES]
    metrics = []
    for name, label in metric_names:
        series = {d["name"]: {k: d["metrics"].get(k, {}).get(name) for k in rounds} for d in data}
        if any(v is not None for s in series.values() for v in s.values()):
            metrics.append({"name": name, "label": label, "rounds": rounds, "series": series})

    shared = set.intersection(*(set(d["answers"]) for d in data))
    joined = []
    for h in shared:
        cells = [d["answers"][h] for d in data]
        joined.append({"prompt": cells[0]["prompt"], "constraints": [c["id"] for c in cells[0]["constraints"]],
                       "answers": [{k: c[k] for k in ("text", "tokens", "finish_reason", "checks")} | {"run": n}
                                   for n, c in zip(names, cells, strict=True)],
                       "disagreement": _disagreement(cells)})
    joined.sort(key=lambda j: (-j["disagreement"], j["prompt"]))
    return {"runs": [{k: d[k] for k in ("name", "note", "recipe", "model", "rounds_done", "rejected", "decisions",
                                        "answers_round")} for d in data],
            "warnings": warnings, "settings": settings, "metrics": metrics, "paired": paired_gains(data),
            "answers": joined[:answers_limit] if answers_limit else joined, "answers_total": len(joined)}


def paired_gains(data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each later run's held-out satisfaction against the first run's, paired on the constrained prompts both
    answered (matched by prompt text, as the runs' prompt ids differ), with 95 % bootstrap intervals: whether
    one run beat another on the same prompts, which two intervals over each run's own round 0 cannot say."""
    out = []
    for d in data[1:]:
        gain = heldout.gain_figures(data[0]["scored"], d["scored"])  # keyed by prompt hash
        out.append({"run": d["name"], "round": d["answers_round"], "against": data[0]["name"],
                    "against_round": data[0]["answers_round"], "n": gain["n"],
                    **{key: gain[key].as_dict() for key in ("csr_prompt", "csr_instruction") if gain["n"]}})
    return out


def _disagreement(cells: list[dict[str, Any]]) -> float:
    """How much the runs' answers to one prompt differ: the spread of their constraint satisfaction
    (what a user compares runs on) plus, weighted less, how different the texts are."""
    rates = [verifiers.share_met(c["checks"]) for c in cells if c["checks"]]
    spread = (max(rates) - min(rates)) if rates else 0.0
    texts = [c["text"].split() for c in cells]
    similarity = min(difflib.SequenceMatcher(a=texts[0], b=t, autojunk=False).ratio() for t in texts[1:])
    return round(spread + 0.5 * (1 - similarity), 4)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def points(estimate: dict | None) -> str:
    """A gain as points with its interval, '-' when there is none."""
    return "-" if estimate is None else stats.Estimate(**estimate).fmt(100, 1, signed=True)


def to_markdown(result: dict[str, Any]) -> str:
    names = [r["name"] for r in result["runs"]]
    head = "| " + " | ".join(names) + " |"
    rule = "|" + "---|" * (len(names) + 1)
    out = ["# Comparison: " + " vs ".join(names), ""]
    for r in result["runs"]:
        rounds = ", ".join(map(str, r["rounds_done"])) or "none"
        rejected = f", rejected: {', '.join(map(str, r['rejected']))}" if r["rejected"] else ""
        out.append(f"- **{r['name']}** ({r['recipe']} on {r['model']}; rounds done: {rounds}{rejected}): "
                   f"{r['note'] or '(no note)'}")
    out.append("")
    for w in result["warnings"]:
        out.append(f"> warning: {w}")
    if result["warnings"]:
        out.append("")
    out += ["## Settings that differ" if not any(not s["differs"] for s in result["settings"]) else "## Settings",
            "", "| setting " + head, rule]
    out += [f"| {s['key']} | " + " | ".join(_cell(v) for v in s["values"]) + " |" for s in result["settings"]]
    if not result["settings"]:
        out.append("| (none) |" + " |" * len(names))
    out += ["", "## Metrics per round", ""]
    for m in result["metrics"]:
        out += [f"**{m['label']}** (`{m['name']}`)", "", "| round " + head, rule]
        for k in m["rounds"]:
            row = [m["series"][n].get(k) for n in names]
            if any(v is not None for v in row):
                out.append(f"| {k} | " + " | ".join(_cell(v) for v in row) + " |")
        out.append("")
    if any(r["decisions"] for r in result["runs"]):
        out += ["## Controller decisions", ""]
        for r in result["runs"]:
            out.append(f"**{r['name']}**" + ("" if r["decisions"] else ": none (controller off or no round yet)"))
            out += [f"- round {d['round']} {d['kind']}: {_cell(d['reason'])}" for d in r["decisions"]]
            out.append("")
    if result["paired"]:
        first = result["paired"][0]
        out += [f"## Held-out satisfaction, paired against {first['against']} round {first['against_round']}", "",
                "Paired on the constrained held-out prompts both runs answered; 95 % bootstrap intervals, in points.",
                "", "| run | round | paired prompts | prompt-level gain | instruction-level gain |",
                "|---|---|---|---|---|"]
        for p in result["paired"]:
            gains = [points(p.get(key)) for key in ("csr_prompt", "csr_instruction")]
            out.append(f"| {p['run']} | {_cell(p['round'])} | {p['n']} | {gains[0]} | {gains[1]} |")
        out.append("")
    rounds = ", ".join(f"{r['name']} round {r['answers_round']}" for r in result["runs"])
    out += [f"## Held-out answers where the runs disagree most ({len(result['answers'])} of "
            f"{result['answers_total']} shared prompts; {rounds})", ""]
    for j in result["answers"]:
        constraints = f" _(constraints: {', '.join(j['constraints'])})_" if j["constraints"] else ""
        out.append(f"### {_cell(j['prompt'])[:200]}{constraints}")
        out.append("")
        for a in j["answers"]:
            checks = " ".join(("✔ " if ok else "✘ ") + cid for cid, ok in a["checks"].items())
            text = _cell(a["text"])
            text = text if len(text) <= 400 else text[:399] + "…"
            out.append(f"- **{a['run']}** ({a['tokens']} tokens{', ' + checks if checks else ''}): {text}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=1)

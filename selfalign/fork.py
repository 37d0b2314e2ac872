"""Fork a run: a new run that starts from another run's stored work, at one stage of one round.

An ablation of a late stage (which answer is rejected, the learning rate, the epochs) does not need new
prompts and samples: with the same seed they would come out the same, and on 2 CPU cores they cost
half a round. `selfalign init NEW --fork RUN --at 1:pairs --set pairs.rejected=finished` copies RUN's
database and adapters, keeps round 1's instruct, generate and judge work, drops everything from round
1's pairs stage on (and every later round), and applies the new settings; `selfalign run NEW` then
goes on from the pairs stage. A setting that belongs to a kept stage is refused, because the kept
work did not use it: fork earlier instead.

What each stage writes, and so what a fork drops when it starts at or before that stage:
instruct: the round's new prompts; generate: the round's samples; judge: their verifications,
judgements, demonstrations and judge/ and verify/ metrics; correct: the corrections (kind 'correction') and
correct/ metrics (the corrector it used, trained on earlier rounds, is kept); pairs: the pairs, repaired copies
(kind 'repair') and pairs/ metrics; train: the train steps, the adapter and train/ metrics;
evaluate: the round's held-out answers, eval/ metrics and the controller's decisions.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from selfalign.errors import UsageError
from selfalign.runs import RunFolder
from selfalign.stages import STAGES

METRIC_PREFIXES = {"instruct": ("instruct/",), "generate": ("generate/",), "judge": ("judge/", "verify/"),
                   "correct": ("correct/",), "pairs": ("pairs/",), "train": ("train/",), "evaluate": ("eval/",)}
SECTION_OF = {"evaluate": "eval"}  # a stage's config section, where the names differ
# settings that change what every stage does: a fork cannot keep any stored work under new values
WHOLE_RUN_KEYS = ("model.", "run.recipe", "run.prompting")


def parse_at(text: str) -> tuple[int, str]:
    """'1:pairs' -> (1, 'pairs'); a bare round means its first stage."""
    round_text, _, stage = text.partition(":")
    stage = stage or STAGES[0]
    if not round_text.isdigit() or int(round_text) < 1 or stage not in STAGES:
        raise UsageError(f"--at {text!r} is not ROUND:STAGE; write for example --at 1:pairs (rounds from 1, "
                         f"stages {', '.join(STAGES)})")
    return int(round_text), stage


def check_sets(sets: list[str] | tuple[str, ...], stage: str) -> None:
    """Refuse a setting that a kept stage would have used."""
    kept = STAGES[:STAGES.index(stage)]
    for item in sets:
        key = item.split("=", 1)[0].strip()
        if key.startswith(WHOLE_RUN_KEYS):
            raise UsageError(f"--set {key} changes every stage, so a fork cannot keep any stored work; start a "
                             "new run with `selfalign init` instead")
        for name in kept:
            if key.startswith(SECTION_OF.get(name, name) + "."):
                raise UsageError(f"--set {key} belongs to the {name} stage, whose work the fork copies unchanged; "
                                 f"fork at --at ROUND:{name} or earlier to change it")


def check_source(source: RunFolder, k: int, stage: str) -> None:
    """The rounds before k must be finished and round k's stages before `stage` done."""
    from selfalign.store import open_store

    with open_store(source.db_path) as store:
        rounds = {r.k: r for r in store.rounds()}
        unfinished = [j for j in range(1, k) if j not in rounds or rounds[j].status not in ("done", "rejected")]
        if unfinished:
            raise UsageError(f"run {source.name!r} has not finished round {unfinished[0]}; fork at a round it "
                             "finished, or run it further first")
        done = {s.name for s in store.stages(k) if s.status == "done"}
        missing = [name for name in STAGES[:STAGES.index(stage)] if name not in done]
        if missing:
            raise UsageError(f"round {k} of {source.name!r} has no finished {missing[0]} stage to keep; fork at "
                             f"--at {k}:{missing[0]} or earlier")


def copy_into(staging: RunFolder, source: RunFolder, k: int, stage: str, *, name: str, config_toml: str,
              note: str, version: str) -> None:
    """Fill a new run folder: a consistent copy of the source database (even while the source runs),
    trimmed to the work before round k's `stage`, and the adapters that work produced."""
    src = sqlite3.connect(str(source.db_path))
    dst = sqlite3.connect(str(staging.db_path))
    try:
        src.backup(dst)
    finally:
        src.close()
        dst.close()
    later = STAGES[STAGES.index(stage):]
    last_adapter = k if "train" not in later else k - 1
    for j in range(1, last_adapter + 1):
        if source.round_dir(j).is_dir():
            shutil.copytree(source.round_dir(j), staging.round_dir(j))

    from selfalign.store import open_store
    from selfalign.store.store import now

    with open_store(staging.db_path) as store, store.transaction():
        trim(store.db, k, later)
        store.db.execute("UPDATE runs SET name = ?, config_toml = ?, note = ?, created_at = ?, "
                         "selfalign_version = ? WHERE id = 1", [name, config_toml, note, now(), version])
    with open_store(staging.db_path) as store:
        store.log_event("info", f"forked from run {source.name!r} at round {k}, stage {stage}", round=k,
                        stage=stage, data={"source": source.name, "round": k, "stage": stage})


def trim(db, k: int, later: tuple[str, ...]) -> None:
    """Delete what round k's `later` stages and every round after k wrote (see the module docstring)."""
    x = db.execute
    whole = later[0] == STAGES[0]  # from instruct on: round k goes entirely
    kept_prefixes = tuple(p for name in STAGES if name not in later for p in METRIC_PREFIXES[name])
    conditions = ["r.round > :k"]
    if whole:
        conditions.append("r.round = :k")
    else:
        conditions.append("(r.round = :k AND p.split = 'heldout')")  # evaluate is always redone
        if "generate" in later:
            conditions.append("(r.round = :k AND p.split = 'train')")
        if "correct" in later:
            conditions.append("(r.round = :k AND r.kind = 'correction')")
        if "pairs" in later:
            conditions.append("(r.round = :k AND r.kind = 'repair')")
    x("CREATE TEMP TABLE gone (id INTEGER PRIMARY KEY)")
    x(f"INSERT INTO gone SELECT r.id FROM responses r JOIN prompts p ON p.id = r.prompt_id "
      f"WHERE {' OR '.join(conditions)}", {"k": k})
    judged = "judge" in later
    round_k = "SELECT id FROM responses WHERE round = :k"
    x(f"DELETE FROM judgements WHERE response_id IN gone OR other_id IN gone"
      f"{' OR response_id IN (' + round_k + ')' if judged else ''}", {"k": k})
    x(f"DELETE FROM verifications WHERE response_id IN gone"
      f"{' OR response_id IN (' + round_k + ')' if judged else ''}", {"k": k})
    x("DELETE FROM pairs WHERE chosen_id IN gone OR rejected_id IN gone OR round > :k"
      + (" OR round = :k" if "pairs" in later else ""), {"k": k})
    x("DELETE FROM responses WHERE id IN gone")
    x("DROP TABLE gone")
    x("DELETE FROM prompts WHERE split = 'train' AND (round > :k" + (" OR round = :k)" if whole else ")"), {"k": k})
    x("DELETE FROM demonstrations WHERE round > :k" + (" OR round = :k" if judged else ""), {"k": k})
    x("DELETE FROM train_steps WHERE round > :k" + (" OR round = :k" if "train" in later else ""), {"k": k})
    metrics_k = " OR ".join(["name LIKE ?"] * len(kept_prefixes)) or "0"
    x(f"DELETE FROM metrics WHERE round > ? OR (round = ? AND NOT ({metrics_k}))",
      [k, k, *(p + "%" for p in kept_prefixes)])
    x("DELETE FROM decisions WHERE round >= :k", {"k": k})
    x("DELETE FROM overrides WHERE round >= :k", {"k": k})
    stages = ", ".join(f"'{name}'" for name in later)
    x(f"DELETE FROM events WHERE round > :k OR (round = :k AND (stage IN ({stages}) OR stage = 'controller'))",
      {"k": k})
    x(f"DELETE FROM stages WHERE round > :k OR (round = :k AND name IN ({stages}))", {"k": k})
    if whole:
        x("DELETE FROM rounds WHERE k >= :k", {"k": k})
    else:
        x("DELETE FROM rounds WHERE k > :k", {"k": k})
        x("UPDATE rounds SET status = 'running', finished_at = NULL, seconds = NULL WHERE k = :k", {"k": k})
    x("DELETE FROM controls")
    x("DELETE FROM heartbeat")


def fork(source: RunFolder, name: str, at: str, sets: list[str] | tuple[str, ...], *, root: str | Path | None = None,
         note: str = "", force: bool = False, version: str = "") -> RunFolder:
    """Create run `name` (in `root`) from `source` at ROUND:STAGE with `sets` applied; returns the new folder."""
    from selfalign import config, runs

    if runs.check_name(name) == source.name:
        raise UsageError(f"a fork needs a name of its own; {name!r} is the run it copies")
    k, stage = parse_at(at)
    check_sets(sets, stage)
    check_source(source, k, stage)
    note = note or f"fork of {source.name} at round {k}, stage {stage}: {' '.join(sets) or 'same settings'}"
    # the source's own choices, then these: the same resolution `init --set` makes (derived defaults follow)
    mine = config.load(source.config_path)
    cfg = config.build(recipe=mine.run.recipe, sets=[*config.changes(mine), *sets,
                                                     f"run.note={config.toml_value(note)}"])
    toml = config.dumps(cfg)
    return runs.create(name, toml, root=root, force=force, fill=lambda staging: copy_into(
        staging, source, k, stage, name=name, config_toml=toml, note=note, version=version))

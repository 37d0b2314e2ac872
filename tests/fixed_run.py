"""A run database with fixed content and fixed timestamps, so screens render the same every time
(snapshot tests). Written through the Store like the loop writes it; only the clocks are pinned."""

import math
import sqlite3

from selfalign import config, runs
from selfalign.store import open_store
from selfalign.store.rows import NewDecision, NewJudgement, NewPair, NewPrompt, NewResponse, TrainStep

FIXED_TS = "2026-01-01T12:00:00.000+00:00"

PROMPTS = [
    ("Describe a rainy street in two sentences.", [{"id": "lowercase", "params": {}}]),
    ("List three uses for a paper clip.", [{"id": "bullet_count", "params": {"n": 3}}]),
    ("Explain what a hash table is.", []),
]
ANSWERS = [
    ["rain taps the dark street. puddles hold the lamps.", "The rain falls on the street and the cars pass.",
     "rain on the street, quiet and grey.", "Rain. Street. Night."],
    ["* hold papers\n* reset a phone\n* make a hook", "You can use a paper clip to hold papers.",
     "* hold papers\n* pick a lock", "* bookmark\n* zip pull\n* hook"],
    ["A hash table maps keys to values through a hash function.", "It is a table.",
     "A structure that stores key-value pairs in buckets chosen by hashing the key.", "Hash tables are fast."],
]


def build(root) -> runs.RunFolder:
    cfg = config.build(sets=["run.rounds=3"])
    folder = runs.create("fixed", config.dumps(cfg), root=root, note="snapshot fixture")
    with open_store(folder.db_path) as store:
        for k in (0, 1):
            store.start_round(k, None)
        heldout = store.add_prompts([NewPrompt("Say hello in French.", "heldout", split="heldout")])
        store.add_response(NewResponse(heldout[0], 0, "base", 0, "Bonjour !", 4, "stop", -0.8, kind="eval"))
        store.finish_round(0, "done")
        ids = store.add_prompts([NewPrompt(text, "self", constraints=c, round=1) for text, c in PROMPTS])
        for stage, total in (("instruct", 3), ("generate", 12), ("judge", 12), ("correct", 0), ("pairs", 12)):
            store.start_stage(1, stage, total=total)
            store.stage_progress(1, stage, total)
            store.finish_stage(1, stage, "done")
        store.start_stage(1, "train", total=20)
        store.stage_progress(1, "train", 12)
        for p, (prompt_id, answers) in enumerate(zip(ids, ANSWERS, strict=True)):
            response_ids = []
            for i, text in enumerate(answers):
                rid = store.add_response(NewResponse(prompt_id, 1, "base", i, text, len(text.split()), "stop",
                                                     -1.0 - 0.1 * i - 0.05 * p))
                response_ids.append(rid)
                store.add_judgement(NewJudgement(rid, "self", "additive5", float((i + p) % 5), True,
                                                 f"Score: {(i + p) % 5}"))
                store.add_judgement(NewJudgement(rid, "likelihood", "mean_logprob", -1.0 - 0.1 * i, True))
                constraints = PROMPTS[p][1]
                if constraints:
                    store.add_verifications(rid, {constraints[0]["id"]: i % 2 == 0})
            store.add_pair(NewPair(1, prompt_id, response_ids[0], response_ids[1], 0.5 + 0.1 * p, "best-vs-worst",
                                   {"chosen": {"combined": 0.9, "verifiers": 1.0},
                                    "rejected": {"combined": 0.4, "verifiers": 0.0}}))
        for step in range(12):
            store.add_train_step(TrainStep(1, step, 0.69 * math.exp(-step / 8) + 0.02 * (step % 3),
                                           reward_margin=0.05 * step + 0.01 * (step % 2), accuracy=0.5 + step / 30,
                                           lr=5e-5, grad_norm=1.0, tokens_per_s=120.0))
        for k, values in ((0, (0.30, 0.45, None, 98.0)), (1, (0.35, 0.50, 0.56, 90.0))):
            for name, value in zip(("eval/csr_prompt", "eval/csr_instruction", "eval/win_rate", "eval/length_mean"),
                                   values, strict=True):
                store.set_metric(k, name, value)
        store.set_metric(1, "judge/position_bias", 0.8)
        store.set_metric(1, "judge/collapse", 0.0)
        store.set_metric(1, "pairs/count", 3.0)
        store.set_decisions(0, [NewDecision(0, "promote", "held-out score 0.700: kept", {"score": 0.7})])
        store.set_decisions(1, [NewDecision(1, "judge", "rubric self-judge unhealthy (position bias 0.80): switched "
                                            "off from the next round", {"overrides": {"judge.rubric": "none"}})])
        store.log_event("info", "started", round=1, stage="train")
        store.log_event("warning", "judge health: position bias 0.80", round=1, stage="judge")
    _pin_clocks(folder)
    return folder


def _pin_clocks(folder) -> None:
    conn = sqlite3.connect(folder.db_path)
    with conn:
        for table, columns in {"rounds": ("started_at", "finished_at"), "stages": ("started_at", "finished_at"),
                               "responses": ("created_at",), "judgements": ("created_at",),
                               "train_steps": ("created_at",), "metrics": ("created_at",), "events": ("ts",),
                               "decisions": ("created_at",),
                               "prompts": ("created_at",)}.items():
            for column in columns:
                conn.execute(f"UPDATE {table} SET {column} = ? WHERE {column} IS NOT NULL", [FIXED_TS])
        conn.execute("UPDATE stages SET seconds = 61.0 WHERE finished_at IS NOT NULL")
        conn.execute("UPDATE stages SET seconds = 45.0 WHERE finished_at IS NULL")  # time spent so far
        conn.execute("UPDATE rounds SET seconds = 300.0 WHERE seconds IS NOT NULL")
    conn.close()

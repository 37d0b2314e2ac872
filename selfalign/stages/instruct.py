"""Stage `instruct`: the round's training prompts (I-SHEEP self-instruct plus ACT constraints).

1. The held-out prompts are loaded into the store (split 'heldout'); they are never trained on.
2. A few seed tasks not used before join the round's training prompts (a task near a held-out prompt
   never does). With instruct.prompts_per_round = 0 and a seed_file of your own, a run trains on your
   tasks only, instruct.seed_prompts_per_round of them per round.
3. The policy writes new instructions from a few sampled seed demos. An instruction is dropped
   if it is too short or too long, leaks the template, or is a near-duplicate (ROUGE-L above the
   threshold) of anything the run already holds, held-out prompts included.
4. A configurable share of the kept prompts gets 1..max_constraints compatible verifiable
   constraints, stored beside the text.
Every prompt is stored as soon as it is accepted, so a killed stage resumes with what it had.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter

from selfalign import prompts, verifiers
from selfalign.rouge import RougeIndex
from selfalign.stages import StageContext, derive_seed, policy_request
from selfalign.store.rows import NewPrompt

NAME = "instruct"
MAX_ATTEMPTS = 4  # batches of synthesis requests before the stage settles for fewer prompts
OVERSAMPLE = 1.5  # requests per missing prompt: many answers are filtered out
LEAK_RE = re.compile(r"\{\{|\}\}|\btask\s*\d+\s*:|example tasks|people have asked|reply with the task"
                     r"|without answering", re.IGNORECASE)
PREFIX_RE = re.compile(r"^(?:[*#>\s]*)(?:(?:new\s+)?(?:task|instruction)\s*\d*\s*[:.)\-]|\d+\s*[.):])\s*",
                       re.IGNORECASE)


def run(ctx: StageContext) -> None:
    cfg, store, k = ctx.config, ctx.store, ctx.round
    heldout = prompts.read_prompt_file(cfg.eval.heldout_file, ctx.run_dir)
    store.add_prompts([NewPrompt(h["prompt"], "heldout", "heldout", h["constraints"]) for h in heldout])
    seeds = prompts.read_seed_tasks(cfg.instruct.seed_file, ctx.run_dir)
    _add_seed_prompts(ctx, seeds, heldout)

    target = cfg.instruct.prompts_per_round
    written = {p.text for p in store.prompts(split="train", round=k, source="self")}
    ctx.report(NAME, len(written), target)
    if len(written) >= target:
        return
    template = prompts.load_template(cfg.instruct.template, ("demos",), ctx.run_dir)
    index = RougeIndex()
    for text in [p.text for p in store.prompts() if p.text not in written] + [s["instruction"] for s in seeds]:
        index.add(text)

    rejected: Counter[str] = Counter()
    kept = 0
    to_replay = set(written)  # each stored instruction counts once; a repeat is judged like any new text

    def accept(result) -> None:
        """Judge each written instruction the moment the engine finishes it, so progress moves with the
        batch instead of jumping at its end; results past the target are dropped. A resumed stage replays
        the same requests from the start: an instruction it already stored counts as kept again (and takes
        its constraints' draws), so it ends with the prompts an uninterrupted stage would have kept."""
        nonlocal kept
        if kept >= target:
            return
        if result.finish_reason == "skipped":
            rejected["prompt too long"] += 1
            return
        instruction = extract_instruction(result.text)
        replayed = instruction in to_replay
        to_replay.discard(instruction)
        reason = None if replayed else reject_reason(instruction, index, cfg.instruct.min_words,
                                                     cfg.instruct.max_words, cfg.instruct.rouge_threshold)
        if reason:
            rejected[reason] += 1
            return
        constraints = attach_constraints(rng, cfg, ctx.constraint_weights)
        if not replayed:
            store.add_prompts([NewPrompt(instruction, "self", "train", constraints, round=k)])
        index.add(instruction)
        kept += 1
        ctx.report(NAME, max(kept, len(written)), target)

    for attempt in range(MAX_ATTEMPTS):
        if kept >= target:
            break
        rng = random.Random(derive_seed(cfg.run.seed, k, NAME, attempt, kept))
        count = math.ceil((target - kept) * OVERSAMPLE) + 2
        requests = []
        for i in range(count):
            demos = rng.sample(seeds, min(cfg.instruct.demos, len(seeds)))
            numbered = "\n".join(f"Task {n}: {d['instruction']}" for n, d in enumerate(demos, start=1))
            text = template.render(demos=numbered, next=len(demos) + 1)
            requests.append(policy_request(ctx, text, key=i, n=1, seed=derive_seed(cfg.run.seed, k, attempt, i),
                                           max_new_tokens=cfg.instruct.max_new_tokens,
                                           temperature=cfg.instruct.temperature, top_p=cfg.instruct.top_p))
        # one engine call: the batch stays full across requests, and the call ends once enough are kept
        ctx.check_stop()
        ctx.engine.generate(requests, adapter=ctx.adapter, on_result=accept,
                            should_stop=lambda: kept >= target or ctx.should_stop())
        ctx.check_stop()
    have = store.count_prompts(split="train", round=k, source="self")
    store.log_event("info" if have >= target else "warning",
                    f"instruct: {have} of {target} new prompts kept", round=k, stage=NAME,
                    data={"kept": have, "target": target, "rejected": dict(rejected)})


def _add_seed_prompts(ctx: StageContext, seeds: list[dict], heldout: list[dict]) -> None:
    """Seed tasks join the training prompts a few per round, in a fixed shuffled order, each once; a task
    near a held-out prompt (ROUGE-L above instruct.rouge_threshold) never does, so a seed file of the
    user's own cannot leak the benchmark into training."""
    cfg, store, k = ctx.config, ctx.store, ctx.round
    if not cfg.instruct.seed_prompts_per_round or store.count_prompts(split="train", round=k, source="seed"):
        return
    used = {p.text for p in store.prompts(split="train", source="seed")}
    index = RougeIndex()
    for h in heldout:
        index.add(h["prompt"])
    threshold = cfg.instruct.rouge_threshold
    near = {s["instruction"] for s in seeds if index.max_score(s["instruction"], threshold) > threshold}
    if near:
        store.log_event("warning", f"instruct: {len(near)} tasks of {cfg.instruct.seed_file} are near a held-out "
                        f"prompt (ROUGE-L above {threshold}) and are never trained on", round=k, stage=NAME,
                        data={"near_heldout": len(near)})
    order = list(seeds)
    random.Random(cfg.run.seed).shuffle(order)
    fresh = [s for s in order if s["instruction"] not in used | near][: cfg.instruct.seed_prompts_per_round]
    rng = random.Random(derive_seed(cfg.run.seed, k, "seed-constraints"))
    weights = ctx.constraint_weights
    store.add_prompts([NewPrompt(s["instruction"], "seed", "train", attach_constraints(rng, cfg, weights), round=k)
                       for s in fresh])


def attach_constraints(rng: random.Random, cfg, weights: dict[str, float] | None = None) -> list[dict]:
    """ACT: a share of prompts carries 1..max_constraints compatible verifiable constraints, drawn by the
    controller's curriculum weights when it set some."""
    if cfg.instruct.max_constraints == 0 or rng.random() >= cfg.instruct.constraint_share:
        return []
    return verifiers.sample(rng, rng.randint(1, cfg.instruct.max_constraints), weights)


def extract_instruction(text: str) -> str:
    """The instruction in a policy's reply: the first line that is not a preamble, without 'Task 4:'."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in lines:
        if line.endswith(":") and len(line.split()) <= 8:  # "Here is a new task:"
            continue
        cleaned = PREFIX_RE.sub("", line).strip().strip('"“”*').strip()
        if cleaned:
            return cleaned
    return ""


def reject_reason(instruction: str, index: RougeIndex, min_words: int, max_words: int,
                  threshold: float) -> str | None:
    words = len(instruction.split())
    if words < min_words:
        return "too short"
    if words > max_words:
        return "too long"
    if LEAK_RE.search(instruction):
        return "leaks the template"
    if instruction.rstrip().endswith(":"):
        return "incomplete"  # "Here is a list of tasks:" announces something it never gives
    if index.is_near_duplicate(instruction, threshold):
        return "near-duplicate"
    return None

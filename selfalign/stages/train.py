"""Stage `train`: LoRA-train on the round's pairs (or SFT set) and save rounds/<k>/adapter.

Each round starts from the previous round's adapter or from the base (train.init_from; I-SHEEP
retrains from the base); the DPO reference is the base model or the previous policy
(train.reference). Every optimizer step is written to train_steps as it happens.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

from selfalign import config as config_mod
from selfalign import verifiers
from selfalign.runs import RunFolder
from selfalign.stages import StageContext, StageStopped, policy_request
from selfalign.store.rows import TrainStep
from selfalign.training.trainer import Example, StepRecord, StopTraining, TrainJob, optimizer_steps, train

NAME = "train"


def build_examples(ctx: StageContext) -> list[Example]:
    """Token ids for the round's pairs, formatted exactly as the policy saw the prompts."""
    store, cfg = ctx.store, ctx.config
    # a data-parallel round's launched processes load the model; this one only tokenizes
    engine = ctx.engine.for_training(cfg, weights=cfg.train.processes <= 1)
    tokenizer = engine.tokenizer
    responses = {r.id: r for r in store.responses(round=ctx.round)}
    prompts: dict[int, list[int]] = {}

    def prompt_ids(prompt_id: int) -> list[int]:
        if prompt_id not in prompts:
            p = store.prompt(prompt_id)
            request = policy_request(ctx, verifiers.attach(p.text, p.constraints), key=0, n=1, seed=0,
                                     max_new_tokens=1, temperature=0.0, top_p=1.0)
            prompts[prompt_id] = engine.prompt_ids(request.messages if request.messages is not None else request.prompt)
        return prompts[prompt_id]

    def response_ids(response_id: int) -> list[int]:
        r = responses[response_id]
        ids = tokenizer(r.text, add_special_tokens=False)["input_ids"]
        # a response that ended on its own teaches the model to stop; a truncated one does not
        return ids + [tokenizer.eos_token_id] if r.finish_reason == "stop" else ids

    pairs = store.pairs(ctx.round)
    if cfg.train.loss == "rrhf":
        wins: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        for p in pairs:
            wins[p.prompt_id][p.chosen_id] += 1
            wins[p.prompt_id].setdefault(p.rejected_id, 0)
        return [Example(prompt_ids(pid), [], ranked=[response_ids(rid) for rid in sorted(w, key=lambda r: -w[r])])
                for pid, w in wins.items() if len(w) >= 2]
    return [Example(prompt_ids(p.prompt_id), response_ids(p.chosen_id),
                    None if p.rejected_id is None else response_ids(p.rejected_id),
                    length_term=p.rejected_id is not None and length_term(cfg, responses[p.rejected_id]))
            for p in pairs if cfg.train.loss == "sft" or p.rejected_id is not None]


def length_term(cfg, rejected) -> bool:
    """Whether R-DPO's length term applies to a pair with this rejected answer (train.length_margin_on):
    a loop's length, or a cut-off answer's, is not verbosity, so rejecting it may keep DPO's full pull."""
    if cfg.train.length_margin_on == "finished":
        return verifiers.finished_cleanly(rejected.text, rejected.finish_reason)
    if cfg.train.length_margin_on == "unless-loop":
        return not verifiers.degenerate(rejected.text)
    return True


def _train_distributed(ctx: StageContext, examples: list[Example], out_dir: Path, run_dir: Path,
                       init_adapter: str | None, reference_adapter: str | None, on_step) -> Path:
    """train.processes > 1: the same training in that many processes (training/distributed.py)."""
    from selfalign.training import distributed

    cfg, k = ctx.config, ctx.round
    folder = distributed.write_job(out_dir / "distributed", examples, cfg, seed=cfg.run.seed + k, out_dir=out_dir,
                                   init_adapter=init_adapter, reference_adapter=reference_adapter)
    log_path = RunFolder(run_dir).logs_dir / f"round-{k}-train-processes.txt"
    ctx.store.log_event("info", f"train: {cfg.train.processes} processes under {cfg.train.launcher} "
                        f"(output in {log_path.relative_to(run_dir)})", round=k, stage=NAME)
    distributed.launch(folder, cfg, on_step=on_step, should_stop=ctx.should_stop, log_path=log_path)
    return out_dir / "adapter"


def run(ctx: StageContext) -> str | None:
    """Train and return the new adapter's path; None when there was nothing to train on."""
    cfg, store, k, run_dir = ctx.config, ctx.store, ctx.round, ctx.run_dir
    ctx.engine.release_memory()  # vLLM hands the GPU to the trainer until its next call
    examples = build_examples(ctx)
    if not examples:
        store.log_event("warning", f"train: round {k} has no pairs to train on; the policy stays as it was",
                        round=k, stage=NAME)
        return None
    previous = ctx.adapter
    steps_total = optimizer_steps(len(examples), cfg.train, cfg.train.processes)
    ctx.report(NAME, 0, steps_total)

    def on_step(record: StepRecord) -> None:
        store.add_train_step(TrainStep(round=k, **dataclasses.asdict(record)))
        ctx.report(NAME, record.step + 1, steps_total)

    out_dir = RunFolder(run_dir).round_dir(k)
    init_adapter = previous if cfg.train.init_from == "previous" else None
    reference_adapter = previous if cfg.train.reference == "previous" else None
    try:
        if cfg.train.processes > 1:
            adapter = _train_distributed(ctx, examples, out_dir, run_dir, init_adapter, reference_adapter, on_step)
        else:
            engine = ctx.engine.for_training(cfg)
            job = TrainJob(examples, cfg.train, out_dir, pad_id=engine.pad_id, seed=cfg.run.seed + k,
                           init_adapter=init_adapter, reference_adapter=reference_adapter)
            adapter = train(engine.base, job, on_step=on_step, should_stop=ctx.should_stop)
    except StopTraining:
        raise StageStopped() from None
    # the configuration this round trained with: config.toml plus the controller's overrides
    (adapter / "selfalign_config.toml").write_text(config_mod.dumps(cfg), encoding="utf-8")
    steps = store.train_steps(k)
    if steps:
        store.set_metric(k, "train/loss_first", steps[0].loss)
        store.set_metric(k, "train/loss_last", steps[-1].loss)
        store.set_metric(k, "train/examples", float(len(examples)))
    return str(adapter)

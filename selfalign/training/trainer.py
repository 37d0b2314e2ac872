"""The LoRA trainer: one round of DPO / IPO / LN-DPO / SFT / RRHF on torch + peft, top to bottom.

What makes it fast on a CPU, compared with a general trainer:
  - reference log-probs are computed once per round (and saved, so a resumed round reuses them);
  - log-probs are computed only at response positions: the model's body runs on every token, but
    the vocabulary projection and log-softmax only where a response token is predicted;
  - chosen and rejected go through the model in one forward pass;
  - examples are bucketed by length, so batches carry little padding;
  - fp32 on CPU (bf16 is emulated there), bf16 autocast on CUDA.
It checkpoints every `checkpoint_every` optimizer steps (adapter, optimizer, scheduler, RNG), so a
killed round resumes and reaches the same adapter as an uninterrupted one.

Data parallel (`train.processes` > 1, see training/distributed.py): every process holds the whole
model, takes its share of each optimizer step's micro-batches, and the LoRA gradients (a few MB) are
summed with one all-reduce per step. Every process then takes the same optimizer step, so the copies
stay identical without DDP's hooks (which would also need the model's own forward, not the
response-position shortcut above).
"""

from __future__ import annotations

import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from selfalign.config_sections import TrainSection
from selfalign.training import checkpoints, losses
from selfalign.training.batching import length_batches, split, tokens_of
from selfalign.training.logps import common_sums, response_logps, sums
from selfalign.training.sharing import sharing_copy

CHECKPOINT_EVERY = 10  # optimizer steps between checkpoints


@dataclass
class Example:
    """Token ids of one training item. Preference: chosen + rejected; SFT: chosen only;
    RRHF: `ranked`, best first."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int] | None = None
    ranked: list[list[int]] | None = None
    length_term: bool = True  # R-DPO's length term applies to this pair (the train stage reads train.length_margin_on)

    def sequences(self) -> list[list[int]]:
        if self.ranked:
            return self.ranked
        return [self.chosen] + ([self.rejected] if self.rejected is not None else [])


class StopTraining(Exception):
    """A stop was requested; the last checkpoint lets the next run resume."""


class SingleProcess:
    """The process group of a one-process run: every collective is the identity."""

    rank, world = 0, 1

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def barrier(self) -> None:
        pass


class TorchDistributed(SingleProcess):
    """The default torch.distributed group (gloo on CPU, nccl on CUDA), already initialised; `device` is
    where its collectives run (nccl reduces CUDA tensors only)."""

    def __init__(self, device: torch.device) -> None:
        import torch.distributed as dist

        self._dist, self.device = dist, device
        self.rank, self.world = dist.get_rank(), dist.get_world_size()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        moved = tensor.to(self.device)
        self._dist.all_reduce(moved, op=self._dist.ReduceOp.SUM)
        return moved.to(tensor.device)

    def barrier(self) -> None:
        self._dist.barrier()


def optimizer_steps(examples: int, cfg: TrainSection, processes: int = 1) -> int:
    """Optimizer steps a round takes: batches per epoch, grouped by accumulation and processes, times epochs."""
    return math.ceil(math.ceil(examples / cfg.batch_size) / (cfg.grad_accum * processes)) * cfg.epochs


def lr_at(step: int, total: int, cfg: TrainSection) -> float:
    warmup = int(cfg.warmup_ratio * total)
    if warmup and step < warmup:
        return cfg.learning_rate * (step + 1) / warmup
    if cfg.scheduler == "constant" or total <= warmup:
        return cfg.learning_rate
    progress = (step - warmup) / max(1, total - warmup)
    if cfg.scheduler == "linear":
        return cfg.learning_rate * max(0.0, 1 - progress)
    return cfg.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class TrainJob:
    """What one training run learns from and where it writes: everything train() needs besides the model."""

    examples: list[Example]
    cfg: TrainSection
    out_dir: str | Path  # gets adapter/ (and checkpoint/, reference.pt while it runs)
    pad_id: int
    seed: int = 0
    init_adapter: str | None = None  # continue from this adapter (None: a fresh LoRA)
    reference_adapter: str | None = None  # the DPO reference is base + this adapter (None: the base model)
    checkpoint_every: int = CHECKPOINT_EVERY  # optimizer steps between resumable checkpoints (0: none)


@dataclass
class StepRecord:
    """One optimizer step's figures, as train() reports them (the train stage stores them for its round)."""

    step: int
    loss: float
    rewards_chosen: float | None = None
    rewards_rejected: float | None = None
    reward_margin: float | None = None
    accuracy: float | None = None
    lr: float | None = None
    grad_norm: float | None = None
    tokens_per_s: float | None = None


def train(base_model, job: TrainJob, *, on_step: Callable[[StepRecord], None] | None = None,
          should_stop: Callable[[], bool] = lambda: False, group: SingleProcess | None = None) -> Path:
    """Train a LoRA adapter on the job's examples and save it to out_dir/adapter (peft format); return that path.

    `group`: the process group of a data-parallel round; every process calls train() with the same
    job, and only rank 0 writes files and calls on_step; should_stop is asked on rank 0 and its
    answer shared.
    """
    # peft freezes the base weights of the copy it wraps, and the copy shares them with base_model
    trainable = [(param, param.requires_grad) for param in base_model.parameters()]
    try:
        return _train(base_model, job, on_step, should_stop, group)
    finally:
        for param, flag in trainable:
            param.requires_grad_(flag)


def _train(base_model, job: TrainJob, on_step, should_stop, group) -> Path:
    from peft import LoraConfig, PeftModel, get_peft_model

    examples, cfg, pad_id, seed = job.examples, job.cfg, job.pad_id, job.seed
    init_adapter, reference_adapter, checkpoint_every = job.init_adapter, job.reference_adapter, job.checkpoint_every
    out_dir = job.out_dir
    group = group or SingleProcess()
    main = group.rank == 0
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "checkpoint"
    torch.manual_seed(seed)  # the same fresh LoRA weights in every process
    random.seed(seed)
    model = sharing_copy(base_model)  # LoRA layers are injected in place; the engine keeps its own tree
    if init_adapter:
        model = PeftModel.from_pretrained(model, init_adapter, is_trainable=True)
    else:
        model = get_peft_model(model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                 target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM"))
    recompute = _recompute_switch(model, cfg)
    if cfg.loss != "sft" and cfg.loss != "rrhf":
        reference = _reference(model, base_model, examples, cfg, pad_id, out_dir, reference_adapter, init_adapter,
                               group, lambda: main and should_stop())
    else:
        reference = None

    device = next(model.parameters()).device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else _null()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    total_steps = optimizer_steps(len(examples), cfg, group.world)
    per_step = cfg.grad_accum * group.world  # micro-batches in one optimizer step, over all processes
    step = 0
    if (checkpoint / "state.pt").is_file():
        step = checkpoints.restore(model, optimizer, checkpoint)

    model.train()
    for epoch in range(cfg.epochs):
        batches = length_batches(examples, cfg.batch_size, seed, epoch, cfg.packing)
        for epoch_step, start in enumerate(range(0, len(batches), per_step)):
            if epoch * math.ceil(len(batches) / per_step) + epoch_step < step:
                continue  # finished before the checkpoint we resumed from
            if group.sum(torch.tensor([float(main and should_stop())]))[0] > 0:
                raise StopTraining()
            # dropout draws depend only on (seed, step, process), so a resumed round repeats them
            torch.manual_seed(seed * 1_000_003 + step * 101 + group.rank)
            started = time.perf_counter()
            step_batches = batches[start:start + per_step]
            pairs = sum(len(b) for b in step_batches)
            # stats: loss, chosen, rejected, accuracy (weighted by pairs), tokens
            stats = torch.zeros(5, dtype=torch.float64)
            mine = [chunk for batch in step_batches[group.rank::group.world]
                    for chunk in split(batch, examples, cfg.micro_batch_tokens, cfg.packing)]
            for batch in mine:
                recompute(cfg.gradient_checkpointing or over_budget([examples[i] for i in batch], cfg))
                with autocast:
                    loss, info, n_tokens = _loss(model, [examples[i] for i in batch],
                                                 None if reference is None else reference[batch], cfg, pad_id)
                (loss * len(batch) / pairs).backward()
                stats += torch.tensor([info["loss"], info["chosen"], info["rejected"], info["accuracy"], 0.0],
                                      dtype=torch.float64) * len(batch) / pairs
                stats[4] += n_tokens
            if group.world > 1:
                _sum_gradients(params, group)
                stats = group.sum(stats)
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            lr = lr_at(step, total_steps, cfg)
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            seconds = time.perf_counter() - started
            loss_v, chosen_v, rejected_v, accuracy_v, tokens = stats.tolist()
            if on_step and main:
                on_step(StepRecord(step=step, loss=loss_v, rewards_chosen=chosen_v,
                                  rewards_rejected=rejected_v, reward_margin=chosen_v - rejected_v,
                                  accuracy=accuracy_v, lr=lr, grad_norm=float(grad_norm),
                                  tokens_per_s=tokens / seconds if seconds else None))
            step += 1
            if checkpoint_every and step % checkpoint_every == 0 and step < total_steps:
                if main:
                    checkpoints.save(model, optimizer, step, checkpoint)
                group.barrier()
    adapter = out_dir / "adapter"
    if main:
        tmp = out_dir / "adapter.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model.save_pretrained(tmp)
        shutil.rmtree(adapter, ignore_errors=True)
        tmp.rename(adapter)
        shutil.rmtree(checkpoint, ignore_errors=True)
    group.barrier()
    return adapter


def over_budget(batch: list[Example], cfg: TrainSection) -> bool:
    """Whether a micro-batch holds more tokens than train.micro_batch_tokens: an example longer than the
    budget goes alone (see batching.split), and its activations are then recomputed in the backward
    pass, so the budget bounds the memory a step holds (a 320-token pair's packed row is ~700 tokens)."""
    return cfg.micro_batch_tokens > 0 and sum(tokens_of(ex, cfg.packing) for ex in batch) > cfg.micro_batch_tokens


def _recompute_switch(model, cfg: TrainSection) -> Callable[[bool], None]:
    """A switch for activation recomputation (gradient checkpointing), set before each micro-batch:
    transformers reads the layers' `gradient_checkpointing` flags at every forward call. Recomputing is
    exact (the dropout draws are replayed) and costs about one more forward pass."""
    if not (cfg.gradient_checkpointing or cfg.micro_batch_tokens > 0):
        return lambda on: None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        return lambda on: None  # an architecture without it keeps its activations
    enable = getattr(base, "activation_checkpointing_enable", None)  # transformers >= 5.x; the old name warns
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if getattr(base, "_require_grads_hook", None) is not None:  # only reentrant checkpoints need the input's
        base.disable_input_require_grads()  # gradient: without it no micro-batch pays for one
    switches = [m for m in base.modules() if hasattr(m, "_gradient_checkpointing_func")]

    def switch(on: bool) -> None:
        for module in switches:
            module.gradient_checkpointing = on

    return switch


def _sum_gradients(params: list[torch.nn.Parameter], group: SingleProcess) -> None:
    """One all-reduce for every LoRA gradient; a process that had no micro-batch this step adds zeros."""
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = group.sum(torch.cat([g.reshape(-1) for g in grads]))
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _loss(model, batch: list[Example], reference, cfg: TrainSection, pad_id: int):
    """Loss of one micro-batch, its statistics, and the tokens it processed."""
    items = [(ex.prompt, seq) for ex in batch for seq in ex.sequences()]
    token_logps, mask = response_logps(model, items, pad_id, cfg.max_length, cfg.packing)
    n_tokens = sum(len(p) + len(r) for p, r in items)
    total, mean = sums(token_logps, mask)
    if cfg.loss == "sft":
        loss = losses.sft(token_logps, mask)
        return loss, {"loss": float(loss.detach()), "chosen": 0.0, "rejected": 0.0, "accuracy": 0.0}, n_tokens
    if cfg.loss == "rrhf":
        loss, offset = 0.0, 0
        for ex in batch:
            n = len(ex.sequences())
            loss = loss + losses.rrhf(mean[offset:offset + n], token_logps[offset], mask[offset])
            offset += n
        loss = loss / len(batch)
        return loss, {"loss": float(loss.detach()), "chosen": 0.0, "rejected": 0.0, "accuracy": 0.0}, n_tokens
    chosen_idx = torch.arange(0, len(items), 2)
    rejected_idx = chosen_idx + 1
    # DPO compares summed log-probs; IPO and LN-DPO per-token means (columns 2 and 3 of the reference);
    # LD-DPO sums whose excess over the pair's common length is weighed by ld_alpha (columns 4 and 5)
    per_token = cfg.loss in ("ipo", "ln-dpo")
    use = mean if per_token else total
    reference = reference.to(use.device)
    ref_chosen, ref_rejected = (reference[:, 2], reference[:, 3]) if per_token else (reference[:, 0], reference[:, 1])
    if cfg.loss == "ld-dpo":
        use = losses.desensitised(total, common_sums(token_logps, mask), cfg.ld_alpha)
        ref_chosen = losses.desensitised(reference[:, 0], reference[:, 4], cfg.ld_alpha)
        ref_rejected = losses.desensitised(reference[:, 1], reference[:, 5], cfg.ld_alpha)
    fn = {"dpo": losses.dpo, "ld-dpo": losses.dpo, "ln-dpo": losses.ln_dpo, "ipo": losses.ipo}[cfg.loss]
    extra = {}
    if cfg.length_margin:  # R-DPO: the length difference is taken off the margin (dpo-like losses only)
        lengths = mask.sum(-1)
        offset = losses.length_offset(lengths[chosen_idx], lengths[rejected_idx], cfg.length_margin)
        offset = offset * torch.tensor([ex.length_term for ex in batch], dtype=offset.dtype)
        extra["offset"] = offset
    loss, chosen, rejected = fn(use[chosen_idx], use[rejected_idx], ref_chosen, ref_rejected, cfg.beta, **extra)
    if cfg.sft_weight:
        loss = loss + cfg.sft_weight * losses.chosen_nll(mean[chosen_idx])
    info = {"loss": float(loss.detach()), "chosen": float(chosen.mean()), "rejected": float(rejected.mean()),
            "accuracy": float((chosen > rejected).float().mean())}
    return loss, info, n_tokens


@torch.no_grad()
def _reference(model, base_model, examples, cfg, pad_id, out_dir, reference_adapter, init_adapter, group,
               should_stop=lambda: False):
    """[n, 6] tensor of reference log-probs: summed chosen, summed rejected, mean chosen, mean rejected,
    and the chosen and rejected sums over the pair's common length (LD-DPO).

    Computed once per round and saved beside the adapter, so a resumed round does not redo it. With
    several processes each scores every world-th batch and the rows are summed into place. A stop
    request is honoured between batches (the pass takes minutes on a CPU): every process asks at the
    same points, so they leave together."""
    path = Path(out_dir) / "reference.pt"
    if path.is_file():
        saved = torch.load(path)
        if saved.shape == (len(examples), 6):  # an older 4-column file is computed again
            return saved
    group.barrier()  # no process may still be reading a stale file when rank 0 replaces it
    if reference_adapter and reference_adapter == init_adapter:
        scorer, context = model, _null()  # the adapter we start from, before any step
    elif reference_adapter:
        from peft import PeftModel

        scorer, context = PeftModel.from_pretrained(sharing_copy(base_model), reference_adapter), _null()
    else:
        scorer, context = model, model.disable_adapter()
    was_training = scorer.training
    scorer.eval()
    reference = torch.zeros((len(examples), 6), dtype=torch.float32)
    # in length order, so a forward pass carries little padding; each row's values land in its own place
    order = sorted(range(len(examples)), key=lambda i: tokens_of(examples[i], cfg.packing))
    batches = [chunk for start in range(0, len(order), cfg.batch_size)
               for chunk in split(order[start:start + cfg.batch_size], examples, cfg.micro_batch_tokens, cfg.packing)]
    with context:
        for start in range(0, len(batches), group.world):
            if group.sum(torch.tensor([float(should_stop())]))[0] > 0:
                scorer.train(was_training)
                raise StopTraining()
            if start + group.rank >= len(batches):
                continue  # the last round of batches has fewer than world
            batch = batches[start + group.rank]
            items = [(examples[i].prompt, seq) for i in batch for seq in examples[i].sequences()]
            token_logps, mask = response_logps(scorer, items, pad_id, cfg.max_length, cfg.packing)
            total, mean = sums(token_logps, mask)
            common = common_sums(token_logps, mask)
            columns = [total[0::2], total[1::2], mean[0::2], mean[1::2], common[0::2], common[1::2]]
            reference[batch] = torch.stack(columns, dim=1).float().cpu()
    scorer.train(was_training)
    reference = group.sum(reference)
    if group.rank == 0:
        torch.save(reference, path)
    return reference

"""The transformers engine: batched sampling on CPU (or any torch device) with our own decode loop.

Why not `model.generate`: on 2 CPU cores it spends much of each step outside the model (a full
vocabulary sort for top-p on every row) and keeps computing rows that already finished. This loop
  - sorts prompts by length so a batch carries little padding,
  - runs the prompt once and copies its KV cache for the K samples (prefill shared),
  - does top-p on the top-k candidates only, falling back to a full sort for a row whose nucleus
    is wider than k (so the result is exact),
  - drops finished rows from the batch and its KV cache once enough of them have finished, and
    fills their places with waiting prompts (prefilled, then joined to the running rows' cache), so
    the batch stays full until the queue is empty (or its KV cache would pass cache_mib),
  - reserves KV cache columns ahead, so a step writes one column in place (engines/kv_cache.py),
  - records the log-probability of each sampled token under the untempered policy (the judges
    rank responses by it), and stops on stop strings.
LoRA adapters are merged into the base's own weights and undone exactly afterwards
(engines/sampling_copy.py), so sampling from an adapter costs nothing extra per step or in memory.
On a CPU every linear layer of the sampling copy runs through oneDNN (engines/onednn_linear.py:
MKL's path on AMD processors is about half as fast for a decode step's products).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from selfalign.engines.base import GenerationRequest, GenerationResult, OnResult, Progress, StopAsked, Throttled
from selfalign.engines.decode_batch import Batch, cache_argument, cache_of

TOP_K_CANDIDATES = 256  # top-p is computed on these; rows needing more fall back to a full sort
COMPACT_FRACTION = 0.25  # drop finished rows from the KV cache once this share of the batch is done
STOP_CHECK_S = 1.0  # how often a call asks whether to stop (the question may read a database)
PREFILL_TOKENS = 8192  # padded prompt tokens per prefill forward (a few seconds on 2 CPU cores); a stop is
# asked between pieces, and the prefill's activations stay bounded however long the prompts


@dataclass
class _Row:
    request: GenerationRequest
    sample_index: int
    prompt_len: int
    started: float
    tokens: list[int] = field(default_factory=list)
    logprob_sum: float = 0.0
    done: bool = False
    draws: random.Random | None = None  # this sample's own random stream (one uniform per decoded token)

    def __post_init__(self):
        if self.draws is None:
            self.draws = random.Random(row_seed(self.request, self.sample_index))


def row_seed(request: GenerationRequest, i: int) -> int:
    """The seed of a request's i-th sample: its own when the request names one, else from the request's."""
    if request.sample_seeds:
        return request.sample_seeds[i]
    return int.from_bytes(hashlib.sha256(f"{request.seed}:{i}".encode()).digest()[:8], "little")


class TransformersEngine:
    name = "transformers"

    def __init__(self, model, tokenizer, *, batch_size: int = 32, max_context: int = 2048,
                 reserve_cache: bool = True, refill: bool = True, onednn: bool = True, reorder_base: bool = True,
                 cache_mib: float | None = None, merge_in_place: bool = True):
        self._base = model
        self._borrowed: list = []  # base weights the sampling copy holds reordered (onednn_linear.give_back)
        self._spill = None  # the base's weights as they were before an adapter was merged into them
        self.merge_in_place = merge_in_place  # off: an adapter is merged into a copy of the base (+1 model)
        self.reserve_cache = reserve_cache  # off: transformers' DynamicCache (the benchmark's baseline)
        self.refill = refill  # off: a batch shrinks as rows finish and the next one starts when it is empty
        self.onednn = onednn  # off: torch's own linear layers (where oneDNN cannot run, they are used anyway)
        self.reorder_base = reorder_base  # the base's weights borrowed and reordered for oneDNN: ~1.24x, same memory
        self.model = None  # what samples: made by _use from the base (with an adapter merged, or oneDNN's)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_context = max_context
        self.cache_mib = cache_mib  # rows join a batch only while its reserved KV cache stays under this
        self.adapter: str | None = None
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in eos + [tokenizer.eos_token_id] if i is not None}
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)

    @classmethod
    def load(cls, model_name: str, *, device: str = "auto", dtype: str = "auto", **kwargs) -> TransformersEngine:
        from selfalign import models

        model, tokenizer = models.load(model_name, device=device, dtype=dtype)
        return cls(model, tokenizer, **kwargs)

    @property
    def base(self):
        """The base model with its plain weights (a sampling copy that borrowed them gives them back first)."""
        self._give_back()
        return self._base

    @property
    def device(self):
        return next(self._base.parameters()).device

    @property
    def where(self) -> str:
        return str(self.device)

    # ------------------------------------------------------------ adapters, memory

    def _use(self, path: str | None) -> None:
        """Sample from the base or base + this adapter (the same path is set up once): engines/sampling_copy.py."""
        if path == self.adapter and self.model is not None:
            return
        self.model = None  # the previous copy goes before the next is made
        self._give_back()
        onednn = self.onednn and _onednn().usable(self._base)
        self.model, self._borrowed, self._spill = _sampling_copy().make(
            self._base, path, onednn=onednn, reorder_base=self.reorder_base, in_place=self.merge_in_place)
        self.adapter = path

    def for_training(self, cfg, *, weights: bool = True) -> TransformersEngine:
        return self

    def release_memory(self) -> None:
        """Drop the sampling copy and give the base its own weights back before training reads them; the
        next call makes the copy again (a second or two)."""
        self._give_back()
        self.model, self.adapter = None, None

    def _give_back(self) -> None:
        """The base's own weights back (plain layout, no adapter merged); the copy that sampled with them goes."""
        if self._borrowed or self._spill:
            self.model, self.adapter = None, None
            borrowed, spill, self._borrowed, self._spill = self._borrowed, self._spill, [], None
            _sampling_copy().give_back(borrowed, spill)

    def close(self) -> None:
        self._borrowed.clear()
        self.model = self._base = None

    # ------------------------------------------------------------ tokenizing

    def prompt_ids(self, messages_or_prompt: list[dict[str, str]] | str) -> list[int]:
        return prompt_ids(self.tokenizer, messages_or_prompt)

    # ------------------------------------------------------------ generation

    def generate(self, requests: Sequence[GenerationRequest], *, adapter: str | None = None,
                 on_result: OnResult | None = None, progress: Progress | None = None,
                 should_stop: StopAsked | None = None) -> list[GenerationResult]:
        import torch

        self._use(adapter)
        results: list[GenerationResult] = []
        total = sum(r.n for r in requests)

        def emit(result: GenerationResult) -> None:
            results.append(result)
            if on_result:
                on_result(result)
            if progress:
                progress(len(results), total)

        todo = []
        for request in requests:
            ids = self.prompt_ids(request.messages if request.messages is not None else request.prompt)
            if len(ids) + request.max_new_tokens > self.max_context:
                why = (f"prompt has {len(ids)} tokens; with max_new_tokens {request.max_new_tokens} it exceeds "
                       f"the context of {self.max_context}")
                for i in range(request.n):
                    emit(GenerationResult(request.key, i, "", 0, "skipped", None, 0.0, detail=why))
                continue
            todo.append((request, ids))
        todo.sort(key=lambda item: len(item[1]))
        with torch.inference_mode():
            self._decode(deque(todo), emit, Throttled(should_stop, STOP_CHECK_S) if should_stop else None)
        return results

    def _take(self, queue: deque, live: int = 0, width: int = 0) -> list:
        """The next requests whose samples fit beside `live` running rows `width` columns wide (at least
        one when the batch is empty)."""
        chunk, rows = [], live
        while queue and rows + queue[0][0].n <= self._capacity(max(width, len(queue[0][1]))):
            rows += queue[0][0].n
            width = max(width, len(queue[0][1]))
            chunk.append(queue.popleft())
        if not chunk and not live and queue:
            chunk.append(queue.popleft())  # more samples than a batch holds: alone, as a batch of its own
        return chunk

    def _capacity(self, width: int) -> int:
        """Rows a batch may hold while they span `width` columns: batch_size, or fewer where their KV cache
        would pass cache_mib (at 320-token answers 128 rows span up to ~500 columns: ~3 GB on SmolLM2)."""
        if not self.cache_mib or not (self.reserve_cache and self.refill):
            return self.batch_size
        from selfalign.engines.kv_cache import RESERVE_TOKENS, bytes_per_token
        per_row = (width + RESERVE_TOKENS) * bytes_per_token(self._base)
        return max(1, min(self.batch_size, int(self.cache_mib * 2**20 // per_row)))

    def _decode(self, queue: deque, emit, should_stop: Throttled | None) -> None:
        """Decode every queued request. Rows that finish leave the batch (once COMPACT_FRACTION of it
        has); with a reserved cache, waiting prompts are then prefilled and join the running rows, so the
        batch stays near batch_size until the queue is empty instead of shrinking to a few long rows."""
        import torch

        if not queue:
            return
        rows: list[_Row] = []
        batch = self._prefill(self._take(queue), rows, should_stop)
        while batch is not None:
            if should_stop and should_stop():
                return  # rows not finished are dropped: the caller makes them again
            # each row draws from its own stream, so a sample comes out the same whatever batch it shares
            uniforms = torch.tensor([rows[i].draws.random() if not rows[i].done else 0.5 for i in batch.live],
                                    dtype=torch.float64, device=batch.logits.device)
            tokens, logprobs = _sample(batch.logits, batch.temps, batch.top_ps, uniforms)
            # One device-to-host copy per step: per-row reads would stall a GPU once per row.
            step_tokens, step_logprobs = tokens.tolist(), logprobs.tolist()
            for pos, row_index in enumerate(batch.live):
                row = rows[row_index]
                if row.done:  # finished, waiting for the batch to drop it
                    continue
                reason = self._advance(row, step_tokens[pos])
                if reason != "stop":  # the end-of-sequence token is not part of the response
                    row.logprob_sum += step_logprobs[pos]
                if reason:
                    row.done = True
                    emit(self._result(row, reason))
            alive = [pos for pos, row_index in enumerate(batch.live) if not rows[row_index].done]
            finished = len(batch.live) - len(alive)
            if finished >= max(1, int(COMPACT_FRACTION * len(batch.live))):
                batch.keep(alive)
                tokens = tokens[torch.tensor(alive, dtype=torch.long, device=tokens.device)]
            if batch.live:
                batch.step(self.model, tokens)
            width = batch.width() if batch.live and self.cache_mib else 0
            capacity = self._capacity(width)
            refill = batch.refills and capacity - len(batch.live) >= COMPACT_FRACTION * capacity
            chunk = self._take(queue, len(batch.live), width) if refill or not batch.live else []
            if chunk:
                fresh = self._prefill(chunk, rows, should_stop)
                if fresh is None:
                    return
                batch = batch.absorb(fresh) if batch.live else fresh
            if not batch.live:
                return

    def _prefill(self, chunk, rows: list[_Row], should_stop: Throttled | None = None) -> Batch | None:
        """Prefill the chunk in pieces of at most PREFILL_TOKENS padded tokens, joined as refills are, and
        ask between pieces whether to stop (None then). Only a reserved cache can join, so with
        transformers' own cache the chunk is one piece."""
        batch = None
        for piece in self._pieces(chunk):
            if batch is not None and should_stop and should_stop():
                return None
            fresh = self._prefill_piece(piece, rows)
            batch = fresh if batch is None else batch.absorb(fresh)
        return batch

    def _pieces(self, chunk) -> list[list]:
        if not (self.reserve_cache and self.refill):
            return [chunk]
        from selfalign.engines.kv_cache import growing_cache

        if growing_cache(self.model, room=1) is None:
            return [chunk]
        pieces, piece, width = [], [], 0
        for item in chunk:  # in the chunk's order, so the rows (and the draws) come in the same order
            width_with = max(width, len(item[1]))
            if piece and width_with * (len(piece) + 1) > PREFILL_TOKENS:
                pieces.append(piece)
                piece, width_with = [], len(item[1])
            piece.append(item)
            width = width_with
        return pieces + [piece]

    def _prefill_piece(self, chunk, rows: list[_Row]) -> Batch:
        """Run the chunk's prompts once, then copy each prompt's logits, mask and KV cache to its n rows."""
        import torch

        device = self.device
        started = time.perf_counter()
        width = max(len(ids) for _, ids in chunk)
        input_ids = torch.full((len(chunk), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, (_, ids) in enumerate(chunk):
            input_ids[i, width - len(ids):] = torch.tensor(ids)
            mask[i, width - len(ids):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        input_ids, mask, positions = input_ids.to(device), mask.to(device), positions.to(device)
        room = max(request.max_new_tokens for request, _ in chunk)
        cache = None
        if self.reserve_cache:
            from selfalign.engines.kv_cache import RESERVE_TOKENS, growing_cache

            room = min(room, RESERVE_TOKENS)  # the cache grows by this many columns at a time
            cache = growing_cache(self.model, room=room)
        refills = self.refill and cache is not None  # only a reserved cache can take rows mid-decode
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **({cache_argument(self.model): cache} if cache is not None else {}))
        counts = torch.tensor([request.n for request, _ in chunk], device=device)
        expand = torch.repeat_interleave(torch.arange(len(chunk), device=device), counts)
        cache = cache_of(out)
        if len(expand) > len(chunk):  # one row per prompt needs no copy (the copy held the cache twice)
            cache.batch_select_indices(expand)
        first = len(rows)
        rows += [_Row(request, i, len(ids), started) for request, ids in chunk for i in range(request.n)]
        fresh = rows[first:]
        return Batch(cache, mask[expand], positions[:, -1][expand] + 1, out.logits[:, -1, :].float()[expand],
                      torch.tensor([r.request.temperature for r in fresh], device=device),
                      torch.tensor([r.request.top_p for r in fresh], device=device),
                      list(range(first, len(rows))), refills=refills, room=room)

    def _advance(self, row: _Row, token: int) -> str | None:
        """Add a sampled token to a row; return why the row is finished, or None."""
        if token in self.eos_ids:
            return "stop"
        row.tokens.append(token)
        if row.request.stop and self._stop_index(row) is not None:
            return "stop_string"
        if len(row.tokens) >= row.request.max_new_tokens:
            return "length"
        return None

    def _stop_index(self, row: _Row) -> int | None:
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        hits = [text.find(s) for s in row.request.stop if s and s in text]
        return min(hits) if hits else None

    def _result(self, row: _Row, reason: str) -> GenerationResult:
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        if reason == "stop_string":
            text = text[: self._stop_index(row)]
        mean = row.logprob_sum / len(row.tokens) if row.tokens else None
        return GenerationResult(row.request.key, row.sample_index, text.strip(), len(row.tokens), reason, mean,
                                time.perf_counter() - row.started)

def _onednn():
    from selfalign.engines import onednn_linear

    return onednn_linear


def _sampling_copy():
    from selfalign.engines import sampling_copy

    return sampling_copy


def _sample(logits, temps, top_ps, uniforms):
    """Sample one token per row with per-row temperature and top-p, by inverting each row's nucleus
    distribution at that row's uniform draw (`uniforms`, in [0, 1)); also return each sampled token's
    log-probability under the untempered distribution.

    Top-p needs the tokens sorted by probability, and a full sort of the vocabulary costs more than
    the model's own step on CPU. Dividing by a temperature keeps the order, so we take the top-k of
    the raw logits and widen k only for rows whose nucleus is not inside it (exact either way).
    """
    import torch

    log_norm = torch.logsumexp(logits, dim=-1)
    tokens = logits.argmax(dim=-1)
    rows = (temps > 0).nonzero().squeeze(-1)
    if len(rows):
        raw = logits[rows]
        t = temps[rows, None]
        scaled_norm = torch.logsumexp(raw / t, dim=-1, keepdim=True)
        pending = torch.arange(len(rows), device=raw.device)
        chosen = torch.empty(len(rows), dtype=torch.long, device=raw.device)
        k = TOP_K_CANDIDATES
        while len(pending):
            k = min(k, raw.shape[-1])
            values, indices = raw[pending].topk(k, dim=-1)
            probs = (values / t[pending] - scaled_norm[pending]).exp()
            cumulative = probs.cumsum(dim=-1)
            fits = (cumulative[:, -1] >= top_ps[rows][pending]) | (k == raw.shape[-1])
            if fits.any():
                picked = _nucleus_pick(probs[fits], cumulative[fits], top_ps[rows][pending][fits],
                                       uniforms[rows][pending][fits])
                chosen[pending[fits]] = indices[fits].gather(-1, picked[:, None]).squeeze(-1)
            pending = pending[~fits]
            k *= 16
        tokens[rows] = chosen
    logprobs = logits.gather(-1, tokens[:, None]).squeeze(-1) - log_norm
    return tokens, logprobs


def _nucleus_pick(probs, cumulative, top_p, uniforms):
    """Index (into the sorted candidates) of the token at `uniforms` of the way through the smallest set
    reaching top_p (inverse-CDF sampling: the same draw gives the same token)."""
    outside = (cumulative - probs) >= top_p[:, None]
    outside[:, 0] = False
    kept = probs.masked_fill(outside, 0.0).double().cumsum(dim=-1)
    target = uniforms[:, None] * kept[:, -1:]
    return (kept <= target).sum(dim=-1).clamp(max=probs.shape[-1] - 1)


def prompt_ids(tokenizer, messages_or_prompt: list[dict[str, str]] | str) -> list[int]:
    """Token ids of a prompt as the policy sees it: a plain (URIAL) prompt, or chat messages through
    the tokenizer's template with the assistant turn opened."""
    if isinstance(messages_or_prompt, str):
        return tokenizer(messages_or_prompt)["input_ids"]
    text = tokenizer.apply_chat_template(messages_or_prompt, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]

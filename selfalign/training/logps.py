"""Log-probabilities of responses given their prompts, in rows through the model: one padded row per
response, or packed rows in which a prompt is computed once and each of its responses attends to it
through its own mask (train.packing). Both give the same log-probabilities and gradients (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfalign.training.head_logps import target_logps


@dataclass
class _Row:
    """One row through the model: a prompt, then one response (or, packed, each response of that prompt)."""

    tokens: list[int]
    segments: list[int]  # 0: prompt, k: the k-th response of the row
    positions: list[int]  # every response continues the prompt's positions
    slots: list[tuple[int, int, list[int]]]  # (item index, column of the response's first token, its tokens)
    prompt_length: int = 0
    whole: bool = True  # nothing was truncated, so another response to the same prompt may join the row


def _truncate(prompt: list[int], response: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """Longer than max_length: prompt tokens go from the left first, then response tokens from the right."""
    response = response[: max_length - 1]
    if len(prompt) + len(response) > max_length:
        prompt = prompt[-(max_length - len(response)):]
    return prompt, response


def _rows(items: list[tuple[list[int], list[int]]], max_length: int, packed: bool) -> list[_Row]:
    """Packed: consecutive items with the same prompt share one row. An item that must be truncated gets a
    row of its own, so every response sees exactly the prompt it would see alone."""
    rows: list[_Row] = []
    for index, (prompt, response) in enumerate(items):
        whole = len(prompt) + len(response) <= max_length
        last = rows[-1] if rows else None
        if packed and whole and last is not None and last.whole and items[index - 1][0] == prompt:
            row = last
        else:
            prompt, response = _truncate(prompt, response, max_length)
            row = _Row(list(prompt), [0] * len(prompt), list(range(len(prompt))), [], len(prompt), whole)
            rows.append(row)
        row.slots.append((index, len(row.tokens), response))
        row.tokens += response
        row.segments += [len(row.slots)] * len(response)
        row.positions += range(row.prompt_length, row.prompt_length + len(response))
    return rows


def packs(model) -> bool:
    """Whether the model's attention takes the packed rows' own mask (flash-attention kernels take only padding)."""
    return getattr(model.config, "_attn_implementation", "sdpa") in ("sdpa", "eager")


def response_logps(model, prompt_and_responses: list[tuple[list[int], list[int]]], pad_id: int, max_length: int,
                   packed: bool = False):
    """Per-token log-probs of each response given its prompt, in one forward pass.

    Returns (token_logps [n, R], mask [n, R]) with R the longest response kept. Sequences longer
    than max_length lose prompt tokens from the left first, then response tokens from the right.
    `packed`: responses to the same prompt (consecutive items) share one row, the prompt once, and a
    mask lets each response see the prompt and itself only: the same log-probs with fewer positions.
    """
    packed = packed and packs(model)
    rows = _rows(prompt_and_responses, max_length, packed)
    width = max(len(r.tokens) for r in rows)
    device = next(model.parameters()).device
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    segments = torch.full((len(rows), width), -1, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, : len(r.tokens)] = torch.tensor(r.tokens)
        segments[i, : len(r.tokens)] = torch.tensor(r.segments)
        positions[i, : len(r.tokens)] = torch.tensor(r.positions)
    body = model.get_decoder() if hasattr(model, "get_decoder") else model.model
    if packed:
        # query t sees key s when s <= t and s is in the prompt or in t's own response (padding sees
        # padding, so no query row is empty); position ids restart each response after the prompt
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        allowed = causal & ((segments[:, None, :] == segments[:, :, None]) | (segments[:, None, :] == 0))
        mask = allowed[:, None].to(device)
        if model.config._attn_implementation == "eager":  # eager attention adds the mask to its scores
            dtype = next(model.parameters()).dtype
            mask = torch.zeros(mask.shape, dtype=dtype, device=device).masked_fill(~mask, torch.finfo(dtype).min)
        hidden = body(input_ids=input_ids.to(device), attention_mask=mask, position_ids=positions.to(device),
                      use_cache=False).last_hidden_state
    else:
        attention = (segments >= 0).long()
        hidden = body(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                      use_cache=False).last_hidden_state
    head = model.get_output_embeddings()
    longest = max([len(response) for r in rows for _, _, response in r.slots] or [0])
    row_idx, cols, targets, item_idx, token_idx = [], [], [], [], []
    for i, r in enumerate(rows):
        for item, start, response in r.slots:
            n = len(response)
            # the hidden state at a column predicts the next token: the prompt's last column predicts the
            # response's first token, then each response column the one after it
            row_idx += [i] * n
            cols += ([r.prompt_length - 1] + list(range(start, start + n - 1)))[:n]
            targets += response
            item_idx += [item] * n
            token_idx += range(n)
    picked = hidden[torch.tensor(row_idx, dtype=torch.long, device=device),
                    torch.tensor(cols, dtype=torch.long, device=device)]
    token = target_logps(head, picked, torch.tensor(targets, dtype=torch.long, device=device))
    out = torch.zeros((len(prompt_and_responses), longest), dtype=token.dtype, device=device)
    mask = torch.zeros_like(out)
    index_i = torch.tensor(item_idx, dtype=torch.long, device=device)
    index_j = torch.tensor(token_idx, dtype=torch.long, device=device)
    out = out.index_put((index_i, index_j), token)
    mask[index_i, index_j] = 1.0
    return out, mask


def common_sums(token_logps, mask):
    """Rows in pairs (chosen, rejected, chosen, ...): each row's summed log-probability over its first
    min(len chosen, len rejected) tokens, the length the pair's two answers share."""
    import torch

    lengths = mask.sum(-1)
    common = torch.minimum(lengths[0::2], lengths[1::2]).repeat_interleave(2)
    positions = torch.arange(mask.shape[-1], device=mask.device)
    return (token_logps * mask * (positions[None, :] < common[:, None])).sum(-1)


def sums(token_logps, mask):
    """Per response: the summed log-probability of its tokens, and their mean."""
    total = (token_logps * mask).sum(-1)
    return total, total / mask.sum(-1).clamp(min=1)

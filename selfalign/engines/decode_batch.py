"""The rows a decode loop runs together (transformers engine): their KV cache, mask, positions and the
logits of their next token; finished rows leave, waiting rows join (the reserved cache only)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Batch:
    """The rows being decoded together: their KV cache, attention mask, next positions, the logits
    their next token is drawn from, and which rows (indices into the call's rows) they are."""

    cache: object
    mask: object  # [rows, columns] 1 where a row has a token
    next_pos: object
    logits: object
    temps: object
    top_ps: object
    live: list[int]
    refills: bool  # the cache can take new rows (a reserved cache; transformers' own cannot)
    room: int

    def keep(self, positions: list[int]) -> None:
        """Drop every row but these (finished rows leave the batch and its cache)."""
        import torch

        keep = torch.tensor(positions, dtype=torch.long, device=self.mask.device)
        self.cache.batch_select_indices(keep)
        self.mask, self.next_pos = self.mask[keep], self.next_pos[keep]
        self.temps, self.top_ps = self.temps[keep], self.top_ps[keep]
        self.live = [self.live[pos] for pos in positions]

    def step(self, model, tokens) -> None:
        """Feed each row its last sampled token; the logits of the next one come back."""
        self.mask = _with_new_column(self.mask)
        out = model(input_ids=tokens[:, None], attention_mask=self.mask, position_ids=self.next_pos[:, None],
                    use_cache=True, **{cache_argument(model): self.cache})
        self.cache = cache_of(out)
        self.logits = out.logits[:, -1, :].float()
        self.next_pos = self.next_pos + 1

    def width(self) -> int:
        """Columns the rows span: from the first one any row uses (earlier ones go at the next absorb)."""
        used = self.mask.any(dim=0).nonzero()
        return self.mask.shape[1] - int(used[0]) if len(used) else 0

    def absorb(self, fresh: Batch) -> Batch:
        """This batch's rows then the fresh ones, in one cache aligned on the right: columns that no row
        uses any more (before every row's first token) are dropped, the shorter side padded on the left."""
        import torch

        from selfalign.engines.kv_cache import merge

        start = self.mask.shape[1] - self.width()
        mine, theirs = self.mask[:, start:], fresh.mask
        width = max(mine.shape[1], theirs.shape[1])
        room = max(self.room, fresh.room)
        merge(self.cache, fresh.cache, start, width, room)

        def pad(mask):
            return torch.cat([mask.new_zeros((len(mask), width - mask.shape[1])), mask], dim=1)

        return Batch(self.cache, torch.cat([pad(mine), pad(theirs)]), torch.cat([self.next_pos, fresh.next_pos]),
                      torch.cat([self.logits, fresh.logits]), torch.cat([self.temps, fresh.temps]),
                      torch.cat([self.top_ps, fresh.top_ps]), self.live + fresh.live, True, room)


def _with_new_column(mask):
    import torch

    return torch.cat([mask, mask.new_ones((len(mask), 1))], dim=1)


def cache_argument(model) -> str:
    """The keyword a model's forward takes its KV cache by: `cache` since transformers 5 (which warns on
    every call given the old name), `past_key_values` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def cache_of(out):
    # not out.get("cache", out.past_key_values): that reads the deprecated attribute on every call
    return out["cache"] if "cache" in out else out.past_key_values  # noqa: SIM401

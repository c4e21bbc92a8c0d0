"""The one batched forward loop: sub-batches of padded prompts, padding trimmed, read at each
prompt's last real token, with optional hooks per sub-batch."""

from __future__ import annotations

from collections.abc import Callable

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm import tqdm  # plain text bars: they reach the terminal log under papermill

from factcircuits.models.tokens import Batch

#: hooks_for(rows: slice of the batch, last: [b] last real positions, mask: [b, width]) →
#: [(hook name, fn), ...] for that sub-batch
HooksFor = Callable[[slice, Tensor, Tensor], list]


def slice_last(act: Float[Tensor, "batch pos ..."], last: Int[Tensor, " batch"]
               ) -> Float[Tensor, "batch ..."]:
    """Row i of `act` at position last[i]."""
    rows = torch.arange(act.shape[0], device=act.device)
    return act[rows, last.to(act.device)]


@torch.inference_mode()
def final_logits(model, batch: Batch, batch_size: int = 16, progress: bool = False,
                 hooks_for: HooksFor | None = None, desc: str = "forward"
                 ) -> Float[Tensor, "n_prompts vocab"]:
    """Logits (float32, on CPU) at the last real token of each prompt, running `model` over
    `batch` in sub-batches of `batch_size` (attention mask passed, shared padding trimmed) with
    the hooks `hooks_for` returns for each sub-batch."""
    out = []
    device = model.cfg.device
    starts = range(0, len(batch.tokens), batch_size)
    for start in tqdm(starts, desc=desc, disable=not progress, leave=False):
        part = slice(start, start + batch_size)
        mask = batch.attention_mask[part]
        width = int(mask.sum(1).max())  # trim padding shared by the whole sub-batch
        last = batch.last_index[part]
        hooks = hooks_for(part, last, mask[:, :width]) if hooks_for else []
        logits = model.run_with_hooks(batch.tokens[part, :width].to(device),
                                      attention_mask=mask[:, :width].to(device), fwd_hooks=hooks)
        out.append(slice_last(logits, last).float().cpu())
    return torch.cat(out)


def capture_last(model, batch: Batch, names: list[str], batch_size: int = 16,
                 progress: bool = False, desc: str = "capture", extra_hooks=None
                 ) -> tuple[dict[str, Tensor], Float[Tensor, "n_prompts vocab"]]:
    """`final_logits` keeping only each named hook's activation at each prompt's last real
    token; `extra_hooks(last)` adds hooks per sub-batch.

    Returns (values {name: float32 CPU tensor [n, ...]}, final logits [n, vocab])."""
    values: dict[str, list[Tensor]] = {n: [] for n in names}

    def hooks_for(part, last, mask):
        def keep(name):
            def hook(act, hook):
                values[name].append(slice_last(act, last).float().cpu())
            return hook
        return [(n, keep(n)) for n in names] + list(extra_hooks(last) if extra_hooks else [])

    logits = final_logits(model, batch, batch_size, progress, hooks_for, desc)
    return {n: torch.cat(v) for n, v in values.items()}, logits


def position_mean(model, batch: Batch, names: list[str], batch_size: int = 16,
                  progress: bool = False) -> dict[str, Float[Tensor, "pos ..."]]:
    """Mean of each named hook's activation over the prompts long enough to have each position:
    {name: [pos, ...]} (float32, CPU)."""
    sums: dict[str, Tensor] = {}
    counts = batch.attention_mask.sum(0).float().clamp(min=1)

    def hooks_for(part, last, mask):
        def add(name):
            def hook(act, hook):
                w = mask.to(act.device).reshape(mask.shape + (1,) * (act.dim() - 2)).to(act.dtype)
                total = (act * w).sum(0).float().cpu()
                full = sums.setdefault(name, torch.zeros((batch.tokens.shape[1],)
                                                         + tuple(total.shape[1:])))
                full[: total.shape[0]] += total
            return hook
        return [(n, add(n)) for n in names]

    final_logits(model, batch, batch_size, progress, hooks_for, desc="mean activations")
    return {n: s / counts.reshape((-1,) + (1,) * (s.dim() - 1)) for n, s in sums.items()}

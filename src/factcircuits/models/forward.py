"""Batched forward passes that read the next-token logits at each prompt's last real token."""

from __future__ import annotations

import torch
from tqdm import tqdm  # plain text bars: they reach the terminal log under papermill

from factcircuits.models.tokens import Batch


@torch.inference_mode()
def final_logits(model, batch: Batch, batch_size: int = 16, progress: bool = False):
    """Logits [n_prompts, vocab] (float32, on CPU) at the last real token of each prompt."""
    out = []
    starts = range(0, len(batch.tokens), batch_size)
    for start in tqdm(starts, desc="forward", disable=not progress, leave=False):
        part = slice(start, start + batch_size)
        tokens, mask = batch.tokens[part], batch.attention_mask[part]
        width = int(mask.sum(1).max())  # trim padding shared by the whole sub-batch
        device = model.cfg.device
        logits = model(tokens[:, :width].to(device), attention_mask=mask[:, :width].to(device))
        rows = torch.arange(len(logits), device=logits.device)
        out.append(logits[rows, batch.last_index[part].to(logits.device)].float().cpu())
    return torch.cat(out)

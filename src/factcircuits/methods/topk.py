"""Top-k next-token predictions as a DataFrame (TransformerLens's `test_prompt` only prints)."""

from __future__ import annotations

import pandas as pd
import torch

from factcircuits.results.parameter_declarations import whole

TOP_K = whole("top_k", 5, "next tokens listed per prompt", 1,
              allowed="use a whole number of at least 1 (tokens listed per prompt)")


def top_k_table(logits: torch.Tensor, tokenizer, k: int = 10, prompts=None) -> pd.DataFrame:
    """logits [n_prompts, vocab] at the answer position → rows (prompt_index, rank, token,
    token_id, logit, prob), k per prompt."""
    logits = logits.float()
    probs = logits.softmax(-1)
    values, ids = logits.topk(k, dim=-1)
    records = []
    for i in range(len(logits)):
        for rank, (value, token_id) in enumerate(zip(values[i].tolist(), ids[i].tolist()), 1):
            records.append({
                "prompt_index": i,
                **({"prompt": prompts[i]} if prompts is not None else {}),
                "rank": rank,
                "token": tokenizer.decode([token_id]),
                "token_id": token_id,
                "logit": value,
                "prob": float(probs[i, token_id]),
            })
    return pd.DataFrame.from_records(records)

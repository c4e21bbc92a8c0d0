"""Attention knockout in the spirit of Geva et al. 2023 ("Dissecting recall of factual
associations"): block the last position's attention to a set of key positions (the subject
tokens, or the relation tokens) in a window of k consecutive layers, by setting those
pre-softmax attention scores to −inf (hook `blocks.{l}.attn.hook_attn_scores`, all heads), and
measure the change in the probability of the answer and in the metric. Windows are centred on
each layer and clipped at the ends. The last position always keeps attending to itself, so
the softmax stays defined.
"""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor
from tqdm import tqdm  # text bars: shown in the terminal log under papermill

from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.hooks import hook_names
from factcircuits.methods.positions import position_mask, task_positions
from factcircuits.models import LoadedModel
from factcircuits.models.forward import final_logits
from factcircuits.results.parameter_declarations import BATCH_SIZE, whole

ROLES = ("subject", "relation")


KNOCKOUT_WINDOW = whole("knockout_window", 0, "layers knocked out together; 0: n_layers // 6",
                        0, allowed="use 0 (n_layers // 6) or a number of layers")


def default_window(n_layers: int) -> int:
    return max(1, n_layers // 6)


def windows(n_layers: int, k: int) -> list[tuple[int, int, int]]:
    """(centre, first, last) layer of a k-layer window centred at every layer, clipped."""
    out = []
    for centre in range(n_layers):
        first = max(0, centre - k // 2)
        last = min(n_layers - 1, first + k - 1)
        first = max(0, last - k + 1)
        out.append((centre, first, last))
    return out


def knockout_hooks(layers, block: Bool[Tensor, "n_prompts pos"]):
    """A `hooks_for` function (see models.forward.final_logits) that blocks, in each of `layers`,
    the last position's attention to the key positions where `block` [n, pos] is True."""
    def hooks_for(part, last, mask):
        sub = block[part]

        def fn(scores, hook):
            width = scores.shape[-1]
            cut = sub[:, :width].clone().to(scores.device)
            rows = torch.arange(scores.shape[0], device=scores.device)
            q = last.to(scores.device)
            cut[rows, q] = False  # never block the last position itself
            if not bool(cut.any()):
                return scores
            scores = scores.clone()
            sel = scores[rows, :, q]  # [b, heads, key]
            scores[rows, :, q] = sel.masked_fill(cut[:, None, :], float("-inf"))
            return scores
        return [(name, fn) for name in hook_names("attn_scores", layers)]
    return hooks_for


def knockout(lm: LoadedModel, prepared: PreparedTask, block: Bool[Tensor, "n_prompts pos"],
             layers, *, batch_size: int = BATCH_SIZE.default) -> Float[Tensor, "n_prompts vocab"]:
    """Final logits with the last position's attention to `block` cut in `layers`."""
    return final_logits(lm.model, prepared.clean_batch(lm.tokenizer), batch_size,
                        hooks_for=knockout_hooks(layers, block))


def knockout_sweep(lm: LoadedModel, prepared: PreparedTask, window: int | None = None,
                   roles=ROLES, *, batch_size: int = BATCH_SIZE.default, progress: bool = False
                   ) -> pd.DataFrame:
    """Knock out subject / relation positions over sliding windows of `window` layers.
    Tidy per prompt: role, centre, first, last, clean/knocked metric and P(answer),
    relative change of P(answer) = (p_knocked − p_clean) / p_clean, and metric change."""
    model, tokenizer = lm.model, lm.tokenizer
    L = model.cfg.n_layers
    k = window or default_window(L)
    batch = prepared.clean_batch(tokenizer)
    width = batch.tokens.shape[1]
    positions = task_positions(prepared, tokenizer)
    clean_logits = final_logits(model, batch, batch_size)
    clean_metric = prepared.metric(clean_logits).numpy()
    clean_p = prepared.answer_probability(clean_logits).numpy()
    frames = []
    jobs = [(role, w) for role in roles for w in windows(L, k)]
    masks = {role: position_mask(positions, role, width) for role in roles}
    for role, (centre, first, last) in tqdm(jobs, desc="knockout", disable=not progress,
                                            leave=False):
        logits = final_logits(model, batch, batch_size,
                              hooks_for=knockout_hooks(range(first, last + 1), masks[role]))
        metric = prepared.metric(logits).numpy()
        p = prepared.answer_probability(logits).numpy()
        frames.append(pd.DataFrame({
            "prompt": range(len(metric)), "role": role, "window": k, "centre": centre,
            "first": first, "last": last, "clean_metric": clean_metric, "metric": metric,
            "metric_change": metric - clean_metric, "clean_p": clean_p, "p": p,
            "relative_p_change": (p - clean_p) / clean_p,
        }))
    return pd.concat(frames, ignore_index=True)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    return (table.groupby(["role", "centre", "first", "last"], as_index=False)
            [["relative_p_change", "metric_change"]].mean())


def peak_windows(table: pd.DataFrame) -> dict[str, dict]:
    """Per role: the window whose knockout lowers P(answer) most (mean relative change)."""
    out = {}
    for role, part in summarise(table).groupby("role"):
        row = part.loc[part["relative_p_change"].idxmin()]
        out[role] = {"centre": int(row["centre"]), "first": int(row["first"]),
                     "last": int(row["last"]), "relative_p_change": float(row["relative_p_change"]),
                     "metric_change": float(row["metric_change"])}
    return out


def knockout_figure(table: pd.DataFrame, value: str = "relative_p_change", title: str = ""):
    import plotly.express as px

    means = summarise(table)
    k = int(table["window"].iloc[0])
    label = {"relative_p_change": "relative change in P(answer)",
             "metric_change": "change in the metric"}[value]
    fig = px.line(means, x="centre", y=value, color="role", markers=True,
                  title=title or f"Attention knockout from the last position ({k}-layer windows)",
                  labels={"centre": "window centre layer", value: label})
    fig.add_hline(y=0, line_color="#999", line_width=1)
    return fig

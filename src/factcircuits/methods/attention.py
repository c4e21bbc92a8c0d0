"""Attention patterns of chosen heads on one prompt, as tidy tables and an interactive plotly
figure (one heatmap per head, switched by a dropdown). Only the needed layers' `hook_pattern`
is kept; patterns have the query-head count also under grouped-query attention."""

from __future__ import annotations

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.hooks import hook_name
from factcircuits.models import LoadedModel
from factcircuits.results.parameter_declarations import whole

Patterns = dict[tuple[int, int], Float[Tensor, "query key"]]


EXAMPLE = whole("example", 0, "the prompt shown (index among those analysed)", 0,
                allowed="use a prompt index of at least 0")
N_HEADS = whole("n_heads", 6, "heads shown (the largest by |DLA|)", 1,
                allowed="use a whole number of at least 1 (heads shown)")


@torch.no_grad()
def head_patterns(lm: LoadedModel, prepared: PreparedTask, heads: list[tuple[int, int]], *,
                  example: int = EXAMPLE.default) -> tuple[list[str], Patterns]:
    """(token strings, {(layer, head): pattern [query, key]}) for prompt `example`."""
    model, tokenizer = lm.model, lm.tokenizer
    batch = prepared.subset([example]).clean_batch(tokenizer)
    layers = sorted({int(ly) for ly, _ in heads})
    store: dict[int, torch.Tensor] = {}

    def keep(layer):
        def hook(pattern, hook):
            store[layer] = pattern[0].float().cpu()
        return hook

    device = model.cfg.device
    model.run_with_hooks(batch.tokens.to(device), attention_mask=batch.attention_mask.to(device),
                         fwd_hooks=[(hook_name(ly, "pattern"), keep(ly)) for ly in layers])
    tokens = [tokenizer.decode([t]) for t in batch.tokens[0].tolist()]
    return tokens, {(int(ly), int(h)): store[int(ly)][int(h)] for ly, h in heads}


def last_token_attention(tokens: list[str], patterns: Patterns) -> pd.DataFrame:
    """Tidy: layer, head, key position, key token, attention from the last token."""
    rows = []
    for (ly, h), p in patterns.items():
        for k, tok in enumerate(tokens):
            rows.append({"layer": ly, "head": h, "key": k, "token": tok,
                         "attention": float(p[-1, k])})
    return pd.DataFrame(rows)


def pattern_figure(tokens: list[str], patterns: Patterns, title: str = "Attention patterns"):
    """One heatmap per head (query × key), chosen with a dropdown; hover shows the tokens."""
    import plotly.graph_objects as go

    labels = [f"{i}: {t!r}" for i, t in enumerate(tokens)]
    fig = go.Figure()
    keys = list(patterns)
    for i, key in enumerate(keys):
        fig.add_trace(go.Heatmap(z=patterns[key].numpy(), x=labels, y=labels, zmin=0, zmax=1,
                                 colorscale="Blues", visible=i == 0, name=f"L{key[0]}H{key[1]}",
                                 hovertemplate="query %{y}<br>key %{x}<br>%{z:.3f}<extra></extra>"))
    buttons = [{"label": f"L{ly}H{h}", "method": "update",
                "args": [{"visible": [j == i for j in range(len(keys))]},
                         {"title": f"{title}: layer {ly}, head {h}"}]}
               for i, (ly, h) in enumerate(keys)]
    first = keys[0] if keys else (0, 0)
    fig.update_layout(title=f"{title}: layer {first[0]}, head {first[1]}",
                      updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.15}],
                      xaxis_title="key", yaxis_title="query", yaxis_autorange="reversed",
                      height=600)
    return fig


def pattern_figure_notes(patterns: Patterns) -> tuple[str, str]:
    """What `pattern_figure` shows, for the site (a menu of heads, hover) and for the PDF (its
    static image holds the first head only)."""
    keys = list(patterns)
    if not keys:
        return "", ""
    first = f"L{keys[0][0]}H{keys[0][1]}"
    others = len(keys) - 1
    html = ("Pick a head from the menu above the figure; hover over a cell for its query and "
            "key tokens." if others else "Hover over a cell for its query and key tokens.")
    pdf = (f"The image shows the first head, {first}; the HTML version has a menu with the "
           f"other {others} head{'s' if others != 1 else ''}. The next figure shows every "
           "head's attention from the last token." if others else
           f"The image shows head {first}.")
    return html, pdf


def last_token_figure(table: pd.DataFrame, title: str = "Attention from the last token"):
    import plotly.express as px

    table = table.assign(head_label=[f"L{ly}H{h}" for ly, h in zip(table["layer"], table["head"])],
                         key_label=[f"{k}: {t!r}" for k, t in zip(table["key"], table["token"])])
    wide = table.pivot(index="head_label", columns="key_label", values="attention")
    wide = wide[sorted(wide.columns, key=lambda c: int(c.split(":")[0]))]
    return px.imshow(wide, color_continuous_scale="Blues", zmin=0, zmax=1, aspect="auto",
                     labels={"x": "key token", "y": "head", "color": "attention"}, title=title)

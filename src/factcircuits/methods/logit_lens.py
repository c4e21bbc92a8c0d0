"""Logit lens and direct logit attribution by layer (the original study's plot).

The accumulated residual stream at the last token, after the embeddings and after every
attention and MLP sublayer, is projected on the answer direction through the final norm with
its scale frozen at the final residual's value (TransformerLens's
`cache.accumulated_resid(apply_ln=True)`), plus the unembedding-bias term. So the last point
equals the final metric (cloze, and yes/no with the summed logit difference; for the
linearised yes/no log-odds it equals the metric minus the linearisation offset, which is added
back so the curve ends on the metric), and each step's increase is that sublayer's DLA.

The per-layer top tokens use the ordinary logit lens instead: each accumulated residual
normalised with its own scale and unembedded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from factcircuits.methods.attribution import (
    AnswerDirection,
    Decomposition,
    answer_direction,
    decompose,
)
from factcircuits.methods.by_relation import relation_peaks
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.uncertainty import (
    peak_of_curves,
    percentile_interval,
    ratio_of_means_estimate,
    resample_counts,
    resampled_means,
)
from factcircuits.models import LoadedModel
from factcircuits.models.readout import final_readout
from factcircuits.results.parameter_declarations import BATCH_SIZE, SEED


def step_labels(n_layers: int) -> pd.DataFrame:
    """One row per logit-lens point: step, layer (−1 = embeddings), sublayer, label."""
    rows = [{"step": 0, "layer": -1, "sublayer": "embed", "label": "embed"}]
    for ly in range(n_layers):
        rows.append({"step": 2 * ly + 1, "layer": ly, "sublayer": "attn", "label": f"{ly} attn"})
        rows.append({"step": 2 * ly + 2, "layer": ly, "sublayer": "mlp", "label": f"{ly} mlp"})
    return pd.DataFrame(rows)


def accumulated_projection(dec: Decomposition, direction: AnswerDirection) -> torch.Tensor:
    """[n, 2·n_layers + 1]: the metric read from the accumulated residual stream at each step
    (final-scale norm, plus bias term and linearisation offset)."""
    acc = dec.normalise(dec.accumulated())
    values = torch.einsum("nsd,nd->ns", acc, direction.vectors)
    return values + (direction.bias + direction.offset)[:, None]


@dataclass
class LogitLens:
    table: pd.DataFrame  # tidy: prompt, step, layer, sublayer, label, value
    direction: AnswerDirection
    decomposition: Decomposition

    def mean_curve(self, seed: int = SEED.default) -> pd.DataFrame:
        """The mean over prompts after each step, with its 95 % bootstrap band (low, high)."""
        curve = (self.table.groupby(["step", "layer", "sublayer", "label"], as_index=False)
                 ["value"].mean().sort_values("step").reset_index(drop=True))
        values = self.per_prompt()
        samples = resampled_means(values, resample_counts(len(values), seed=seed))
        bands = [percentile_interval(samples[:, j]) for j in range(values.shape[1])]
        return curve.assign(low=[b[0] for b in bands], high=[b[1] for b in bands])

    def per_prompt(self) -> np.ndarray:
        """[n_prompts, n_steps] the metric read after each step, per prompt."""
        return (self.table.pivot(index="prompt", columns="step", values="value")
                .sort_index(axis=1).to_numpy())

    def intervals(self, seed: int = SEED.default) -> dict:
        """95 % bootstrap intervals over prompts of the shares and the peak jump, and the range
        of layers that holds the largest jump in 95 % of resamples."""
        values = self.per_prompt()
        jumps = np.diff(values, axis=1)  # step s → s+1: the sublayer of step s+1
        steps = step_labels(self.decomposition.n_layers).iloc[1:]  # the sublayer of each jump
        is_attn = (steps["sublayer"] == "attn").to_numpy()
        attn, mlp = jumps[:, is_attn].sum(1), jumps[:, ~is_attn].sum(1)
        peak = peak_of_curves(jumps, seed=seed, layers=steps["layer"].to_numpy(),
                              n_layers=self.decomposition.n_layers)
        return {"mlp_share_ci": ratio_of_means_estimate(mlp, attn + mlp, seed).interval(),
                "attn_share_ci": ratio_of_means_estimate(attn, attn + mlp, seed).interval(),
                "total_increase_ci": ratio_of_means_estimate(attn + mlp, np.ones(len(attn)),
                                                             seed).interval(),
                "peak_jump_ci": peak.value.interval(),
                "peak_layer_range": peak.layer_range(),
                "peak_layer_resolved": peak.resolved()}

    def by_relation(self, relations, seed: int = SEED.default) -> pd.DataFrame:
        """The largest single jump per relation (`relations`: one per prompt), with the range
        of resampled peak layers, and whether it excludes the pooled peak layer."""
        steps = step_labels(self.decomposition.n_layers).iloc[1:]  # the sublayer of each jump
        return relation_peaks(np.diff(self.per_prompt(), axis=1), relations,
                              self.shares()["peak_layer"], self.decomposition.n_layers, seed,
                              layers=steps["layer"].to_numpy())

    def headline(self, seed: int = SEED.default) -> dict:
        """The numbers notebook 02 narrates and saves, each aggregate with its interval."""
        shares = self.shares()
        return {"mlp_share": shares["mlp_share"], "attn_share": shares["attn_share"],
                "peak_layer": shares["peak_layer"], "peak_sublayer": shares["peak_sublayer"],
                "peak_jump": shares["peak_jump"], "total_increase": shares["total_increase"],
                **self.intervals(seed), "direction": self.direction.kind,
                "n_prompts": int(self.table["prompt"].nunique())}

    def shares(self) -> dict[str, float]:
        """Attention and MLP shares of the total increase from the embeddings to the final
        metric (mean curve), and the step with the largest single increase."""
        curve = self.mean_curve()
        jumps = curve["value"].diff()
        jumps.iloc[0] = float("nan")
        attn = float(jumps[curve["sublayer"] == "attn"].sum())
        mlp = float(jumps[curve["sublayer"] == "mlp"].sum())
        total = attn + mlp
        peak = int(jumps.idxmax())
        return {
            "total_increase": total,
            "attn_increase": attn, "mlp_increase": mlp,
            "attn_share": attn / total if total else float("nan"),
            "mlp_share": mlp / total if total else float("nan"),
            "peak_layer": int(curve.loc[peak, "layer"]),
            "peak_sublayer": str(curve.loc[peak, "sublayer"]),
            "peak_jump": float(jumps.iloc[peak]),
            "final_value": float(curve["value"].iloc[-1]),
            "embed_value": float(curve["value"].iloc[0]),
        }


def share_caveat(shares: dict[str, float]) -> str:
    """A sentence for when the attention/MLP shares should not be read as shares: the total
    increase is small next to the sublayers' own moves (they mostly cancel), so the ratios
    blow up or leave 0–100%. Empty when the shares are meaningful."""
    gross = abs(shares["attn_increase"]) + abs(shares["mlp_increase"])
    total = shares["total_increase"]
    if gross and abs(total) >= 0.25 * gross and 0 <= shares["mlp_share"] <= 1:
        return ""
    return (f"The sublayers' contributions largely cancel (net {total:+.3f} against "
            f"{gross:.3f} moved in total), so the attention/MLP shares are not meaningful "
            "here; read the curve and the per-sublayer bars instead.")


def logit_lens(lm: LoadedModel, prepared: PreparedTask, *, kind: str = "auto",
               batch_size: int = BATCH_SIZE.default, progress: bool = False,
               dec: Decomposition | None = None) -> LogitLens:
    """Logit lens on the answer direction for every prompt of `prepared`."""
    dec = dec or decompose(lm, prepared, batch_size=batch_size, heads=False, progress=progress)
    direction = answer_direction(lm, prepared, dec.pre_cap_logits, kind)
    values = accumulated_projection(dec, direction)
    labels = step_labels(dec.n_layers)
    n, _s = values.shape
    table = pd.concat([labels.assign(prompt=i, value=values[i].numpy()) for i in range(n)],
                      ignore_index=True)
    return LogitLens(table[["prompt", "step", "layer", "sublayer", "label", "value"]],
                     direction, dec)


def top_tokens(lm: LoadedModel, dec: Decomposition, prompt: int = 0, k: int = 5,
               answer_ids=()) -> pd.DataFrame:
    """Ordinary logit lens for one prompt: at each step, the residual normalised with its own
    scale and unembedded; the k top tokens with their probabilities, and the rank of each of
    `answer_ids`."""
    model, tokenizer = lm.model, lm.tokenizer
    readout = final_readout(model)  # the final norm's gain: exact on the unprocessed bridge too
    eps = float(getattr(model.cfg, "eps", 1e-5) or 1e-5)
    logits = readout.logits(readout.normalise(dec.accumulated()[prompt], eps))  # [s, vocab]
    if readout.soft_cap:  # what the model would output from that residual
        logits = readout.soft_cap * torch.tanh(logits / readout.soft_cap)
    probs = logits.softmax(-1)
    top = probs.topk(k, dim=-1)
    labels = step_labels(dec.n_layers)
    rows = []
    for s in range(len(labels)):
        row = labels.iloc[s].to_dict()
        row["top_tokens"] = " | ".join(repr(tokenizer.decode([int(t)])) for t in top.indices[s])
        row["top_probs"] = " | ".join(f"{float(p):.3f}" for p in top.values[s])
        for a in answer_ids:
            name = tokenizer.decode([int(a)])
            row[f"rank {name!r}"] = int((logits[s] > logits[s, int(a)]).sum()) + 1
        rows.append(row)
    return pd.DataFrame(rows)


def lens_figure(lens: LogitLens, title: str | None = None):
    """Mean accumulated metric after every sublayer, with every prompt faintly behind."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for prompt, part in lens.table.groupby("prompt"):
        fig.add_trace(go.Scatter(x=part["label"], y=part["value"], mode="lines",
                                 line={"width": 1, "color": "rgba(120,120,120,0.25)"},
                                 name=f"prompt {prompt}", showlegend=False, hoverinfo="skip"))
    curve = lens.mean_curve()
    fig.add_trace(go.Scatter(x=curve["label"], y=curve["high"], mode="lines",
                             line={"width": 0}, showlegend=False, hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=curve["label"], y=curve["low"], mode="lines", fill="tonexty",
                             line={"width": 0}, fillcolor="rgba(34,34,34,0.15)",
                             name="95% interval of the mean (bootstrap over prompts)"))
    colors = ["#636efa" if s == "attn" else "#ef553b" if s == "mlp" else "#444"
              for s in curve["sublayer"]]
    fig.add_trace(go.Scatter(x=curve["label"], y=curve["value"], mode="lines+markers",
                             marker={"color": colors, "size": 6}, line={"color": "#222"},
                             name="mean"))
    fig.update_layout(title=title or f"Logit lens: {lens.direction.label}",
                      xaxis_title="after sublayer (blue = attention, red = MLP)",
                      yaxis_title="metric read from the residual stream")
    return fig


def sublayer_increases(curve: pd.DataFrame) -> pd.DataFrame:
    """The mean curve's step at each sublayer (`increase`: its value minus the previous
    point's), from the first sublayer on."""
    return curve.assign(increase=curve["value"].diff()).iloc[1:]


def increase_figure(curve: pd.DataFrame):
    """Bars of `sublayer_increases`: attention and MLP side by side per layer."""
    import plotly.express as px

    return px.bar(sublayer_increases(curve), x="layer", y="increase", color="sublayer",
                  barmode="group",
                  title="Increase of the metric at each sublayer (mean over prompts)")

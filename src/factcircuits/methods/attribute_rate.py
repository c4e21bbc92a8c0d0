"""Attribute rate (Geva et al. 2023, "Dissecting recall of factual associations", §4): is the
hidden state at the last subject token enriched with the subject's attributes?

After every layer the residual at the last subject token is read with the ordinary logit lens
(normalised with its own scale through the final norm's gain and bias, then unembedded, as
`logit_lens.top_tokens` does) and the share of the subject's attribute tokens among the top k
tokens is counted. Soft-capping (Gemma 2) is monotone, so it leaves the top k unchanged and
is not applied.

Attribute tokens of a subject: the first token of every object the dataset pairs with that
subject, over all its relations (cloze rows: `answer`; yes/no rows of true statements: the
`clue` "object: X"), the analysed prompt's own answer included. No token is excluded as too
common; the first control below measures how often any object token of the dataset reaches
the top k, which is what a common token would inflate.

Two controls, each at every layer:
  other_subjects   the same position, with the attribute tokens of every *other* subject of
                   the dataset (minus this subject's own): does the position hold object-like
                   tokens in general, or this subject's attributes?
  first_relation   this subject's attribute tokens at the prompt's first relation token (the
                   question's first token that is neither subject nor last): is the subject
                   position special, or are these tokens likely everywhere?
"Enriched" means the rate at its peak layer is above both controls at that layer, with a
paired bootstrap interval of each difference that excludes 0 (`AttributeRate.headline`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.hooks import hook_names
from factcircuits.methods.intervals import claim
from factcircuits.methods.positions import task_positions
from factcircuits.methods.uncertainty import (
    difference_at_peak,
    mean_estimate,
    paired_comparison,
    peak_of_curves,
    percentile_interval,
    resample_counts,
    resampled_means,
    swap_test,
)
from factcircuits.models import LoadedModel
from factcircuits.models.forward import final_logits
from factcircuits.models.readout import final_readout
from factcircuits.results.parameter_declarations import BATCH_SIZE, SEED, whole

READS = ("subject", "other_subjects", "first_relation")  # the rate and its two controls
READ_TITLES = {"subject": "own attributes at the last subject token",
               "other_subjects": "other subjects' attributes at the last subject token",
               "first_relation": "own attributes at the first relation token"}
OBJECT_CLUE = "object:"


ATTRIBUTE_K = whole("attribute_k", 50, "top tokens in which the attribute rate counts "
                    "attribute tokens", 1, allowed="use a whole number of at least 1 (top "
                    "tokens in which the attribute rate counts attribute tokens)")


def subject_objects(rows: pd.DataFrame) -> dict[str, list[str]]:
    """Every object the dataset `rows` pair with each subject (stripped, in first-seen order):
    cloze answers, and the `clue` "object: X" of yes/no rows that state a true fact."""
    found: dict[str, list[str]] = {}

    def add(subject, obj):
        obj = str(obj).strip()
        if obj and obj.lower() != "nan":
            objs = found.setdefault(str(subject), [])
            if obj not in objs:
                objs.append(obj)

    for row in rows.itertuples(index=False):
        if getattr(row, "task", "cloze") == "cloze":
            add(row.subject, getattr(row, "answer", ""))
        elif bool(getattr(row, "label", False)):
            clue = str(getattr(row, "clue", "") or "")
            if clue.startswith(OBJECT_CLUE):
                add(row.subject, clue[len(OBJECT_CLUE):])
    return found


def first_token(tokenizer, obj: str) -> int:
    """The token a model predicts first for `obj` after a space (" Paris"), as the cloze
    answers are stored."""
    ids = tokenizer(" " + obj.strip(), add_special_tokens=False)["input_ids"]
    return int(ids[0])


def attribute_tokens(tokenizer, rows: pd.DataFrame) -> dict[str, list[int]]:
    """subject → the distinct first tokens of its objects (see `subject_objects`)."""
    out = {}
    for subject, objs in subject_objects(rows).items():
        ids = []
        for obj in objs:
            t = first_token(tokenizer, obj)
            if t not in ids:
                ids.append(t)
        out[subject] = ids
    return out


@torch.inference_mode()
def capture_positions(model, batch, names: list[str], positions: Int[Tensor, "n p"],
                      batch_size: int = BATCH_SIZE.default) -> dict[str, Float[Tensor, "n p d"]]:
    """Each named hook's activation at `positions` [n, p] of each prompt (float32, CPU)."""
    values: dict[str, list[Tensor]] = {n: [] for n in names}

    def hooks_for(part, last, mask):
        pos = positions[part]

        def keep(name):
            def hook(act, hook):
                rows = torch.arange(act.shape[0], device=act.device)[:, None]
                values[name].append(act[rows, pos.to(act.device)].float().cpu())
            return hook
        return [(n, keep(n)) for n in names]

    final_logits(model, batch, batch_size, hooks_for=hooks_for, desc="attribute rate")
    return {n: torch.cat(v) for n, v in values.items()}


def topk_share(logits: Float[Tensor, "m vocab"], tokens: list[list[int]], k: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(share, count) per row: how many of that row's `tokens` are among its k top logits,
    and that as a share of len(tokens) (NaN for a row without tokens)."""
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    count = np.full(len(tokens), np.nan)
    share = np.full(len(tokens), np.nan)
    for i, ids in enumerate(tokens):
        if ids:
            hit = int(torch.isin(torch.as_tensor(ids), top[i]).sum())
            count[i], share[i] = hit, hit / len(ids)
    return share, count


@dataclass
class AttributeRate:
    table: pd.DataFrame  # tidy: prompt, read, layer, share, count, n_tokens
    k: int
    n_layers: int

    def per_prompt(self, read: str = "subject") -> np.ndarray:
        """[n_prompts, n_layers] share of `read`'s tokens in the top k (NaN: no tokens)."""
        part = self.table[self.table["read"] == read]
        return (part.pivot(index="prompt", columns="layer", values="share")
                .reindex(columns=range(self.n_layers)).sort_index().to_numpy(dtype=float))

    def curves(self, seed: int = SEED.default) -> pd.DataFrame:
        """Mean share per read × layer with its 95 % bootstrap band over prompts (low, high)."""
        rows = []
        for read in READS:
            values = self.per_prompt(read)
            if not len(values):
                continue
            samples = resampled_means(values, resample_counts(len(values), seed=seed))
            for layer in range(self.n_layers):
                low, high = percentile_interval(samples[:, layer])
                col = values[:, layer]
                rows.append({"read": read, "layer": layer,
                             "rate": float(np.nanmean(col)) if (~np.isnan(col)).any()
                             else float("nan"), "low": low, "high": high,
                             "n_prompts": int((~np.isnan(col)).sum())})
        return pd.DataFrame(rows)

    def headline(self, seed: int = SEED.default) -> dict:
        """The peak of the attribute rate, the controls at that layer and whether the peak
        exceeds both (paired bootstrap intervals of the differences exclude 0)."""
        rate = self.per_prompt("subject")
        usable = ~np.all(np.isnan(rate), axis=1)
        out: dict = {"attribute_rate_k": self.k, "attribute_rate_n_prompts": int(usable.sum())}
        if not usable.any():
            return out
        tokens = self.table[(self.table["read"] == "subject") & (self.table["layer"] == 0)]
        peak = peak_of_curves(rate[usable], seed=seed, n_layers=self.n_layers)
        layer = peak.layer
        out.update({"attribute_rate_tokens_mean": float(tokens["n_tokens"][tokens["n_tokens"] > 0]
                                                        .mean()),
                    "attribute_rate_peak": peak.value.value,
                    "attribute_rate_peak_ci": peak.value.interval(),
                    "attribute_rate_peak_layer": layer,
                    "attribute_rate_peak_layer_range": peak.layer_range()})
        enriched, strongest = True, None
        for read in READS[1:]:
            control = self.per_prompt(read)[:, layer]
            if np.all(np.isnan(control)):
                enriched = False
                continue
            estimate = mean_estimate(control[~np.isnan(control)], seed)
            excess = paired_comparison(rate[:, layer], control, seed).difference
            out[f"attribute_rate_{read}"] = estimate.value
            out[f"attribute_rate_{read}_ci"] = estimate.interval()
            out[f"attribute_rate_excess_over_{read}_ci"] = excess.interval()
            enriched = enriched and excess.low > 0
            both = usable & ~np.all(np.isnan(self.per_prompt(read)), axis=1)
            if both.sum() >= 2:  # the same test with the peak layer chosen inside it
                p = swap_test(rate[both], self.per_prompt(read)[both], difference_at_peak, seed)
                out[f"claim_attribute_rate_above_{read}"] = claim(
                    f"attribute_rate_above_{read}",
                    "the attribute rate at the last subject token peaks above its control "
                    f"({READ_TITLES[read]})", excess, p,
                    "exact paired permutation test over prompts (peak layer re-chosen on every "
                    "swap)")
            if strongest is None or estimate.value > strongest[1].value:
                strongest = (read, estimate, excess)
        if strongest is not None:
            read, estimate, excess = strongest
            out.update({"attribute_rate_control": estimate.value,
                        "attribute_rate_control_ci": estimate.interval(),
                        "attribute_rate_control_kind": READ_TITLES[read],
                        "attribute_rate_excess": excess.value,
                        "attribute_rate_excess_ci": excess.interval()})
        out["attribute_rate_enriched"] = bool(enriched and strongest is not None)
        return out


def attribute_rate(lm: LoadedModel, prepared: PreparedTask, dataset_rows: pd.DataFrame, *,
                   k: int = ATTRIBUTE_K.default,
                   batch_size: int = BATCH_SIZE.default) -> AttributeRate:
    """The attribute rate and its controls after every layer, for every prompt of `prepared`
    (attribute tokens from `dataset_rows`, normally the whole dataset)."""
    model, tokenizer = lm.model, lm.tokenizer
    L = model.cfg.n_layers
    own = attribute_tokens(tokenizer, dataset_rows)
    every = {t for ids in own.values() for t in ids}
    positions = task_positions(prepared, tokenizer)
    subject_last = [p.of_class("subject_last")[0] for p in positions]
    first_relation = [p.relation[0] if p.relation else -1 for p in positions]
    at = torch.tensor([[s, r if r >= 0 else s] for s, r in zip(subject_last, first_relation)])
    names = hook_names("resid_post", range(L))
    resid = capture_positions(model, prepared.clean_batch(tokenizer), names, at, batch_size)
    readout = final_readout(model)
    eps = float(getattr(model.cfg, "eps", 1e-5) or 1e-5)
    subjects = [str(s) for s in prepared.rows["subject"]]
    own_ids = [own.get(s, []) for s in subjects]
    other_ids = [sorted(every - set(ids)) for ids in own_ids]
    relation_ids = [ids if r >= 0 else [] for ids, r in zip(own_ids, first_relation)]
    frames = []
    for layer, name in enumerate(names):
        logits = readout.logits(readout.normalise(resid[name], eps))  # [n, 2, vocab]
        for read, slot, ids in (("subject", 0, own_ids), ("other_subjects", 0, other_ids),
                                ("first_relation", 1, relation_ids)):
            share, count = topk_share(logits[:, slot], ids, k)
            frames.append(pd.DataFrame({"prompt": range(len(ids)), "read": read,
                                        "layer": layer, "share": share, "count": count,
                                        "n_tokens": [len(i) for i in ids]}))
    return AttributeRate(pd.concat(frames, ignore_index=True), k, L)


def rate_figure(curves: pd.DataFrame, k: int, title: str | None = None):
    """The attribute rate and its controls by layer, each with its bootstrap band."""
    import plotly.graph_objects as go

    colors = {"subject": "#d62728", "other_subjects": "#7f7f7f", "first_relation": "#1f77b4"}
    fig = go.Figure()
    for read, part in curves.groupby("read", sort=False):
        fig.add_trace(go.Scatter(x=part["layer"], y=part["high"], mode="lines",
                                 line={"width": 0}, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=part["layer"], y=part["low"], mode="lines", fill="tonexty",
                                 line={"width": 0}, showlegend=False, hoverinfo="skip",
                                 fillcolor="rgba(120,120,120,0.15)"))
        fig.add_trace(go.Scatter(x=part["layer"], y=part["rate"], mode="lines+markers",
                                 line={"color": colors[read]}, name=READ_TITLES[read]))
    fig.update_layout(title=title or f"Attribute rate: share of attribute tokens in the "
                      f"logit lens's top {k}<br><sup>mean over prompts, 95% bootstrap band"
                      "</sup>", xaxis_title="after layer",
                      yaxis_title=f"share of attribute tokens in the top {k}")
    return fig

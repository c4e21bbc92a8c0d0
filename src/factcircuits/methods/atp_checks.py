"""How good the AtP scan is: its estimates against exact patching (rank correlation, recall of
the largest effects, error by layer, cell by cell) and its top proposals patched exactly.
The estimator itself is `attribution_patching`."""

from __future__ import annotations

import math

import pandas as pd
import torch

from factcircuits.errors import UserError
from factcircuits.methods.attribution_patching import ScanResult
from factcircuits.methods.engine import MAX_PATCHES, Resumable, Step, execute, prepare_group
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.hooks import hook_name
from factcircuits.methods.patching import PatchResult
from factcircuits.models import LoadedModel
from factcircuits.results.parameter_declarations import whole

SCAN_TOP_K = whole("scan_top_k", 10, "attribution patching: cells per prompt it proposes for "
                   "exact patching", 1,
                   allowed="use a whole number of at least 1 (cells per prompt)")


def top_cells(result: ScanResult, k: int = 10, star: bool = False) -> pd.DataFrame:
    """Per prompt, the k cells with the largest |estimate| (the scan's proposals): columns
    prompt_id, layer, pos (, head), estimate."""
    est = result.estimate(star).masked_fill(~result.valid(), 0.0)
    rows = []
    for i in range(est.shape[-1]):
        flat = est[..., i].flatten()
        top = flat.abs().topk(min(k, int(result.valid()[..., i].sum()))).indices
        for rank, j in enumerate(top.tolist()):
            cell = torch.unravel_index(torch.tensor(j), est.shape[:-1])
            row = {"prompt_id": i, "rank": rank, "layer": int(cell[0]), "pos": int(cell[1])}
            if result.component == "z":
                row["head"] = int(cell[2])
            rows.append(row | {"estimate": float(flat[j])})
    return pd.DataFrame(rows)


@torch.inference_mode()
def patch_cells(lm: LoadedModel, prepared: PreparedTask, component: str, cells: pd.DataFrame,
                *, metric=None, max_patches=MAX_PATCHES.default, budget_bytes="auto") -> pd.Series:
    """Exact patching (clean into corrupted) of the given cells only, on the patching engine:
    `cells` has prompt_id, layer, pos (and head for z); returns the exact patched − corrupted
    metric per cell (aligned with `cells`). Each prompt is a group of its own; its cells
    share forwards recomputed from the first of their positions."""
    model = lm.model
    metric = metric or prepared.metric
    clean, corrupt = prepared.pairs(lm.tokenizer)
    runner = Resumable(model)
    groups, plan = [], []
    for i, part in cells.groupby("prompt_id"):
        n = int(clean.lengths[i])
        names = {hook_name(layer, component) for layer in part["layer"]}
        groups.append(prepare_group(runner, model, metric, torch.tensor([int(i)]),
                                    clean.tokens[[i], :n], corrupt.tokens[[i], :n], names))
        past = int(part["pos"].min())  # positions before every cell of the prompt: unchanged
        for cell in part.itertuples():
            head = getattr(cell, "head", None)
            patch = (hook_name(cell.layer, component), None if head is None else int(head),
                     int(cell.pos))
            plan.append(Step(len(groups) - 1, past, (int(cell.layer), [patch]), cell.Index))
    effect = pd.Series(math.nan, index=cells.index, dtype=float)
    for steps, values in execute(runner, model, groups, plan, metric, max_patches=max_patches,
                                 budget_bytes=budget_bytes, progress=False):
        reference = groups[steps[0].group].reference_metric
        effect.loc[[s.cell for s in steps]] = (values[:, 0] - reference[0]).numpy()
    return effect


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two equally long vectors (average ranks for ties)."""
    if len(a) < 2:
        return math.nan
    ranks = pd.DataFrame({"a": a.double().numpy(), "b": b.double().numpy()}).rank()
    return float(ranks["a"].corr(ranks["b"]))


def agreement(result: ScanResult, exact: PatchResult, k_exact: int = 5, k_scan: int = 10,
              star: bool = False) -> dict:
    """How well the scan matches exact patching of the same component over the whole grid.

    spearman: rank correlation of estimated and exact effects (patched − corrupted) over every
    cell patching can change, pooled across prompts (identical-prefix and padding cells,
    exactly 0 in both, are left out so they cannot inflate it); spearman_median: the median of
    the per-prompt correlations; recall: per prompt, the share of the k_exact cells with the
    largest exact |effect| that are among the scan's k_scan largest |estimate|, averaged;
    exact_near_top: per prompt, how many cells' exact |effect| is within 10% of the k_exact-th
    largest, averaged (many near-ties make "the top k" arbitrary and the recall with it)."""
    est = result.heads(star) if exact.index_name == "head" else result.estimate(star)
    true = exact.values - exact.corrupted
    if est.shape != true.shape:
        raise UserError(f"scan grid {tuple(est.shape)} and exact grid {tuple(true.shape)} "
                        "differ: compare the same component and layout")
    valid = torch.ones_like(est, dtype=torch.bool) if exact.index_name == "head" else \
        result.valid()
    per_prompt, recalls, near = [], [], []
    for i in range(est.shape[-1]):
        ok = valid[..., i]
        e, t = est[..., i][ok], true[..., i][ok]
        if len(e) < 2:
            continue
        per_prompt.append(spearman(e, t))
        top = t.abs().topk(min(k_exact, len(t)))
        top_true = set(top.indices.tolist())
        near.append(int((t.abs() >= 0.9 * top.values[-1]).sum()))
        top_est = set(e.abs().topk(min(k_scan, len(e))).indices.tolist())
        recalls.append(len(top_true & top_est) / len(top_true))
    return {"component": result.component + (" (all positions)" if exact.index_name == "head"
                                             else ""),
            "method": "AtP*" if star else "AtP", "n_cells": int(valid.sum()),
            "spearman": spearman(est[valid], true[valid]),
            "spearman_median": float(torch.tensor(per_prompt).median()) if per_prompt
            else math.nan,
            f"recall_top{k_exact}_in_top{k_scan}": float(torch.tensor(recalls).mean())
            if recalls else math.nan,
            f"exact_near_top{k_exact}": float(torch.tensor(near, dtype=torch.float).mean())
            if near else math.nan}


def check_proposals(lm: LoadedModel, prepared: PreparedTask, result: ScanResult, *,
                    k: int = 10, star: bool = False) -> pd.DataFrame:
    """The scan's top-k cells per prompt, exactly patched: top_cells + an `exact` column
    (exact patched − corrupted metric)."""
    cells = top_cells(result, k, star)
    cells["exact"] = patch_cells(lm, prepared, result.component, cells)
    return cells


NORMALIZED = "fraction of the clean−corrupted gap"


def mean_gap(exact: PatchResult) -> float:
    """The clean − corrupted metric gap of the pairs, mean over prompts: the unit in which
    exact patching's class averages are normalized (`PatchResult.normalized_mean`), and so
    the unit the scan's figures use too. One number for every cell: ranks, signs and the
    correlations above are unchanged by it, and a pair with a tiny gap of its own cannot blow
    its cells up. NaN when the gap is 0."""
    gap = float(exact.clean.mean() - exact.corrupted.mean())
    return gap if gap != 0 else math.nan


def error_by_layer(result: ScanResult, exact: PatchResult) -> pd.DataFrame:
    """Mean |estimate − exact effect| per layer over the cells patching can change, for AtP
    and AtP*, with the mean |exact effect| for scale; all as fractions of the clean−corrupted
    gap (`mean_gap`), the unit of exact patching's figures."""
    true = exact.values - exact.corrupted
    valid = result.valid()
    scale = abs(mean_gap(exact))
    rows = []
    for layer in range(true.shape[0]):
        ok = valid[layer]
        rows.append({"layer": layer, "exact_abs": float(true[layer][ok].abs().mean()) / scale,
                     "atp_abs_error": float((result.atp[layer] - true[layer])[ok].abs().mean())
                     / scale,
                     "atp_star_abs_error": float((result.atp_star[layer]
                                                  - true[layer])[ok].abs().mean()) / scale})
    return pd.DataFrame(rows)


def paired_cells(result: ScanResult, exact: PatchResult) -> pd.DataFrame:
    """One row per (layer, position, prompt) cell patching can change, AtP and AtP* rows:
    component, method, layer, pos, prompt_id, exact and estimated effect (patched −
    corrupted metric) and both as fractions of the clean−corrupted gap (`mean_gap`):
    exact_normalized, estimate_normalized."""
    true = exact.values - exact.corrupted
    ok = result.valid()
    gap = mean_gap(exact)
    layer, pos, prompt = (i[ok].numpy() for i in torch.meshgrid(
        *(torch.arange(s) for s in true.shape), indexing="ij"))
    return pd.concat([pd.DataFrame({
        "component": result.component, "method": "AtP*" if star else "AtP", "layer": layer,
        "pos": pos, "prompt_id": prompt, "exact": true[ok].numpy(),
        "estimate": result.estimate(star)[ok].numpy(),
        "exact_normalized": true[ok].numpy() / gap,
        "estimate_normalized": result.estimate(star)[ok].numpy() / gap})
        for star in (False, True)], ignore_index=True)


def _diagonal(fig, values, panels: bool = True) -> None:
    """The line where the estimate equals the exact effect (in every panel)."""
    finite = values[~pd.isna(values)]
    if not len(finite):
        return
    lo, hi = float(finite.min()), float(finite.max())
    where = {"row": "all", "col": "all"} if panels else {}
    fig.add_shape(type="line", x0=lo, y0=lo, x1=hi, y1=hi, line={"dash": "dot"}, **where)


def cells_figure(cells: pd.DataFrame):
    """`paired_cells` as a scatter, estimate against exact effect (fractions of the
    clean−corrupted gap, as exact patching's heatmaps), one panel per component and method,
    with the diagonal where the estimate is exact."""
    import plotly.express as px

    fig = px.scatter(cells, x="exact_normalized", y="estimate_normalized", color="layer",
                     facet_col="component", facet_row="method", opacity=0.6,
                     labels={"exact_normalized": "exact effect (normalized)",
                             "estimate_normalized": "estimated effect (normalized)"},
                     title="Attribution patching against exact patching, one dot per cell"
                           f"<br><sup>effects as a {NORMALIZED}</sup>")
    _diagonal(fig, cells[["exact_normalized", "estimate_normalized"]].to_numpy())
    return fig


def normalized_proposals(proposals: pd.DataFrame, gap: float) -> pd.DataFrame:
    """`check_proposals`' cells with their estimate and exact effect as fractions of the
    clean−corrupted gap `gap` (`mean_gap`), for the figure and the text."""
    return proposals.assign(estimate=proposals["estimate"] / gap,
                            exact=proposals["exact"] / gap)


def proposals_figure(proposals: pd.DataFrame, gap: float, title: str):
    """The scan's proposed head × position cells, estimate against exact effect, as fractions
    of the clean−corrupted gap."""
    import plotly.express as px

    cells = normalized_proposals(proposals, gap)
    fig = px.scatter(cells, x="exact", y="estimate", color="layer",
                     hover_data=["prompt_id", "pos", "head"],
                     labels={"exact": "exact effect (normalized)",
                             "estimate": "AtP estimate (normalized)"},
                     title=f"{title}<br><sup>effects as a {NORMALIZED}</sup>")
    _diagonal(fig, cells[["exact", "estimate"]].to_numpy(), panels=False)
    return fig


def proposal_summary(proposals: pd.DataFrame) -> dict:
    """How exact patching bears out the scan's proposals: the share with the estimate's sign,
    the rank correlation of estimate and exact effect, and the cell with the largest exact
    |effect|."""
    best = proposals.loc[proposals["exact"].abs().idxmax()]
    return {"n_cells": len(proposals),
            "same_sign": float((proposals["estimate"] * proposals["exact"] > 0).mean()),
            "spearman": spearman(torch.tensor(proposals["estimate"].to_numpy()),
                                 torch.tensor(proposals["exact"].to_numpy())),
            "best": best.to_dict()}

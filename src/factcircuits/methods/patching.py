"""Activation patching, fast: denoising (clean into corrupted, TransformerLens conventions) and
noising (corrupted into clean).

Denoising asks whether a state is sufficient: does restoring it alone bring the clean answer
back into the corrupted run? Noising asks whether it is necessary: does corrupting it alone
destroy the clean answer (Heimersheim & Nanda 2024)? Both run through the same engine: a
noising cell is a denoising cell with the roles of the runs swapped (the corrupted run's
activation copied into the clean run). Both are reported on one scale, 0 = corrupted metric,
1 = clean metric (`PatchResult.normalized`); `PatchResult.effect` turns that into the share
the cell explains: restored (denoising) or lost (noising, 1 − normalized).

For every denoising cell (layer l, position p) the clean run's activation replaces the
corrupted run's, and the task metric is read at the last token: `result[l, p]` is the same number as
`transformer_lens.patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache,
metric)[l, p]` (likewise `attn_out`, `mlp_out`, and per head `z` over all positions).
`patch` is the method (TransformerLens's `generic_activation_patch`); `patch_resid_pre`,
`patch_attn_out`, `patch_mlp_out`, `patch_heads`, `patch_heads_by_pos` are its named
specialisations (TransformerLens's `get_act_patch_*` partials).

Why it is faster than TransformerLens's one-full-forward-per-cell loop, with the same numbers
(the machinery is `methods.engine`):
- causality: patching (l, p) leaves every position < p unchanged in every layer, so a patched
  run only computes positions p.. of layers l.., reading the corrupted run's keys/values of
  positions < p from a KV cache;
- start at layer l: the corrupted residual entering layer l is cached, so blocks < l are
  skipped (the bridge's own `start_at_layer` still runs blocks 0..l-1 internally and discards
  them, so it saves nothing: the engine runs the Hugging Face decoder on the sliced block list);
- unembed only the last position (the metric's);
- stack many patches along the batch axis (copies of the prompt group, one patch each), as
  many as the memory cap allows (`max_patches="auto"`), so matrix multiplies stay large; a
  copy joins the stacked batch at its own layer, so stacking patches of different layers
  wastes no block;
- positions before the first token where a pair differs hold identical activations in both
  runs, so patching there is provably a no-op: those cells get the unpatched run's metric
  without a forward (pairs are grouped by length and first differing token).

Prompts are grouped by token length (clean and corrupted prompts of a pair must have equal
length: `Session.patchable` keeps those); inside a group there is no padding, so no attention
mask is needed and the last position is shared. Results are per prompt ([layer, pos, prompt]);
cells past a shorter prompt's end hold its unpatched run's metric (patching there changes nothing,
exactly what TransformerLens returns on right-padded tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from factcircuits.errors import UserError
from factcircuits.methods.engine import (
    MAX_PATCHES,
    Resumable,
    Step,
    execute,
    groups_by,
    prepare_group,
)
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.hooks import hook_name
from factcircuits.methods.positions import task_positions
from factcircuits.models import LoadedModel
from factcircuits.results.parameter_declarations import flag

COMPONENTS = ("resid_pre", "attn_out", "mlp_out", "z")
COMPONENT_TITLES = {"resid_pre": "residual stream (resid_pre)", "attn_out": "attention output",
                    "mlp_out": "MLP output", "z": "attention head output (z)"}

DIRECTIONS = ("denoising", "noising")
MIRRORED = "noising, mirrored"  # `PatchResult.as_effect` of a noising result

HEADS_BY_POSITION = flag("heads_by_position", False, "also patch every head at every position "
                         "(n_heads × slower)")


# --------------------------------------------------------------------------- results
@dataclass
class PatchResult:
    """Per-prompt patched metric of one component, plus the clean and corrupted baselines."""

    component: str
    # [n_layers, n_index, n_prompts]; index = position or head; "pos_head":
    # [n_layers, n_pos, n_heads, n_prompts]
    values: Float[Tensor, "n_layers *index n_prompts"]
    clean: Float[Tensor, " n_prompts"]
    corrupted: Float[Tensor, " n_prompts"]
    index_name: str = "pos"  # "pos" | "head" | "pos_head"
    lengths: Int[Tensor, " n_prompts"] = field(
        default_factory=lambda: torch.empty(0, dtype=torch.long))
    # "denoising": the corrupted run with a clean activation patched in (sufficiency);
    # "noising": the clean run with a corrupted activation patched in (necessity)
    direction: str = "denoising"

    def mean(self) -> torch.Tensor:
        """Mean over prompts: TransformerLens's result format ([n_layers, n_pos] or
        [n_layers, n_heads]) for a metric that averages over the batch."""
        return self.values.mean(-1)

    def normalized(self) -> torch.Tensor:
        """Per prompt (patched − corrupted)/(clean − corrupted): 0 = corrupted, 1 = clean."""
        return normalized_effect(self.values, self.clean, self.corrupted)

    def normalized_mean(self) -> torch.Tensor:
        """Normalized effect of the mean metric (TL's grid normalized by mean baselines)."""
        return normalized_effect(self.mean(), self.clean.mean(), self.corrupted.mean())

    def effect(self) -> torch.Tensor:
        """Per prompt, the share of the clean−corrupted gap the cell accounts for: restored by
        denoising (= `normalized`), lost by noising (1 − `normalized`). Large = sufficient
        (denoising) or necessary (noising)."""
        norm = self.normalized()
        return 1 - norm if self.direction == "noising" else norm

    def as_effect(self) -> PatchResult:
        """This result with `normalized` meaning `effect`: itself for denoising; for noising a
        copy whose patched metric is mirrored about the two baselines (clean + corrupted −
        patched), so that every table, class average, peak and interval computed from
        `normalized` measures the share lost, largest where the state is most necessary."""
        if self.direction == "denoising":
            return self
        mirrored = self.clean + self.corrupted - self.values
        return PatchResult(self.component, mirrored, self.clean, self.corrupted,
                           self.index_name, self.lengths, MIRRORED)


def normalized_effect(patched, clean, corrupted) -> torch.Tensor:
    """(patched − corrupted)/(clean − corrupted); `clean`/`corrupted` broadcast on the last
    axis (per prompt) or are scalars. NaN where clean == corrupted."""
    clean, corrupted = torch.as_tensor(clean), torch.as_tensor(corrupted)
    gap = clean - corrupted
    gap = torch.where(gap.abs() > 1e-12, gap, torch.full_like(gap, math.nan))
    return (patched - corrupted) / gap


# --------------------------------------------------------------------------- core
def normalization_caveat(clean_mean: float, corrupted_mean: float, metric: str) -> str:
    """A sentence for when (patched − corrupted)/(clean − corrupted) is not a meaningful scale:
    the corruption barely moves the metric, or moves it the wrong way. Empty otherwise."""
    gap = clean_mean - corrupted_mean
    if gap > 0.5 and gap > 0.25 * abs(clean_mean):
        return ""
    return (f"The corrupted prompts do not flip the answer (mean {metric} clean "
            f"{clean_mean:.3f} vs corrupted {corrupted_mean:.3f}), so the normalized effects "
            "below divide by a small or negative gap: read them as noise, not as localisation.")


def first_difference(clean, corrupt) -> torch.Tensor:
    """Per pair, the first position where the clean and corrupted tokens differ (the length
    when they are identical)."""
    differ = (clean.tokens != corrupt.tokens) & clean.attention_mask.bool()
    pos = torch.arange(differ.shape[1]).expand_as(differ)
    return torch.where(differ, pos, differ.shape[1]).min(1).values.clamp(max=clean.lengths)


def metric_vocab(prepared: PreparedTask) -> Int[Tensor, " k"]:
    """The token ids `PreparedTask.metric` reads: the answer sets (yes/no) or every prompt's
    answer and counterfactual (cloze)."""
    if prepared.task == "yesno":
        ids = torch.tensor(prepared.answer_sets.true_ids + prepared.answer_sets.false_ids)
    else:
        ids = torch.cat([torch.as_tensor(prepared.answer_ids), torch.as_tensor(prepared.cf_ids)])
    return ids.unique()


@torch.inference_mode()
def patch(lm: LoadedModel, prepared: PreparedTask, component: str = "resid_pre",
          by: str = "pos", *, direction: str = "denoising", layers=None, metric=None,
          max_patches=MAX_PATCHES.default, budget_bytes="auto",
          progress: bool = True) -> PatchResult:
    """Activation patching of `component` (resid_pre | attn_out | mlp_out | z) for every prompt
    pair of `prepared`: clean into corrupted (`direction="denoising"`) or corrupted into clean
    (`"noising"`). Either way `values` is the patched run's metric and `clean`/`corrupted` the
    two runs' metrics.

    by="pos": every (layer, position) cell, the whole activation vector at that position
              (for z: every head at once) → values [n_layers, n_pos, n_prompts];
    by="head" (z only): every (layer, head), all positions → [n_layers, n_heads, n_prompts];
    by="pos_head" (z only): every (layer, position, head) → [n_layers, n_pos, n_heads, n].
    max_patches: patched copies stacked per forward ("auto": as many as `budget_bytes` allows;
    1 = one patch per forward, as TransformerLens). The metric defaults to `prepared.metric`.
    """
    if component not in COMPONENTS:
        raise UserError(f"component={component!r}: use one of {', '.join(COMPONENTS)}")
    if by != "pos" and component != "z":
        raise UserError(f"by={by!r} needs component='z' (attention heads)")
    if direction not in DIRECTIONS:
        raise UserError(f"direction={direction!r}: use one of {', '.join(DIRECTIONS)}")
    noising = direction == "noising"
    model, cfg = lm.model, lm.model.cfg
    vocab = metric_vocab(prepared) if metric is None else None
    metric = metric or prepared.metric
    clean, corrupt = prepared.pairs(lm.tokenizer)
    layers = list(range(cfg.n_layers)) if layers is None else list(layers)
    names = {layer: hook_name(layer, component) for layer in layers}
    n_prompts, width = clean.tokens.shape
    runner = Resumable(model)
    n_heads = cfg.n_heads
    shape = {"pos": (cfg.n_layers, width), "head": (cfg.n_layers, n_heads),
             "pos_head": (cfg.n_layers, width, n_heads)}[by]
    values = torch.full((*shape, n_prompts), math.nan)
    clean_metric = torch.zeros(n_prompts)
    corrupt_metric = torch.zeros(n_prompts)

    # Positions before the first token where a pair differs hold the same activations in both
    # runs (causal attention): patching there is a no-op, so those cells are the corrupted
    # metric without a forward. Grouping by (length, first difference) lets every group skip.
    first_diff = first_difference(clean, corrupt)
    key = clean.lengths * (width + 1) + (first_diff if by != "head" else 0)
    groups, plan = [], []
    heads = range(n_heads) if by != "pos" else [None]
    for g_no, idx in enumerate(groups_by(key)):
        n, skip = int(clean.lengths[idx[0]]), int(first_diff[idx[0]])
        # denoising copies from the clean run into the corrupted one; noising the reverse
        source, reference = (corrupt, clean) if noising else (clean, corrupt)
        group = prepare_group(runner, model, metric, idx, source.tokens[idx, :n],
                              reference.tokens[idx, :n], set(names.values()))
        groups.append(group)
        clean_metric[idx], corrupt_metric[idx] = (
            (group.reference_metric, group.source_metric) if noising
            else (group.source_metric, group.reference_metric))
        if by in ("pos", "pos_head"):
            values[:, n:, ..., idx] = group.reference_metric  # past the end: nothing to patch
            values[:, :skip, ..., idx] = group.reference_metric  # identical prefix: no-op
        # the cells as data: (layer, position or None = all, head or None = all)
        for pos in [None] if by == "head" else range(skip, n):
            plan += [Step(g_no, pos or 0, (layer, [(names[layer], h, pos)]), (layer, pos, h))
                     for layer in layers for h in heads]

    for steps, out in execute(runner, model, groups, plan, metric, max_patches=max_patches,
                              budget_bytes=budget_bytes, progress=progress,
                              desc=f"{direction} {component}", vocab=vocab):
        index = groups[steps[0].group].index
        for step, row in zip(steps, out):
            layer, pos, h = step.cell
            cell = {"head": (layer, h), "pos_head": (layer, pos, h), "pos": (layer, pos)}[by]
            values[(*cell, index)] = row
    return PatchResult(component, values, clean_metric, corrupt_metric, by, clean.lengths,
                       direction)


def patch_resid_pre(lm: LoadedModel, prepared: PreparedTask, **kw) -> PatchResult:
    """Residual stream entering each block: values [n_layers, n_pos, n_prompts]."""
    return patch(lm, prepared, "resid_pre", **kw)


def patch_attn_out(lm: LoadedModel, prepared: PreparedTask, **kw) -> PatchResult:
    """Attention output of each block: values [n_layers, n_pos, n_prompts]."""
    return patch(lm, prepared, "attn_out", **kw)


def patch_mlp_out(lm: LoadedModel, prepared: PreparedTask, **kw) -> PatchResult:
    """MLP output of each block: values [n_layers, n_pos, n_prompts]."""
    return patch(lm, prepared, "mlp_out", **kw)


def patch_heads(lm: LoadedModel, prepared: PreparedTask, **kw) -> PatchResult:
    """Each attention head's output (z) over all positions: values [n_layers, n_heads, n]."""
    return patch(lm, prepared, "z", by="head", **kw)


def patch_heads_by_pos(lm: LoadedModel, prepared: PreparedTask, **kw) -> PatchResult:
    """Each attention head's output at each position: values [n_layers, n_pos, n_heads, n]."""
    return patch(lm, prepared, "z", by="pos_head", **kw)


# --------------------------------------------------------------------------- tidy forms
def position_table(lm: LoadedModel, prepared: PreparedTask) -> pd.DataFrame:
    """One row per (prompt, position): token string, ROME token class and coarse role
    (subject / relation / last / prefix)."""
    rows = []
    for i, pos in enumerate(task_positions(prepared, lm.tokenizer)):
        relation = set(pos.relation)
        subject = set(pos.subject)
        for p, (tok, cls) in enumerate(zip(pos.tokens, pos.classes)):
            role = ("last" if p == pos.last else "subject" if p in subject else
                    "relation" if p in relation else "prefix")
            rows.append({"prompt_id": i, "pos": p, "token": tok, "token_class": cls,
                         "role": role})
    return pd.DataFrame(rows)


def tidy(result: PatchResult, positions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long form: one row per (layer, position or head, prompt) with the patched metric, the
    baselines and the normalized effect; position rows joined with `position_table` labels
    (cells past a prompt's end are dropped)."""
    norm = result.normalized()
    n_layers = result.values.shape[0]
    frames = []
    for layer in range(n_layers):
        if result.index_name == "pos_head":
            for p in range(result.values.shape[1]):
                for h in range(result.values.shape[2]):
                    frames.append(pd.DataFrame({
                        "layer": layer, "pos": p, "head": h,
                        "prompt_id": range(result.values.shape[-1]),
                        "metric": result.values[layer, p, h].numpy(),
                        "normalized": norm[layer, p, h].numpy()}))
            continue
        key = "head" if result.index_name == "head" else "pos"
        for k in range(result.values.shape[1]):
            frames.append(pd.DataFrame({
                "layer": layer, key: k, "prompt_id": range(result.values.shape[-1]),
                "metric": result.values[layer, k].numpy(), "normalized": norm[layer, k].numpy()}))
    df = pd.concat(frames, ignore_index=True)
    df.insert(0, "component", result.component)
    df["clean"] = result.clean.numpy()[df["prompt_id"]]
    df["corrupted"] = result.corrupted.numpy()[df["prompt_id"]]
    if "pos" in df and len(result.lengths):
        df = df[df["pos"].to_numpy() < result.lengths.numpy()[df["prompt_id"]]]
    if positions is not None and "pos" in df:
        df = df.merge(positions, on=["prompt_id", "pos"], how="left")
    return df.reset_index(drop=True)


def by_class(table: pd.DataFrame, column: str = "token_class") -> pd.DataFrame:
    """Normalized effect per (component, layer, class): the class's mean patched metric,
    normalized by the mean clean and corrupted metrics of the same rows (normalizing means, not
    averaging per-prompt ratios, so a pair with a small clean−corrupted gap cannot dominate)."""
    means = (table.groupby(["component", "layer", column], observed=True)
             [["metric", "clean", "corrupted"]].mean().reset_index())
    means["normalized"] = normalized_effect(torch.tensor(means["metric"].to_numpy()),
                                            torch.tensor(means["clean"].to_numpy()),
                                            torch.tensor(means["corrupted"].to_numpy())).numpy()
    means["n_cells"] = (table.groupby(["component", "layer", column], observed=True)
                        .size().to_numpy())
    return means


def peak(table: pd.DataFrame, column: str = "token_class") -> dict:
    """Where the class-averaged normalized effect peaks: {effect, layer, <column>}."""
    means = by_class(table, column)
    row = means.loc[means["normalized"].idxmax()]
    return {"effect": float(row["normalized"]), "layer": int(row["layer"]),
            column: str(row[column])}


"""Resample, zero and mean ablation of model components, with the drop in the task metric.

Components are tuples: ("attn", layer) → `blocks.{layer}.hook_attn_out`, ("mlp", layer) →
`blocks.{layer}.hook_mlp_out`, ("head", layer, head) → that query head's slice of
`blocks.{layer}.attn.hook_z` (so the head's contribution through W_O is removed; with
grouped-query attention only that query head is touched). Ablation replaces the activation at
every position: by zero, or by its mean over the reference prompts at the same position (mean
over the prompts long enough to have that position), or — resample ablation — by the same
component's activation on another prompt of equal token length with a different answer (the
prompt's counterfactual prompts, `methods.counterfactual_sets`), the metric averaged over
those donors. Zero and mean put the model off its distribution (a zero or an average of mostly
same-answer prompts is an activation no real prompt produces); a resampled activation is one
the model really computes, only for another answer (Heimersheim & Nanda 2024; Chan et al.
2022).
"""

from __future__ import annotations

import pandas as pd
import torch
from tqdm import tqdm  # text bars: shown in the terminal log under papermill

from factcircuits.errors import UserError
from factcircuits.methods.counterfactual_sets import counterfactual_tasks
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.hooks import hook_name
from factcircuits.models import LoadedModel
from factcircuits.models.forward import final_logits, position_mean
from factcircuits.results.parameter_declarations import BATCH_SIZE, whole

MODES = ("zero", "mean", "resample")
MODE_LABELS = {"resample": "resample", "zero": "zero (off-distribution)",
               "mean": "mean (off-distribution)"}


N_COMPONENTS = whole("n_components", 6, "top components by |DLA| to ablate", 1,
                     allowed="use a whole number of at least 1 (components ablated)")


def component_label(component: tuple) -> str:
    kind, layer, *rest = component
    return f"L{layer}H{rest[0]}" if kind == "head" else f"{kind} L{layer}"


def component_hook(component: tuple) -> str:
    """The hook a component ('attn', l), ('mlp', l) or ('head', l, h) is ablated at."""
    kind = component[0]
    if kind not in ("attn", "mlp", "head"):
        raise UserError(f"component {component!r}: use ('attn', l), ('mlp', l) or ('head', l, h)")
    return hook_name(int(component[1]), kind)


def ablation_hooks(components: list[tuple], mode: str = "zero",
                   means: dict[str, torch.Tensor] | None = None,
                   donors: dict[str, torch.Tensor] | None = None):
    """A `hooks_for` function (see `models.forward.final_logits`) ablating all `components`
    jointly. Resample: `donors` holds each hook's activation on each row's donor prompt
    ({name: [rows, pos, ...]}, `donor_activations`), same rows as the batch run."""
    if mode not in MODES:
        raise UserError(f"ablation mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "mean" and means is None:
        raise UserError("mean ablation needs the mean activations (forward.position_mean)")
    if mode == "resample" and donors is None:
        raise UserError("resample ablation needs the donor activations (donor_activations)")

    def hooks_for(part, last, mask):
        hooks = []
        for comp in components:
            name = component_hook(comp)
            head = int(comp[2]) if comp[0] == "head" else None

            def fn(act, hook, name=name, head=head):
                act = act.clone()
                width = act.shape[1]
                if mode == "zero":
                    value = torch.zeros_like(act[:, :, head] if head is not None else act)
                elif mode == "resample":
                    donor = donors[name][part, :width].to(act.device, act.dtype)
                    value = donor[:, :, head] if head is not None else donor
                else:
                    mean = means[name][:width].to(act.device, act.dtype)
                    mean = mean[:, head] if head is not None else mean
                    value = mean.unsqueeze(0).expand_as(act[:, :, head] if head is not None
                                                        else act)
                if head is None:
                    act[:] = value
                else:
                    act[:, :, head] = value
                return act
            hooks.append((name, fn))
        return hooks
    return hooks_for


def donor_activations(model, batch, names: list[str], batch_size: int = BATCH_SIZE.default
                      ) -> dict[str, torch.Tensor]:
    """Each named hook's activation at every position of every prompt of `batch`
    ({name: [n, width, ...]}, float32, CPU; zeros past a prompt's end)."""
    kept: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    width = batch.tokens.shape[1]

    def hooks_for(part, last, mask):
        def keep(name):
            def hook(act, hook):
                pad = (0, 0) * (act.dim() - 2) + (0, width - act.shape[1])
                kept[name].append(torch.nn.functional.pad(act.float().cpu(), pad))
            return hook
        return [(n, keep(n)) for n in names]

    final_logits(model, batch, batch_size, hooks_for=hooks_for, desc="donor activations")
    return {n: torch.cat(v) for n, v in kept.items()}


def resample_pairs(prepared: PreparedTask, tokenizer) -> PreparedTask:
    """One row per (prompt, donor): the prompt as the clean prompt, a donor as the corrupted
    one — each of its counterfactual prompts of equal token length with a different answer
    (`counterfactual_tasks`: the draws when the task has them, else its own corrupted prompt).
    Row r stands for prompt `rows["prompt_id"][r]`; the metric is `prepared`'s."""
    ids, donors = [], []
    for draw in counterfactual_tasks(prepared, tokenizer):
        ids += draw.prompt_ids
        donors += draw.task.corrupted_prompts
    pairs = prepared.subset(ids)
    pairs.corrupted_prompts = donors
    pairs.counterfactual_draws = None
    pairs.rows = pairs.rows.assign(prompt_id=ids)
    return pairs


def resample_ablated(lm: LoadedModel, prepared: PreparedTask, groups: list[list[tuple]],
                     batch_size: int = BATCH_SIZE.default) -> list[torch.Tensor]:
    """Per group of components (ablated jointly), each prompt's metric with the group's
    outputs replaced by their outputs on each donor (`resample_pairs`), averaged over its
    donors ([n_prompts]; NaN for a prompt with no donor)."""
    model, tokenizer = lm.model, lm.tokenizer
    n = len(prepared.prompts)
    pairs = resample_pairs(prepared, tokenizer)
    if not len(pairs.prompts):
        return [torch.full((n,), float("nan")) for _ in groups]
    clean, donor = pairs.pairs(tokenizer)
    ids = torch.tensor(pairs.rows["prompt_id"].tolist())
    names = sorted({component_hook(c) for group in groups for c in group})
    donors = donor_activations(model, donor, names, batch_size)
    count = torch.zeros(n).index_add_(0, ids, torch.ones(len(ids)))
    out = []
    for group in groups:
        logits = final_logits(model, clean, batch_size,
                              hooks_for=ablation_hooks(group, "resample", donors=donors))
        total = torch.zeros(n).index_add_(0, ids, prepared.metric(logits, ids).float())
        out.append(total / count.where(count > 0, torch.tensor(float("nan"))))
    return out


def ablation_table(lm: LoadedModel, prepared: PreparedTask, components: list[tuple], *,
                   modes=("zero", "mean"), batch_size: int = BATCH_SIZE.default, joint: bool = True,
                   reference: PreparedTask | None = None, progress: bool = False
                   ) -> pd.DataFrame:
    """Metric per prompt with each component ablated alone (and all of them together when
    `joint`), by zero, by mean (means over `reference`'s prompts, default `prepared`) and by
    resampling (`resample_ablated`: NaN for a prompt without an equal-length donor).
    Tidy: prompt, component, mode, clean, ablated, drop (= clean − ablated)."""
    model, tokenizer = lm.model, lm.tokenizer
    batch = prepared.clean_batch(tokenizer)
    clean = prepared.metric(final_logits(model, batch, batch_size)).numpy()
    means = None
    if "mean" in modes:
        names = sorted({component_hook(c) for c in components})
        ref = (reference or prepared).clean_batch(tokenizer)
        means = position_mean(model, ref, names, batch_size)
    runs = [[c] for c in components] + ([list(components)] if joint and len(components) > 1
                                        else [])
    frames = []
    resampled = (dict(zip(map(tuple, runs), resample_ablated(lm, prepared, runs, batch_size)))
                 if "resample" in modes else {})
    jobs = [(m, r) for m in modes for r in runs]
    for mode, group in tqdm(jobs, desc="ablation", disable=not progress, leave=False):
        if mode == "resample":
            ablated = resampled[tuple(group)].numpy()
        else:
            logits = final_logits(model, batch, batch_size,
                                  hooks_for=ablation_hooks(group, mode, means))
            ablated = prepared.metric(logits).numpy()
        label = component_label(group[0]) if len(group) == 1 else f"all {len(group)} together"
        frames.append(pd.DataFrame({"prompt": range(len(clean)), "component": label,
                                    "mode": mode, "clean": clean, "ablated": ablated,
                                    "drop": clean - ablated}))
    return pd.concat(frames, ignore_index=True)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean clean / ablated / drop per component × mode, largest drop first."""
    out = table.groupby(["component", "mode"], as_index=False)[["clean", "ablated", "drop"]].mean()
    return out.sort_values("drop", ascending=False).reset_index(drop=True)


def ablation_figure(table: pd.DataFrame, title: str = "Metric drop when a component is ablated"):
    import plotly.express as px

    means = summarise(table).dropna(subset=["drop"])
    means["mode"] = means["mode"].map(MODE_LABELS).fillna(means["mode"])
    order = means.groupby("component")["drop"].max().sort_values(ascending=False).index.tolist()
    return px.bar(means, x="component", y="drop", color="mode", barmode="group", title=title,
                  category_orders={"component": order, "mode": list(MODE_LABELS.values())},
                  labels={"drop": "mean metric drop (clean − ablated)"})

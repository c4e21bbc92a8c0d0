"""Zero and mean ablation of model components, with the drop in the task metric.

Components are tuples: ("attn", layer) → `blocks.{layer}.hook_attn_out`, ("mlp", layer) →
`blocks.{layer}.hook_mlp_out`, ("head", layer, head) → that query head's slice of
`blocks.{layer}.attn.hook_z` (so the head's contribution through W_O is removed; with
grouped-query attention only that query head is touched). Ablation replaces the activation at
every position: by zero, or by its mean over the reference prompts at the same position (mean
over the prompts long enough to have that position).
"""

from __future__ import annotations

import pandas as pd
import torch
from tqdm import tqdm  # text bars: shown in the terminal log under papermill

from factcircuits.errors import UserError
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.hooks import hook_name
from factcircuits.models import LoadedModel
from factcircuits.models.forward import final_logits, position_mean
from factcircuits.results.parameter_declarations import BATCH_SIZE, whole

MODES = ("zero", "mean")


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
                   means: dict[str, torch.Tensor] | None = None):
    """A `hooks_for` function (see `models.forward.final_logits`) ablating all `components`
    jointly."""
    if mode not in MODES:
        raise UserError(f"ablation mode {mode!r}: use one of {', '.join(MODES)}")
    if mode == "mean" and means is None:
        raise UserError("mean ablation needs the mean activations (forward.position_mean)")

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


def ablation_table(lm: LoadedModel, prepared: PreparedTask, components: list[tuple], *,
                   modes=("zero", "mean"), batch_size: int = BATCH_SIZE.default, joint: bool = True,
                   reference: PreparedTask | None = None, progress: bool = False
                   ) -> pd.DataFrame:
    """Metric per prompt with each component ablated alone (and all of them together when
    `joint`), by zero and by mean (means over `reference`'s prompts, default `prepared`).
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
    jobs = [(m, r) for m in modes for r in runs]
    for mode, group in tqdm(jobs, desc="ablation", disable=not progress, leave=False):
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

    means = summarise(table)
    order = means.groupby("component")["drop"].max().sort_values(ascending=False).index.tolist()
    return px.bar(means, x="component", y="drop", color="mode", barmode="group", title=title,
                  category_orders={"component": order},
                  labels={"drop": "mean metric drop (clean − ablated)"})

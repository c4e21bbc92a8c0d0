"""Notebook 03, direct logit attribution: by layer and component, by head and, in the key MLP
layer, by neuron, with the check that the components sum to the metric."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from factcircuits.methods import attribution as A
from factcircuits.methods import intervals as I
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.models import LoadedModel
from factcircuits.results.headlines import Headline, interval, number
from factcircuits.results.kinds import Table
from factcircuits.results.registry import Method, Profile

DLA_UNIT = "metric"


@dataclass
class AttributionHeadline(Headline):
    direction: str | None = number("the answer direction attributed (the task's metric)")
    dla_sum_check_max_abs_error: float | None = number(
        "largest |metric − (components + bias)| over prompts", DLA_UNIT)
    dla_sum_check_passes: bool | None = number("that error is below 1e-3")
    dla_sum_checked_against: str | None = number("logits, or pre-cap logits with a final "
                                                 "soft-cap (Gemma 2)")
    top_head: str | None = number("the head with the largest mean |DLA| (L<layer>H<head>)")
    top_head_dla: float | None = number("its mean DLA", DLA_UNIT)
    top_head_dla_ci: list[float] | None = interval("top_head_dla")
    top_layer_component: str | None = number("the layer's attention or MLP with the largest "
                                             "mean |DLA| ('attn L23')")
    top_layer_component_dla: float | None = number("its mean DLA", DLA_UNIT)
    top_layer_component_dla_ci: list[float] | None = interval("top_layer_component_dla")
    key_mlp_layer: int | None = number("the MLP layer with the largest mean |DLA|", "layer")


@dataclass
class AttributionSummary:
    attribution: A.HeadAttribution
    sum_check: pd.DataFrame
    top_layer: dict  # the layer × component with the largest mean |DLA|: component, layer, dla
    top_heads: pd.DataFrame
    key_mlp_layer: int  # the MLP layer with the largest mean |DLA|
    top_neurons: pd.DataFrame  # of the key MLP layer
    neuron_share: float  # share of the key MLP layer's mean DLA its top neurons carry
    soft_cap_note: str
    headline: AttributionHeadline

    @property
    def max_linearisation_offset(self) -> float:
        """Largest |first-order gap| the yes/no log-odds add back before the sum check."""
        offset = self.sum_check.get("linearisation_offset")
        return float("nan") if offset is None else float(offset.abs().max())


def attribution_summary(lm: LoadedModel, prepared: PreparedTask, *, kind: str = "auto",
                        top_k: int = 10, batch_size: int = 16, seed: int = 0,
                        progress: bool = False) -> AttributionSummary:
    """DLA by layer, head and (in the key MLP layer) neuron, with the sum check; intervals
    (bootstrap over prompts, `seed`) for the top head's and component's mean DLA."""
    att = A.attribute_heads(lm, prepared, kind=kind, batch_size=batch_size, progress=progress)
    check = A.sum_check(att.decomposition, att.direction)
    means = A.summarise_layers(att.layers[att.layers.component != "embed"])
    top_row = means.loc[means["dla"].abs().idxmax()]
    top_h = A.top_heads(att.heads, top_k)
    mlp_means = means[means.component == "mlp"]
    key_layer = int(mlp_means.loc[mlp_means["dla"].abs().idxmax(), "layer"])
    neurons = A.neuron_dla(lm, prepared, key_layer, att.direction, batch_size=batch_size,
                           progress=progress)
    top_n = A.top_neurons(neurons, top_k)
    share = float(top_n["dla"].sum() / mlp_means.set_index("layer").loc[key_layer, "dla"])
    max_err = float(check["error"].abs().max())
    cap = A.soft_cap_note(lm)
    headline = AttributionHeadline(
        # With a final soft-cap (Gemma 2) the check compares with the pre-cap logits' metric.
        dla_sum_check_max_abs_error=max_err, dla_sum_check_passes=max_err < 1e-3,
        dla_sum_checked_against="pre-cap logits" if cap else "logits",
        top_head=f"L{int(top_h['layer'][0])}H{int(top_h['head'][0])}",
        top_head_dla=float(top_h["dla"][0]),
        top_head_dla_ci=I.cell_interval(att.heads, "dla", seed, layer=int(top_h["layer"][0]),
                                        head=int(top_h["head"][0])),
        top_layer_component=f"{top_row['component']} L{int(top_row['layer'])}",
        top_layer_component_dla=float(top_row["dla"]),
        top_layer_component_dla_ci=I.cell_interval(
            att.layers, "dla", seed, layer=int(top_row["layer"]),
            component=top_row["component"]),
        key_mlp_layer=key_layer,
        direction=att.direction.kind)
    top_layer = {"component": top_row["component"], "layer": int(top_row["layer"]),
                 "dla": float(top_row["dla"])}
    return AttributionSummary(att, check, top_layer, top_h, key_layer, top_n, share, cap,
                              headline)


def dla_share(table: pd.DataFrame) -> pd.DataFrame | None:
    """Mean DLA per layer of the attention and MLP outputs, divided by the sum of their
    absolute values over every layer, so models whose logits differ in scale compare (signed:
    a negative share pushes towards the counterfactual / the wrong answer)."""
    means = (table[table["component"].isin(["attn", "mlp"])]
             .groupby(["component", "layer"], as_index=False)["dla"].mean())
    total = float(means["dla"].abs().sum())
    if total < 1e-9:
        return None
    return means.assign(share=means["dla"] / total,
                        sublayer=means["component"].map({"attn": "attention", "mlp": "MLP"}))


METHOD = Method(
    notebook="03_attribution", title="Direct logit attribution", short="attribution",
    headline=AttributionHeadline,
    results={
        "sum_check": Table({"prompt": "int", "metric": "float", "components_plus_bias": "float",
                            "linearisation_offset": "float", "error": "float"},
                           "the components' sum against the metric, per prompt"),
        "layer_dla": Table({"prompt": "int", "layer": "int", "component": "str", "dla": "float"},
                           "DLA of each layer's embedding, attention and MLP, per prompt"),
        "head_dla": Table({"prompt": "int", "layer": "int", "head": "int", "dla": "float"},
                          "DLA of each head, per prompt"),
        "top_heads": Table({"layer": "int", "head": "int", "dla": "float", "abs_dla": "float"},
                           "the heads with the largest mean |DLA|"),
        "top_neurons": Table({"layer": "int", "neuron": "int", "dla": "float",
                              "activation": "float", "abs_dla": "float"},
                             "the key MLP layer's neurons with the largest mean |DLA|"),
    },
    key_numbers=("top_head_dla",),
    profiles=(Profile("layer_dla", dla_share, "share", "sublayer",
                      "Direct logit attribution by layer<br><sup>mean DLA of each layer's "
                      "attention and MLP output, as a signed share of the run's total |DLA|"
                      "</sup>", "share of total |DLA|"),),
)

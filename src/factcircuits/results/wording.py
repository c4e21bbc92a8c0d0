"""How numbers are said in the findings: layers with their depth and resampled range, metric
and component names. Shared by the methods' findings sentences (`factcircuits.chapters`) and
the cross-method findings (`factcircuits.report`)."""

from __future__ import annotations

from factcircuits.results.run import Run

METRIC_NAMES = {"logit_diff": "logit difference (correct − counterfactual)",
                "log_odds": "log-odds of the answer sets",
                "logit_diff_sum": "summed logit difference of the answer sets",
                "prob_mass_diff": "probability-mass difference of the answer sets"}
SUBLAYER_NAMES = {"attn": "attention", "mlp": "MLP", "embed": "embedding"}
# Patching layer 0's MLP at the subject restores the subject's token identity (the corrupted
# prompt has other subject tokens), not a stored fact: a peak there is named, not matched.
LAYER0_MLP = ("the layer-0 MLP acts as part of the token embedding, so this peak restores the "
              "subject's identity rather than a stored attribute")


def range_text(layer_range) -> str:
    if not layer_range or not all(isinstance(v, (int, float)) for v in layer_range):
        return "range not computed"
    low, high = (int(v) for v in layer_range)
    return f"95% of resamples in layer {low}" if low == high else \
        f"95% of resamples in layers {low}–{high}"


def layer_text(run: Run, layer, layer_range=None) -> str:
    """'layer 3 (relative depth 0.30; 95% of resamples in layers 2–4)'."""
    depth = run.depth(layer)
    notes = [f"relative depth {depth:.2f}"] if depth is not None else []
    if layer_range:
        notes.append(range_text(layer_range))
    return f"layer {int(layer)}" + (f" ({'; '.join(notes)})" if notes else "")


def window_text(run: Run, first, last) -> str:
    d1, d2 = run.depth(first), run.depth(last)
    depth = f" (relative depth {d1:.2f}–{d2:.2f})" if d1 is not None and d2 is not None else ""
    return f"layers {int(first)}–{int(last)}{depth}"


def metric_name(name) -> str:
    return METRIC_NAMES.get(name, name or "metric")


def component_name(label: str) -> str:
    """'attn L23' -> 'attention of layer 23' (direct logit attribution's component names)."""
    kind, _, layer = str(label).partition(" L")
    return f"{SUBLAYER_NAMES.get(kind, kind)} of layer {layer}" if layer.isdigit() else label


def change_text(fraction: float, ci=None) -> str:
    """'falls by 67% (95% CI 53% to 80%)': the interval in the words' own direction; one that
    crosses zero keeps its signs ("falls by 10% (95% CI -25% to +4%: the sign is not resolved)")."""
    word, size = ("falls", -fraction) if fraction < 0 else ("rises", fraction)
    text = f"{word} by {size:.0%}"
    if not ci or len(ci) != 2 or any(v is None or v != v for v in ci):
        return text
    low, high = sorted(-v if fraction < 0 else v for v in ci)
    if low < 0 < high:
        low, high = sorted(ci)
        return f"{text} (95% CI {low:+.0%} to {high:+.0%}: the sign is not resolved)"
    return f"{text} (95% CI {low:.0%} to {high:.0%})"


def head_label(layer, head) -> str:
    return f"L{int(layer)}H{int(head)}"


def relation_peaks_text(table, what: str) -> str | None:
    """The by-relation bullet of a method whose `by_relation` table holds per-relation peak
    layers with their resampled ranges (None without such a table)."""
    if table is None or table.empty:
        return None
    differ = table[table["differs_from_pooled"].astype(bool)]
    names = ", ".join(f"{r.relation} (layer {r.peak_layer}, 95% of resamples in "
                      f"{r.layer_low}–{r.layer_high}, n = {r.n})" for r in differ.itertuples())
    return (f"**Where {what} sits, by relation**: "
            + (f"{names} differ from the pooled peak." if names else
               f"no relation's range excludes the pooled peak ({len(table)} "
               "relations; small per-relation samples resolve only large shifts)."))

"""How numbers are said in the findings: layers with their depth and resampled range, metric
and component names. Shared by the methods' findings sentences (`factcircuits.chapters`) and
the cross-method findings (`factcircuits.report`)."""

from __future__ import annotations

import re

from factcircuits.results.run import Run

METRIC_NAMES = {"logit_diff": "logit difference (correct − counterfactual)",
                "log_odds": "log-odds of the answer sets",
                "logit_diff_sum": "summed logit difference of the answer sets",
                "prob_mass_diff": "probability-mass difference of the answer sets"}
SUBLAYER_NAMES = {"attn": "attention", "mlp": "MLP", "embed": "embedding"}
# Patching layer 0's MLP at the subject restores the subject's token identity (the corrupted
# prompt has other subject tokens), not a stored fact: a peak there is named, not matched.
# A comparison of one relation with the pooled study needs this many prompts in the relation:
# a percentile bootstrap of fewer undercovers (three prompts give ten distinct resamples) and
# an exact test on fewer cannot reach p ≤ 0.05. Relations below it are listed as "not tested".
MIN_PROMPTS = 5
LAYER0_MLP = ("the layer-0 MLP acts as part of the token embedding, so restoring it restores the "
              "subject's identity rather than a stored attribute")


# A GGUF's quantization type as its file name gives it ('…Instruct.Q4_1.gguf',
# 'gemma-3-270m-q4_k_m.gguf'): llama.cpp's k-quants, legacy quants, i-quants, plain floats.
GGUF_TYPE = re.compile(r"(?<![A-Za-z0-9])(I?Q\d(?:_[0-9A-Z]+)*|BF16|F16|F32)(?=\.gguf$)",
                       re.IGNORECASE)


def gguf_type(weights_file) -> str | None:
    """'SmolLM2-135M-Instruct.Q4_1.gguf' -> 'Q4_1'; 'gemma-3-270m-q4_k_m.gguf' -> 'Q4_K_M';
    None for a name without one (or not a GGUF)."""
    found = GGUF_TYPE.search(str(weights_file or ""))
    return found.group(1).upper() if found else None


def model_line(run: Run) -> str:
    """The model as the run computed with, in one line: 'HuggingFaceTB/SmolLM2-135M-Instruct,
    as loaded: Q4_1 GGUF dequantized to float32' (the analyses saw the quantized weights, not
    the original release's); a hub model with its revision, a local folder, the random tiny
    model with its seed."""
    info = run.model_info
    dtype = info.get("dtype") or run.parameters.get("dtype") or "the default dtype"
    source = info.get("source")
    weights = info.get("weights_file")
    if weights and str(weights).lower().endswith(".gguf"):
        kind = gguf_type(weights)
        how = (f"{kind} GGUF dequantized to {dtype}" if kind else
               f"GGUF {weights} (quantization type not in its name) dequantized to {dtype}")
    elif source == "hub":
        revision = info.get("revision")
        how = (f"revision {str(revision)[:12]} from the Hugging Face hub, in {dtype}"
               if revision else f"from the Hugging Face hub, in {dtype}")
    elif source == "local":
        how = f"a local checkpoint folder, in {dtype}"
    elif source == "random":
        how = f"random weights (seed {info.get('seed', '?')}), in {dtype}; no trained model"
    else:
        how = f"in {dtype}"
    if info.get("bos_choice"):  # runs from before the choice existed do not say
        how += (f"; prompts {'start with' if info.get('prepend_bos') else 'without'} its BOS "
                f"token (prepend_bos={info['bos_choice']})")
    return f"{run.model}, as loaded: {how}"


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


def class_counts(positions, classes=None) -> dict[str, int]:
    """How many prompts (pairs) have at least one token of each class: a class average over
    fewer prompts than the sample is a smaller sample (a one-token subject has no first or
    middle subject token). `positions` has prompt_id and token_class (`patching.
    position_table`); `classes` orders and picks the classes (default: as they occur)."""
    n = positions.groupby("token_class")["prompt_id"].nunique()
    order = list(classes) if classes is not None else list(dict.fromkeys(
        positions["token_class"]))
    return {c: int(n.get(c, 0)) for c in order if c in n.index}


def class_labels(positions, titles: dict[str, str], classes=None) -> dict[str, str]:
    """Each class's name with its n, for a figure's axis or legend: {'subject_last': 'last
    subject token (n=4)'} (n: prompts or pairs with a token of that class)."""
    return {c: f"{titles.get(c, c)} (n={n})" for c, n in class_counts(positions, classes).items()}


def class_counts_text(positions, titles: dict[str, str], classes=None,
                      unit: str = "pairs") -> str:
    """'n per token class: last subject token 13, last token 13' for a figure's caption (all
    equal: 'n = 13 pairs for every token class')."""
    counts = class_counts(positions, classes)
    if not counts:
        return f"no {unit}"
    if len(set(counts.values())) == 1:
        return f"n = {next(iter(counts.values()))} {unit} for every token class"
    return f"{unit} per token class: " + ", ".join(
        f"{titles.get(c, c)} {n}" for c, n in counts.items())


def head_label(layer, head) -> str:
    return f"L{int(layer)}H{int(head)}"


def relation_peaks_text(table, what: str) -> str | None:
    """The by-relation bullet of a method whose `by_relation` table holds per-relation peak
    layers with their resampled ranges (None without such a table)."""
    if table is None or table.empty:
        return None
    tested = table[table["n"] >= MIN_PROMPTS]
    differ = tested[tested["differs_from_pooled"].astype(bool)]
    names = ", ".join(f"{r.relation} (layer {r.peak_layer}, 95% of resamples in "
                      f"{r.layer_low}–{r.layer_high}, n = {r.n})" for r in differ.itertuples())
    untested = not_tested_text(len(table) - len(tested), len(table))
    if tested.empty:
        return (f"**Where {what} sits, by relation**: not tested: {untested}; the per-relation "
                "peaks are shown in the chapter.")
    return (f"**Where {what} sits, by relation**: "
            + (f"{names} differ from the pooled peak" if names else
               f"of the {len(tested)} relations with at least {MIN_PROMPTS} prompts, none has a "
               "range of resampled peaks that excludes the pooled peak (small per-relation "
               "samples resolve only large shifts)")
            + (f"; {untested}." if len(tested) < len(table) else "."))


def not_tested_text(n_untested: int, n_relations: int) -> str:
    """'3 of 4 relations have fewer than 5 prompts, too few to compare with the pooled study'."""
    if n_untested == n_relations:
        who = ("the one relation has" if n_relations == 1
               else f"all {n_relations} relations have")
        return (f"{who} fewer than {MIN_PROMPTS} prompts, too few to compare with the pooled study")
    return (f"{n_untested} of {n_relations} relations have fewer than {MIN_PROMPTS} prompts "
            "(not compared)")


# ------------------------------------------------------------------ table cells
LAYER0_MARK = "†"  # an MLP peak at layer 0: named, not matched (LAYER0_MLP)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def interval_cell(value, ci, spec: str) -> str:
    """'0.21 [0.10, 0.32]' (a table cell: the 95% interval in brackets), '—' when not
    computed."""
    if not _number(value):
        return "—"
    text = format(value, spec)
    if ci and len(ci) == 2 and all(_number(v) for v in ci):
        text += f" [{format(ci[0], spec)}, {format(ci[1], spec)}]"
    return text


def interval_cells(table, value: str, low: str, high: str, spec: str) -> list[str]:
    """`interval_cell` of every row of `table`: column `value` with its interval's ends in
    columns `low` and `high`."""
    return [interval_cell(v, [lo, hi], spec)
            for v, lo, hi in zip(table[value], table[low], table[high])]


def peak_cell(layer, layer_range, value, ci, spec: str = ".2f",
              layer0_mlp: bool = False) -> str:
    """'L13 (12–15): 0.21 [0.10, 0.32]': a peak layer with the layers holding it in 95% of
    resamples, and its value with its interval; an MLP peak at layer 0 marked (`layer0_mlp`)."""
    if not _number(layer):
        return "—"
    text = f"L{int(layer)}" + (LAYER0_MARK if layer0_mlp and int(layer) == 0 else "")
    if layer_range and len(layer_range) == 2 and all(_number(v) for v in layer_range):
        low, high = (int(v) for v in layer_range)
        text += f" ({low}–{high})" if low != high else ""
    return text + (f": {interval_cell(value, ci, spec)}" if _number(value) else "")

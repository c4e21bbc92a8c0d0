# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Circuits by relation, what they share, and how stable they are
#
# The circuit chapter finds one EAP-IG circuit over all of a run's prompt pairs. Here the same
# edge scores are kept **per pair**: EAP-IG's score of an edge is a mean over pairs, so the
# scores of any set of pairs — one relation's, one fold's, one bootstrap resample's — are a
# weighted mean of the per-pair rows, computed once. Three questions follow.
#
# - **A circuit per relation** (Knowledge Circuits, [@yao2024knowledge] build one per LRE
#   relation): every relation with at least `min_pairs` patchable pairs gets the EAP-IG top-k
#   circuits at MIB's sizes [@mueller2025mib], judged by their exact faithfulness on pairs that
#   did not choose them (as in the circuit chapter: with 20 pairs or more a seeded half scores
#   and the other half judges; below, two seeded folds judge each other's circuits), the
#   smallest circuit reaching 80 %, and CPR and CMD, each with a 95 % bootstrap interval over
#   the evaluation pairs (the circuits held fixed). The run's circuit over every pair is found
#   the same way.
# - **How stable a circuit is** (Méloux et al. 2025): the pairs behind a circuit are
#   resampled with replacement (`stability_resamples` times, seeded by the run's seed); each
#   resample's circuit is the top-k by its reweighted scores, k the full sample's 80 % size,
#   and is compared with the full sample's circuit by the Jaccard index of their edges. A
#   circuit is called **stable** only when the median Jaccard is at least 0.8 (Méloux et al.'s
#   bar); otherwise it is **not stable at this sample size** — more pairs may stabilise it.
#   The circuit resampled is the top-k by all of the group's pairs (the one saved and
#   compared), so its stability is that of the choice, not of the faithfulness judgement.
# - **What relations share**: the edge and node Jaccard of every two relations' 80 % circuits,
#   an overlap weighted by |EAP-IG| (each circuit's |scores| normalised to sum 1, then Σ min /
#   Σ max), the **shared core** (the edges in every relation's circuit, or — when no edge is in
#   all of them — in a majority, as stated below), and the core's faithfulness alone on each
#   relation's pairs beside the relation's own circuit's. Both are judged **in sample** there:
#   every relation's pairs helped choose the circuits the core comes from.

# %% tags=["parameters"]
model = "default"  # 'default' (the embedded SmolLM2), 'tiny', a hub name or a local folder
dataset = ""  # empty: the default dataset of the task (paris-cloze / paris-yesno)
task = "cloze"  # cloze recall or yes/no verification
prompt_format = "raw"  # raw, chat (the tokenizer's chat template) or fewshot
answer_map = "yesno_default"  # yes/no: the words counted as yes and as no
device = "auto"  # auto, cpu, cuda, cuda:N or mps
dtype = ""  # empty: the device's default; float32, bfloat16 or float16
batch_size = 16  # prompts per forward pass
n_prompts = 0  # 0: every prompt
seed = 0  # noise draws, bootstrap resamples, samples and splits
known = "top1"  # top1: the answer is the top token; pairwise: answer's logit > counterfactual's
per_relation = 0  # > 0: at most this many known prompts per relation (seeded sample)
relation = ""  # one relation of the dataset (empty: every relation)
prepend_bos = "auto"  # BOS token: auto (as the model's tokenizer does), on or off
run_dir = "."
ig_steps = 5  # EAP-IG interpolation steps (1: plain EAP)
ablation = "counterfactual"  # what an ablated edge's reader gets: "counterfactual" or "mean"
min_pairs = 5  # patchable pairs a relation needs for a circuit of its own
# bootstrap resamples of the pairs behind each circuit's stability (Méloux et al.: at least 100)
stability_resamples = 100
max_edges_drawn = 60  # strongest circuit edges drawn in the diagram

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from factcircuits.run.session import start_analysis

session, prepared, note = start_analysis(globals())

# %%
from factcircuits.chapters import relation_circuits as chapter
from factcircuits.methods.circuits import relation_figures as figures
from factcircuits.methods.circuits.figures import (
    interactive_circuit_figure,
    rest_summary,
    static_circuit_figure,
    strongest,
)
from factcircuits.methods.circuits.stability import MIN_PAIRS_FOR_STABILITY
from factcircuits.methods.uncertainty import with_interval
from factcircuits.results.store import Results
from factcircuits.results.summary import Options
from factcircuits.run.display import media_note, show_pair

found = chapter.summarise(session.lm, prepared, options=Options.of(chapter.METHOD, globals()))
pairs, dropped, study, h = found.pairs, found.dropped, found.study, found.headline
pooled = study.pooled
display(Markdown(
    f"Analysed: {note}. The **{len(pairs.prompts)}** prompt pairs of equal token length are "
    f"used ({len(dropped)} left out, as in activation patching)."))

# %% [markdown]
# ## Pairs per relation

# %%
counts = study.relations
figures.pairs_figure(counts, min_pairs).show()
few = found.relations_with_too_few_pairs
if len(counts) <= 1:
    display(Markdown(
        f"The pairs hold **one relation** ({', '.join(counts['relation']) or 'none'}), so its "
        "circuit is the run's circuit below: there is no circuit per relation and no overlap "
        "to compare."))
else:
    display(Markdown(
        f"{len(counts)} relations; **{h.n_relations_searched}** have at least {min_pairs} "
        "patchable pairs and get a circuit of their own. "
        + (("Too few pairs: " + ", ".join(f"{r.relation} ({r.n_pairs})"
                                          for r in few.itertuples()) + ".") if len(few)
           else "")))

# %% [markdown]
# ## The run's circuit and its stability

# %%
if pooled is None:
    display(Markdown("No prompt pair can be patched, so this notebook shows nothing further."))
else:
    figures.curves_figure(found.pooled_faithfulness).show()
    split_text = {"held-out": "scored on a seeded half of the pairs and judged on the other",
                  "cross-fitted": "two seeded folds, each fold's circuits judged on the other",
                  "in-sample": "one pair: it both chooses and judges"}[pooled.split.kind]
    if pooled.at_80 is not None:
        reach = (f"The smallest circuit reaching 80% has **{h.edges_for_80:,} edges** "
                 f"({h.size_for_80:g}% of {h.n_edges_total:,}) and carries "
                 f"**{with_interval(h.faithfulness_for_80, h.faithfulness_for_80_ci)}** of the "
                 "metric gap on the evaluation pairs")
    else:
        reach = "No circuit on the size grid reaches 80% faithfulness on the evaluation pairs"
    display(Markdown(
        f"Every pair ({h.n_pairs}; {split_text}). {reach}; CPR "
        f"{with_interval(h.cpr, h.cpr_ci)}, CMD {with_interval(h.cmd, h.cmd_ci, '.3f')}."))

# %%
if pooled is not None and pooled.stability is not None:
    s = pooled.stability
    low, high = s.interval
    kept = found.pooled_inclusion
    verdict = ("**stable** (median ≥ 0.8)" if s.stable else
               "**not stable at this sample size** (median below 0.8)")
    display(Markdown(
        f"Over {s.n_resamples} bootstrap resamples of the {s.n_pairs} pairs, the top-{s.k:,} "
        f"circuit of a resample shares a median Jaccard of **{s.median:.2f}** with the full "
        f"sample's (95% of resamples {low:.2f}–{high:.2f}; two circuits of {s.k:,} edges "
        f"drawn at random would share about {s.chance:.2f}): {verdict}. "
        f"{kept.n_in_95_percent:,} edges are in at least 95% of the resamples' "
        f"circuits, {kept.n_in_under_half_but_some:,} in fewer than "
        "half (but some)."))
elif pooled is not None:
    display(Markdown(
        "Stability is not computed: " + {
            "no circuit": "no circuit reaches 80%.",
            "whole graph": "the 80% circuit is the whole graph, the only circuit of its size.",
            "few pairs": f"fewer than {MIN_PAIRS_FOR_STABILITY} pairs, where many resamples "
                         "repeat the full sample itself."}[found.why_pooled_not_resampled]))

# %% [markdown]
# ### The run's circuit, with how often each edge survives resampling
#
# Drawn as in the circuit chapter (heads coloured by their role, computed here for this
# circuit's heads with the same rules; edge width by |EAP-IG|, blue carries the clean answer,
# red works against it). This is the circuit chosen by every pair's scores, the one resampled
# above; on the site, hovering an edge's midpoint shows its scores and its **inclusion
# frequency**: the share of the bootstrap resamples whose circuit of the same size holds it.

# %%
drawing, roles = found.drawing, found.roles
if drawing is not None:
    printed = strongest(drawing.circuit_edges, "eap_ig", max_edges_drawn)
    if drawing.inclusion is not None:
        shown = found.drawn_inclusion(printed)
        kept = (f" Of the {shown.n_edges:,} edges drawn, {shown.n_in_95_percent:,} are in "
                f"at least 95% of the resamples' circuits and {shown.n_in_under_half:,} in "
                "fewer than half.")
        hover = ("hover over an edge's midpoint for its EAP-IG and EAP scores and the share "
                 "of bootstrap circuits holding it")
    else:
        kept = " Stability was not computed for this circuit (see above), so no edge has an "\
               "inclusion frequency."
        hover = "hover over an edge's midpoint for its EAP-IG and EAP scores"
    media_note(
        f"The figure opens on the smallest circuit of the grid; move the slider up to the "
        f"80% circuit ({len(drawing.circuit_edges):,} edges); {hover}, over a head for its "
        f"role and numbers.{kept}",
        f"The drawing: {rest_summary(drawing.circuit_edges, printed)} (at most "
        f"{max_edges_drawn}: the parameter `max_edges_drawn`).{kept} The site's version has "
        "every edge, a slider over circuit sizes and each edge's inclusion frequency on hover.")
    show_pair(
        interactive_circuit_figure(drawing.edges, drawing.nodes, drawing.steps, roles,
                                   inclusion=drawing.inclusion,
                                   title="The run's circuit (every pair's scores)", active=0),
        static_circuit_figure(drawing.nodes, drawing.circuit_edges, roles,
                              max_edges=max_edges_drawn,
                              title="The run's circuit at the 80% size (every pair's scores)",
                              n_layers=study.graph.n_layers))

# %% [markdown]
# ## Circuits by relation

# %%
if study.circuits:
    figures.curves_figure(found.relation_faithfulness).show()
    display(chapter.relations_view(found.relations).style.hide(axis="index"))
    display(Markdown(
        "Faithfulness and CPR on each relation's evaluation pairs (cross-fitted below 20 "
        "pairs); intervals resample those pairs with the circuits fixed. Relations where no "
        "size reaches 0.8 keep no circuit (empty `edges_for_80`) and are left out below."))
else:
    display(Markdown("No relation has a circuit of its own in this run (see the counts "
                     "above)."))

# %% [markdown]
# ## How stable each circuit is

# %%
if len(found.stability):
    figures.stability_figure(found.stability).show()
    rows, n_stable = found.resampled_circuits, found.n_stable_circuits
    verdict = (f"all {len(rows)} circuits are stable" if n_stable == len(rows) else
               f"none of the {len(rows)} circuits is stable: not stable at this sample size"
               if n_stable == 0 else
               f"{n_stable} of {len(rows)} circuits are stable; the others are not stable at "
               "this sample size")
    display(Markdown(
        f"By median Jaccard ≥ 0.8 over {stability_resamples} resamples, {verdict}. Median "
        "(95% of resamples) per circuit: "
        + "; ".join(f"{r.relation}: {r.stability_median:.2f} ({r.stability_low:.2f}–"
                    f"{r.stability_high:.2f}, {r.n_pairs} pairs; random circuits of its size "
                    f"{r.stability_chance:.2f})" for r in rows.itertuples())
        + "."))

# %%
nodes, circuit_edges = found.circuits
by_group = found.inclusion_by_circuit
if by_group:
    figures.inclusion_figure(circuit_edges).show()
    display(Markdown(
        "Inclusion frequency of each resampled circuit's edges (the share of resamples whose "
        "circuit of the same size holds the edge): "
        + "; ".join(f"{name}: {v.n_in_95_percent:,} of {v.n_edges:,} edges in at least 95% "
                    f"of resamples, {v.n_in_under_half:,} in fewer than half, median "
                    f"{v.median:.2f}" for name, v in by_group)
        + "."))

# %% [markdown]
# ## What the relations share

# %%
if study.core is None:
    display(Markdown(
        "Fewer than two relations have an 80% circuit of their own, so there is no overlap "
        "to show." if len(counts) > 1 else
        "One relation: no overlap section (nothing to compare its circuit with)."))
else:
    figures.overlap_figure(study.overlap).show()
    core = study.core
    rule = ("in **every** relation's circuit" if core.rule == "every" else
            f"in at least **{core.needed} of {core.n_circuits}** relations' circuits (a "
            "majority: no edge is in all of them)")
    display(Markdown(
        f"Between two relations' circuits, edge Jaccard ranges "
        f"{h.edge_jaccard_range[0]:.2f}–{h.edge_jaccard_range[1]:.2f} (mean "
        f"{h.mean_edge_jaccard:.2f}), |score|-weighted overlap mean "
        f"{h.mean_weighted_overlap:.2f}. These are point values of the circuits found; the "
        f"stability above says how much each circuit itself moves. The shared core holds "
        f"**{core.n_edges:,} edges**, those {rule}."))
    if core.n_edges:
        figures.core_figure(study.core_table, f"the shared core ({core.n_edges:,} edges)").show()
        carried = h.n_relations_core_carries
        display(Markdown(
            f"Alone, the core's faithfulness interval clears 0.8 on **{carried} of "
            f"{len(study.core_table)}** relations' pairs (in sample). Each relation's own part "
            "(`own_edges`: its circuit's edges outside the core; `unique_edges`: in no other "
            "relation's circuit):"))
    display(chapter.core_view(study.core_table).style.hide(axis="index"))

# %% tags=["remove-cell"]
found.save(Results(run_dir, chapter.METHOD))

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
# # The circuit: which components feed which
#
# The other chapters locate single components. Here the model is a graph: its nodes are the
# input embeddings, every attention head, every MLP and the logits; an **edge** runs from every
# upstream writer to every downstream reader input (each head's query, key and value input —
# with grouped-query attention the key and value inputs belong to the key/value head a group of
# query heads shares — each MLP's input, and the logits). **Edge attribution patching** (EAP
# [@syed2023eap]) scores every edge at once to first order: (clean write − corrupted write) ·
# ∂metric/∂(reader's input), summed over positions and averaged over the prompt pairs, signs
# kept (positive: the edge carries the clean answer). **EAP-IG** [@hanna2024faith] averages
# the gradient over inputs interpolated between the corrupted and clean embeddings. A circuit
# is the top edges by |EAP-IG|; it is judged **exactly**: the model runs with every edge outside
# the circuit ablated (its reader gets the corrupted run's write instead), and the circuit's
# **faithfulness** is (m(circuit) − m(empty)) / (m(full) − m(empty)) on the mean metric — MIB's
# curve [@mueller2025mib] at 0.1–100 % of the edges, its area CPR (higher is better) and
# CMD, the area between it and 1 (lower is better). With Gemma 2/3's norms after each
# sublayer, a head's write is its share of the attention output divided by the norm's scale
# taken from the run, so the writes of a layer add up exactly to what the layer adds to the
# residual stream.
#
# The pairs that choose a circuit do not judge it: edge scores rank the edges by how much they
# matter on the pairs they were computed on, so a circuit judged on those same pairs would look
# better than it is. With at least 20 pairs, a seeded half scores the edges and the other half
# evaluates the circuits; with fewer, the pairs form two seeded folds, each fold's circuits are
# evaluated on the other fold (cross-fitting), and the curves are pooled over every pair. A
# circuit is also only as good as what chance gives: circuits of the same sizes with edges drawn
# uniformly at random are evaluated on the same pairs (their mean is the baseline curve).

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
max_edges_drawn = 60  # strongest circuit edges drawn in the diagram

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from factcircuits.run.session import start_analysis

session, prepared, note = start_analysis(globals())

# %%
from factcircuits.chapters import circuit as chapter
from factcircuits.methods.circuits import roles as R
from factcircuits.methods.circuits.figures import (
    faithfulness_figure,
    interactive_circuit_figure,
    rest_summary,
    static_circuit_figure,
    strongest,
)
from factcircuits.methods.uncertainty import with_interval
from factcircuits.results.store import Results
from factcircuits.results.summary import Options
from factcircuits.run.display import media_note, show_pair

found = chapter.summarise(session.lm, prepared, options=Options.of(chapter.METHOD, globals()))
pairs, dropped, summary, h = found.pairs, found.dropped, found.circuit, found.headline
display(Markdown(
    f"Analysed: {note}. The **{len(pairs.prompts)}** prompt pairs of equal token length are "
    f"used ({len(dropped)} left out, as in activation patching)."))
if summary is None:
    display(Markdown("No prompt pair can be patched, so this notebook shows nothing further."))

# %% [markdown]
# ## How much of the behaviour does a circuit carry?

# %%
if summary is not None:
    display(Markdown(f"Pairs: {chapter.split_phrase(h)}."))
    faithfulness_figure(summary.faithfulness, random_draws=h.random_draws).show()
    if h.edges_for_80 is not None:
        reach = (
            f"The smallest circuit on the grid whose faithfulness on the evaluation pairs "
            f"reaches 80% has **{h.edges_for_80:,} edges** ({h.size_for_80:g}% of "
            f"{h.n_edges_total:,}) and carries "
            f"**{with_interval(h.faithfulness_for_80, h.faithfulness_for_80_ci)}** of the "
            f"metric gap; the interval's lower end "
            f"{'clears' if h.faithfulness_for_80_lower_bound_clears else 'does not clear'} 0.8 "
            f"(the size was chosen on the point estimate, on the same evaluation pairs). "
            f"{h.random_draws} random circuits of that size carry "
            f"{with_interval(h.random_faithfulness_for_80, h.random_faithfulness_for_80_ci)}")
    else:
        reach = (f"No circuit on the grid reaches 80% faithfulness on the evaluation pairs "
                 f"(of {h.n_edges_total:,} edges)")
    display(Markdown(
        f"{reach}. Mean metric on the evaluation pairs: clean **{h.clean_metric:.2f}**, "
        f"corrupted **{h.corrupted_metric:.2f}**, empty circuit {h.empty_metric:.2f}. "
        f"EAP-IG's top-k curve: CPR **{with_interval(h.cpr, h.cpr_ci)}**, CMD "
        f"**{h.cmd:.3f}**; random circuits of the same sizes: CPR "
        f"{with_interval(h.random_cpr, h.random_cpr_ci)}, so EAP-IG − random = "
        f"{with_interval(h.cpr_minus_random, h.cpr_minus_random_ci)}; one-step EAP: CPR "
        f"{with_interval(h.eap_cpr, h.eap_cpr_ci)}, CMD {h.eap_cmd:.3f}. "
        f"{chapter.eap_note(h)} Scores took {h.seconds_scores:.0f} s, the exact curves "
        f"{h.seconds_curve:.0f} s and the random baseline {h.seconds_random:.0f} s. The "
        "intervals resample the evaluation pairs with the circuits held fixed. A faithfulness "
        "above 1 means the circuit pushes the metric further than the full model (the ablated "
        "edges worked against the answer)."))

# %% [markdown]
# ## What each head of the circuit does
#
# For every query head among the circuit's nodes, on the clean prompts of the pairs: where the
# last token's attention goes (summed over the subject tokens, the relation tokens — the
# prompt's other words —, the last token itself and the rest: BOS or a format prefix), and the
# head's direct effect on the answer (its DLA, as in the attribution chapter) split by the
# source position it reads: the attention weight × that position's value through the head's
# output matrix, projected on the answer direction. The parts add up to the head's DLA
# [@chughtai2024summing]. The role is read off the direct effect alone, with intervals from a
# bootstrap over the prompts; the thresholds are stated below the table.

# %%
if summary is not None:
    roles = found.roles
    display(Markdown(
        f"Of the circuit's **{len(roles)}** heads (its {len(summary.nodes)} nodes also hold "
        f"the input, MLPs, key/value inputs and the logits): {chapter.roles_phrase(roles)}. "
        f"A **mover** writes the answer (mean DLA above 0, its 95% interval too) and its "
        f"subject share's interval lies above {R.READS:.0%}; a **relation** head likewise "
        f"through the relation tokens; a **mixed** head writes the answer with the subject and "
        f"the relation tokens each carrying at least {R.MIXED_FLOOR:.0%} of it and neither a "
        "resolved majority; **other** heads have no resolved positive direct effect (they can "
        "still matter through the heads and MLPs they feed) or write mostly from the last "
        "token or BOS. Attention is reported beside the role, not used by it."))
    shown_roles = found.strongest_heads
    display(Markdown(f"The {len(shown_roles)} heads with the largest direct effect (of "
                     f"{len(roles)}; `results/08_circuit/head_roles.csv` holds every head "
                     "and every column):"))
    display(shown_roles.style.hide(axis="index"))

# %% [markdown]
# ## The circuit, layer by layer
#
# Nodes as in the other chapters (L23H4: head 4 of layer 23; MLP 5; L5KV1: the key/value head
# a group of query heads shares), heads coloured by their role above; edge width by |EAP-IG|,
# blue edges carry the clean answer, red ones work against it. The circuit drawn is the top-k
# circuit of the 80 % size by the discovery pairs' scores (held-out), or by every pair's scores
# when cross-fitted (the faithfulness above is then that of the two folds' circuits of this
# size).

# %%
if summary is not None:
    steps = found.slider_steps
    printed = strongest(summary.circuit_edges, "eap_ig", max_edges_drawn)
    media_note(
        "The figure opens on the smallest circuit of the grid; move the slider up to the "
        "80% circuit (the top edges by |EAP-IG|, each size with its faithfulness on the "
        "evaluation pairs); hover over an edge's midpoint for its EAP-IG "
        "and EAP scores, over a head for its role and numbers.",
        f"The drawing: {rest_summary(summary.circuit_edges, printed)} (at most "
        f"{max_edges_drawn} are drawn: the parameter `max_edges_drawn`). The site's version "
        "has every edge, a slider over circuit sizes and each edge's scores on hover.")
    show_pair(
        interactive_circuit_figure(summary.edges, summary.nodes, steps, roles,
                                   title="The circuit", active=0),
        static_circuit_figure(summary.nodes, summary.circuit_edges, roles,
                              max_edges=max_edges_drawn, title="The circuit at the 80% size",
                              n_layers=summary.scores.graph.n_layers))

# %% [markdown]
# ## The strongest edges

# %%
if summary is not None:
    display(found.top_edges.round(4).style.hide(axis="index"))

# %% [markdown]
# ## Do the other chapters' components sit in the circuit?

# %%
if summary is not None:
    check = found.cross_check
    display(Markdown(
        f"For scale, the circuit holds {h.heads_in_circuit_share:.0%} of all heads, "
        f"{h.mlps_in_circuit_share:.0%} of all MLPs and some head of "
        f"{h.attention_layers_in_circuit_share:.0%} of all layers: a component picked blindly "
        "would be in it that often (`base_rate`)."))
    if len(check):
        display(check.style.hide(axis="index"))
    else:
        display(Markdown("No other chapter of this run singled out a component."))

# %% tags=["remove-cell"]
found.save(Results(run_dir, chapter.METHOD))

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
# # Direct logit attribution by component, head and neuron
#
# Each attention layer, MLP layer, head and MLP neuron writes a vector into the residual stream;
# its direct logit attribution (DLA) [@elhage2021framework] is that vector, divided by the
# final norm's scale, dotted
# with the answer direction. Together with the embeddings and the unembedding bias they sum to
# the metric, which is checked below.

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
direction = "auto"  # cloze: logit_diff; yes/no: log_odds (linearised) or logit_diff_sum
top_components = 10  # heads and neurons listed by |DLA|

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from factcircuits.run.session import start_analysis

session, prepared, note = start_analysis(globals())
display(Markdown(f"Analysed: {note}."))

# %%
from factcircuits.chapters import attribution as chapter
from factcircuits.methods import attribution as A
from factcircuits.methods.uncertainty import with_interval
from factcircuits.results.store import Results
from factcircuits.results.summary import Options

summary = chapter.summarise(session.lm, prepared, options=Options.of(chapter.METHOD, globals()))
d, check, h = summary.attribution.direction, summary.sum_check, summary.headline
layers, heads = summary.attribution.layers, summary.attribution.heads

# %% [markdown]
# ## Do the components sum to the metric?

# %%
verdict = "passes" if h.dla_sum_check_passes else "**fails**"
lin = ("" if d.exact else
       f" For the yes/no log-odds the components sum to the first-order approximation at the "
       f"final logits; the gap (largest {summary.max_linearisation_offset:.3f}) is the "
       f"difference of the within-set entropies, added back before the check.")
cap = summary.soft_cap_note
display(Markdown(f"Direction: {d.label}. Largest |metric"
                 f"{' (pre-cap logits)' if cap else ''} − (components + bias)| over "
                 f"{len(check)} prompts: {h.dla_sum_check_max_abs_error:.2e}; the 1e-3 check "
                 f"{verdict}.{lin}" + (f"\n\n**Caveat.** {cap}" if cap else "")))
display(check)

# %% [markdown]
# ## By layer: attention and MLP

# %%
A.layer_figure(layers).show()
top_row = summary.top_layer
display(Markdown(f"The largest mean contribution is the {top_row.component} of layer "
                 f"**{top_row.layer}** ({top_row.dla:.3f})."))

# %% [markdown]
# ## By head

# %%
A.head_heatmap(heads).show()
top_h = summary.top_heads
display(top_h)
top_head = summary.strongest_head
display(Markdown(f"Top head: layer {top_head.layer}, head {top_head.head}, mean DLA "
                 f"{top_head.dla:.3f}."))

# %% [markdown]
# ## The top heads' direct effect by the position they read
#
# A head's output at the last token is a sum over the positions it attends to: its DLA splits
# exactly into Σ_s A[last, s] · (x_s W_V W_O) · u, one term per source position s
# [@chughtai2024summing], grouped here into the subject tokens, the relation tokens, the last
# token itself and the other tokens (BOS, any format prefix). A head that moves the attribute
# from the subject gets most of its direct effect through the subject positions. These are
# direct effects: what each head writes along the answer direction, not what removing it
# changes.

# %%
split = summary.top_head_sources
A.source_figure(split).show()
display(split.round(3))
moves = ("most of it comes through the subject: it **moves the attribute from the subject**"
         if h.top_head_moves_from_subject else
         "it is **not** shown to get most of it through the subject")
display(Markdown(
    f"Top head {h.top_head} (mean DLA {with_interval(h.top_head_dla, h.top_head_dla_ci, '.3f')}"
    f"): {with_interval(h.top_head_subject_share, h.top_head_subject_share_ci, '.0%')} of its "
    f"direct effect comes through the subject tokens, "
    f"{with_interval(h.top_head_relation_share, h.top_head_relation_share_ci, '.0%')} through "
    f"the relation tokens, {with_interval(h.top_head_last_share, h.top_head_last_share_ci, '.0%')}"
    f" through the last token and "
    f"{with_interval(h.top_head_other_share, h.top_head_other_share_ci, '.0%')} through the "
    f"others (shares of the mean over prompts; 95% bootstrap intervals); {moves}."))

# %% [markdown]
# ## By neuron, in the MLP layer with the largest contribution

# %%
top_n = summary.top_neurons
display(Markdown(f"Key MLP layer: **{summary.key_mlp_layer}**. Its top {len(top_n)} neurons "
                 f"together carry {100 * summary.neuron_share:.0f}% of the layer's mean DLA."))
display(top_n)

# %% tags=["remove-cell"]
summary.save(Results(run_dir, chapter.METHOD))

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
# # Causal tracing (ROME)
#
# @meng2022rome corrupt the subject by adding Gaussian noise to its token embeddings,
# then restore one clean internal state and measure how much of the probability of the right
# answer comes back. The **indirect effect** of a state is P(answer | noised, that state
# restored) − P(answer | noised); the **total effect** is P(answer | clean) − P(answer |
# noised). Averaged over prompts and noise samples by token class it gives the average
# indirect effect (AIE). On GPT-2 XL the MLP outputs at the last subject token peak in middle
# layers (AIE 6.6%) while attention there is small (1.6%); attention matters at the last token.
#
# ROME restored MLP and attention outputs in a **window** of 10 layers centred on each layer:
# about a fifth of GPT-2 XL's 48. A fixed 10 spans a third of a 30-layer model and more than
# half of an 18-layer one, and a windowed curve then jumps where one strong layer enters the
# window and drops where it leaves, so its peak can mark a window edge. Here MLP and attention
# outputs are restored **one layer at a time** (window 1): peaks, intervals and claims are read
# from these curves. The windowed curves are shown beside them, with the window scaled to the
# depth (`trace_window = "auto"`: 10/48 of the model's layers, rounded half up, at least 1),
# and for each windowed peak the text says whether it survives window 1 (its layer lies within
# the layers holding the window-1 peak in 95% of bootstrap resamples). The layer-0 MLP acts as
# part of the token embedding: restoring it at a noised subject token restores the subject's
# identity, not a stored attribute, so MLP peaks are taken over layers ≥ 1 and the layer-0 MLP
# is reported on its own.

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
noise_samples = 10  # ROME: 10 samples of subject noise per prompt
noise_scale = 3.0  # × the std of the subject tokens' embedding activations (ROME: 3)
trace_window = "auto"  # windowed MLP / attention traces; auto: 10/48 of the depth (ROME: 10 of 48)
trace_metric = "prob"  # "prob": P(answer) as in ROME; "task": the task's own metric
max_patches = "auto"  # patched copies stacked per forward ("auto": memory cap)

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from factcircuits.run.session import start_analysis

session, prepared, note = start_analysis(globals())
display(Markdown(f"Analysed: {note}. Causal tracing needs no counterfactual prompt, so no "
                 "pair is dropped for unequal token length here."))

# %%
import plotly.express as px

from factcircuits.chapters import causal_tracing as chapter
from factcircuits.methods import by_relation as R
from factcircuits.methods import causal_tracing as CT
from factcircuits.methods.positions import CLASS_TITLES
from factcircuits.results.store import Results
from factcircuits.results.summary import Options

summary = chapter.summarise(session.lm, prepared, options=Options.of(chapter.METHOD, globals()))
traces, aie, h = summary.traces, summary.aie, summary.headline
metric_name = summary.metric_name
display(Markdown(
    f"Noise: {noise_scale}× the standard deviation of the subject tokens' embedding activations "
    f"({h.noise_std:.4f}, measured where the noise is added) on the "
    f"subject tokens, {noise_samples} samples, seed {seed}. Mean {metric_name}: clean "
    f"**{h.clean_mean:.3f}**, noised **{h.noised_mean:.3f}**; mean total effect "
    f"**{h.total_effect_mean:.3f}** over {len(prepared.prompts)} prompts. Windowed MLP and "
    f"attention traces: **{h.window} layers** ({h.window_share:.0%} of the model's depth; "
    f"{h.window_rule})."))

# %% [markdown]
# ## Average indirect effect by token class
#
# One line per token class: hidden states, MLP and attention outputs restored one layer at a
# time, then MLP and attention outputs in a window of layers centred on the layer (traced at
# the last subject token and the last token only: the places the claims are about).

# %%
for kind in traces:
    part, named = summary.class_curves(kind)  # class: 'last token (n=4)'
    title = CT.trace_title(kind, traces[kind].window)
    fig = px.line(part, x="layer", y="aie", color="class", markers=True,
                  category_orders={"class": named},
                  labels={"aie": f"AIE on {metric_name}"},
                  title=f"Restoring the {title}<br><sup>n: prompts with a token of that "
                        f"class, of {len(prepared.prompts)}</sup>")
    fig.show()

# %% [markdown]
# ## One layer at a time against the window
#
# Left: each state restored alone; right: restored in the window of layers centred on the
# layer, as ROME did. The MLP at the last subject token and attention at the last subject
# token and at the last token; bars: 95% bootstrap interval over prompts.

# %%
fig = px.line(chapter.window_comparison(aie, summary.window), x="layer", y="aie",
              color="state", facet_col="restoration", markers=True, error_y="plus",
              error_y_minus="minus", labels={"aie": f"AIE on {metric_name}"},
              title=f"Restoring one layer against a window of {summary.window} layers "
                    f"({h.window_share:.0%} of the depth)")
fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
fig.show()

display(Markdown(chapter.peaks_markdown(h)))

# %% [markdown]
# ## One example, token by token

# %%
ex = 0
display(Markdown(f"Prompt: `{prepared.prompts[ex]!r}` (subject tokens marked *)."))
for kind in CT.KINDS:  # every token: window 1
    z, labels = summary.example_grid(kind, ex)
    fig = px.imshow(z, aspect="auto", color_continuous_scale="Purples",
                    labels={"x": "layer", "y": "token", "color": "indirect effect"},
                    title=f"{CT.trace_title(kind, traces[kind].window)}, example {ex}")
    fig.update_yaxes(ticktext=labels, tickvals=list(range(len(z))))
    fig.show()

# %% [markdown]
# ## Peaks per token class
#
# MLP peaks over layers ≥ 1; `windowed_*` rows are the windowed traces' peaks.

# %%
peaks = summary.peaks
display(peaks.assign(token_class=peaks["token_class"].map(lambda c: CLASS_TITLES.get(c, c))))

# %% [markdown]
# ## By relation
#
# Restoring the MLP outputs at the last subject token one layer at a time, relation by
# relation: the mean indirect effect with its 95% bootstrap band over the relation's prompts,
# and where each peaks (layers ≥ 1).

# %%
if summary.by_relation is not None:
    R.relation_figure(summary.relation_curves,
                      "Restoring the MLP at the last subject token, by relation (band: 95% "
                      "bootstrap interval over the relation's prompts)",
                      f"AIE on {metric_name}").show()
    display(Markdown(R.relation_peaks_markdown(summary.by_relation,
                                               h.mlp_subject_last_peak_layer,
                                               "Causal tracing")))
    display(summary.by_relation.round(3))
else:
    display(Markdown("The analysed prompts come from one relation."))

# %% tags=["remove-cell"]
summary.save(Results(run_dir, chapter.METHOD))

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

# %% tags=["parameters"]
model = "default"
dataset = ""  # empty: the default dataset of the task (paris-cloze / paris-yesno)
task = "cloze"
prompt_format = "raw"
answer_map = "yesno_default"
device = "auto"
dtype = ""
batch_size = 16
n_prompts = 0  # 0: every prompt
seed = 0
known = "top1"  # top1: the answer is the top token; pairwise: answer's logit > counterfactual's
per_relation = 0  # > 0: at most this many known prompts per relation (seeded sample)
relation = ""  # one relation of the dataset (empty: every relation)
run_dir = "."
noise_samples = 10  # ROME: 10 samples of subject noise per prompt
noise_scale = 3.0  # × the std of the subject tokens' embedding activations (ROME: 3)
trace_window = 10  # layers restored together for MLP / attention (ROME: 10); hidden states: 1
trace_metric = "prob"  # "prob": P(answer) as in ROME; "task": the task's own metric
max_patches = "auto"

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from factcircuits.run.session import start_analysis

session, prepared, note = start_analysis(globals())
display(Markdown(f"Analysed: {note}. Causal tracing needs no counterfactual prompt, so no "
                 "pair is dropped for unequal token length here."))

# %%
import plotly.express as px

from factcircuits.chapters import causal_tracing as chapter
from factcircuits.chapters.causal_tracing import tracing_summary
from factcircuits.methods import by_relation as R
from factcircuits.methods import causal_tracing as CT
from factcircuits.methods.positions import CLASS_TITLES
from factcircuits.methods.uncertainty import claim_text
from factcircuits.results.store import Results
from factcircuits.results.wording import class_labels

out = Results(run_dir, chapter.METHOD)
summary = tracing_summary(session.lm, prepared, noise_samples=noise_samples,
                          noise_scale=noise_scale, seed=seed, metric=trace_metric,
                          window=trace_window, max_patches=max_patches)
traces, aie, h = summary.traces, summary.aie, summary.headline
metric_name = summary.metric_name
display(Markdown(
    f"Noise: {noise_scale}× the standard deviation of the subject tokens' embedding activations "
    f"({h.noise_std:.4f}, measured where the noise is added) on the "
    f"subject tokens, {noise_samples} samples, seed {seed}. Mean {metric_name}: clean "
    f"**{h.clean_mean:.3f}**, noised **{h.noised_mean:.3f}**; mean total effect "
    f"**{h.total_effect_mean:.3f}** over {len(prepared.prompts)} prompts."))

# %% [markdown]
# ## Average indirect effect by token class
#
# One line per token class; hidden states restored one layer at a time, MLP and attention
# outputs in a window of layers centred on the layer.

# %%
order = [c for c in CT.TRACED_CLASSES if c in set(aie["token_class"])]
for kind in traces:
    part = aie[(aie["kind"] == kind) & aie["token_class"].isin(order)].copy()
    named = class_labels(summary.positions, CLASS_TITLES, order)  # 'last token (n=4)'
    part["class"] = part["token_class"].map(named)
    title = CT.KIND_TITLES[kind] + (f" (window {traces[kind].window})"
                                    if traces[kind].window > 1 else "")
    fig = px.line(part, x="layer", y="aie", color="class", markers=True,
                  category_orders={"class": [named[c] for c in order if c in named]},
                  labels={"aie": f"AIE on {metric_name}"},
                  title=f"Restoring the {title}<br><sup>n: prompts with a token of that "
                        f"class, of {len(prepared.prompts)}</sup>")
    fig.show()

# %% [markdown]
# ## MLP against attention at the last subject token

# %%
last_subj = aie[aie["token_class"] == "subject_last"]
curves = last_subj[last_subj["kind"].isin(["mlp", "attn"])]
fig = px.line(curves.assign(plus=curves["high"] - curves["aie"],
                            minus=curves["aie"] - curves["low"]),
              x="layer", y="aie", color="kind", markers=True, error_y="plus",
              error_y_minus="minus", labels={"aie": f"AIE on {metric_name}"},
              title="Last subject token: MLP vs attention (windowed restoration; bars: 95% "
                    "bootstrap interval over prompts)")
fig.show()


def peak_text(kind: str, token_class: str) -> str:
    return chapter.peak_text(h, kind, token_class)


claim = h.claim_mlp_over_attn_subject_last
display(Markdown(
    f"At the last subject token the MLP restoration peaks at "
    f"**{peak_text('mlp', 'subject_last')}** and attention at "
    f"**{peak_text('attn', 'subject_last')}**"
    + (f"; at the last token attention peaks at {peak_text('attn', 'last')}."
       if h.attn_last_peak_layer is not None else ".")
    + (f" MLPs against attention at the last subject token, per prompt at each kind's peak "
       f"layer: {claim_text(claim)}." if claim else "")))

# %% [markdown]
# ## One example, token by token

# %%
ex = 0
n_tok = int(traces["hidden"].lengths[ex])
positions = summary.positions
ex_tokens = positions[positions["prompt_id"] == ex]["token"].tolist()
ex_classes = positions[positions["prompt_id"] == ex]["token_class"].tolist()
labels = [f"{t!r}{'*' if c.startswith('subject') else ''}" for t, c in zip(ex_tokens, ex_classes)]
display(Markdown(f"Prompt: `{prepared.prompts[ex]!r}` (subject tokens marked *)."))
for kind, result in traces.items():
    z = result.indirect_effect()[:, :n_tok, ex].T.numpy()
    fig = px.imshow(z, aspect="auto", color_continuous_scale="Purples",
                    labels={"x": "layer", "y": "token", "color": "indirect effect"},
                    title=f"{CT.KIND_TITLES[kind]}, example {ex}")
    fig.update_yaxes(ticktext=labels, tickvals=list(range(n_tok)))
    fig.show()

# %% [markdown]
# ## Peaks per token class

# %%
peaks = summary.peaks
display(peaks.assign(token_class=peaks["token_class"].map(lambda c: CLASS_TITLES.get(c, c))))

# %% [markdown]
# ## By relation
#
# Restoring the MLP outputs at the last subject token, relation by relation: the mean indirect
# effect with its 95% bootstrap band over the relation's prompts, and where each peaks.

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
if summary.by_relation is not None:
    out.save("by_relation", summary.by_relation)
out.save("trace_long", summary.long)
out.save("aie_by_class", aie)
out.save("peaks", peaks)
_ = out.headline(h)

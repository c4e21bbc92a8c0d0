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
# # Logit lens and direct logit attribution by layer
#
# The residual stream at the last token is read (the logit lens [@nostalgebraist2020logitlens])
# along the answer direction after the
# embeddings and after every attention and MLP sublayer, with the final norm's scale frozen at
# its value on the final residual (as TransformerLens's `accumulated_resid(apply_ln=True)`).
# Each step's increase is that sublayer's direct contribution, so the curve ends on the metric.

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
example = 0  # the prompt shown (index among those analysed)
top_k = 5  # next tokens listed per prompt
attribute_k = 50  # top tokens in which the attribute rate counts attribute tokens

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from factcircuits.run.session import start_analysis

session, prepared, note = start_analysis(globals())
display(Markdown(f"Analysed: {note}."))

# %%
from factcircuits.chapters import logit_lens as chapter
from factcircuits.methods import attribute_rate as AR
from factcircuits.methods import by_relation as R
from factcircuits.methods import logit_lens as LL
from factcircuits.methods.attribution import soft_cap_note
from factcircuits.methods.uncertainty import layer_with_range, with_interval
from factcircuits.results.store import Results
from factcircuits.results.summary import Options

found = chapter.summarise(session.lm, prepared, options=Options.of(chapter.METHOD, globals()))
h, lens, rise = found.headline, found.lens, found.increase

# %% [markdown]
# ## The accumulated residual stream, sublayer by sublayer

# %%
LL.lens_figure(lens).show()
attn_share = with_interval(rise.attn_share, h.attn_share_ci, ".0%")
mlp_share = with_interval(rise.mlp_share, h.mlp_share_ci, ".0%")
exact = ("exactly" if lens.direction.exact else
         "to first order (the log-odds are nonlinear in the logits; the curve adds the "
         "linearisation offset back so that it ends on the metric)")
display(Markdown(
    f"Direction: **{lens.direction.label}**, which the components sum to {exact}. "
    f"Mean over {len(prepared.prompts)} prompts: the metric read after the embeddings is "
    f"{rise.embed_value:.3f} and after the last layer {rise.final_value:.3f}, a total "
    f"increase of {rise.total_increase:.3f}. Attention sublayers contribute "
    f"{rise.attn_increase:.3f} (**{attn_share}**) "
    f"and MLP sublayers {rise.mlp_increase:.3f} (**{mlp_share}**; intervals: bootstrap "
    f"over the {h.n_prompts} prompts); the original study found MLPs carried about 70% on "
    f"gemma-2b-it. The largest single jump, {rise.peak_jump:.3f}, is at "
    f"**{layer_with_range(rise.peak_layer, h.peak_layer_range)}** "
    f"({rise.peak_sublayer})."))
caveat = found.share_caveat
if caveat:
    display(Markdown(f"**Caveat.** {caveat}"))
cap = soft_cap_note(session.lm)
if cap:
    display(Markdown(f"**Caveat.** {cap}"))

# %% [markdown]
# ## Contribution of each sublayer

# %%
LL.increase_figure(found.curve).show()

# %% [markdown]
# ## Logit-lens top tokens per layer, one example
#
# Here each accumulated residual is normalised with its own scale and unembedded (the ordinary
# logit lens), showing which tokens the model would predict if it stopped there.

# %%
display(Markdown(f"Prompt: `{prepared.prompts[found.example]!r}`" + (
    f" (`example={example}` is past the {len(prepared.prompts)} prompts analysed: the last is "
    "shown)" if found.example != example else "")))
display(found.top_tokens)

# %% [markdown]
# ## Is the last subject token enriched with the subject's attributes?
#
# The attribute rate [@geva2023dissecting]: after every layer, the hidden state at the last
# subject token is read with the logit lens (its own scale, the final norm, the unembedding),
# and we count how many of the subject's attribute tokens (the first token of every object
# the dataset pairs with the subject, over all its relations, the prompt's own answer
# included; no token excluded) are among the top tokens. Two controls tell enrichment from
# chance: the other subjects' attribute tokens at the same position (are these tokens
# object-like words the position favours in general?) and the subject's own attribute tokens
# at the prompt's first relation token (are they likely everywhere?). This is a direct
# read-out of the residual stream, not a causal effect.

# %%
if h.attribute_rate_peak is None:
    display(Markdown("No analysed prompt's subject has an object in this dataset (yes/no rows "
                     "name their object only in a derived set's `clue`), so the attribute "
                     "rate is not computed."))
else:
    AR.rate_figure(found.rate_curve, attribute_k).show()
    verdict = ("above both controls, each paired interval of the difference above 0: "
               "**enriched**" if h.attribute_rate_enriched else
               "**not** resolved above both controls: not shown to be enriched")
    peak = with_interval(h.attribute_rate_peak, h.attribute_rate_peak_ci, ".1%")
    others = with_interval(h.attribute_rate_other_subjects, h.attribute_rate_other_subjects_ci,
                           ".1%")
    first_relation = with_interval(h.attribute_rate_first_relation,
                                   h.attribute_rate_first_relation_ci, ".1%")
    display(Markdown(
        f"Over {h.attribute_rate_n_prompts} prompts (on average "
        f"{h.attribute_rate_tokens_mean:.1f} attribute tokens per subject), the share of the "
        f"subject's attribute tokens in the top {attribute_k} peaks at **{peak}** after "
        f"{layer_with_range(h.attribute_rate_peak_layer, h.attribute_rate_peak_layer_range)}. "
        f"At that layer the other subjects' attribute tokens reach {others} and the subject's "
        f"own at the first relation token {first_relation}. The peak is {verdict}."))

# %% [markdown]
# ## By relation
#
# Where the largest single jump happens, relation by relation, with the range of layers that
# holds it in 95% of bootstrap resamples of the relation's prompts.

# %%
if found.by_relation is not None:
    display(Markdown(R.relation_peaks_markdown(found.by_relation, h.peak_layer, "Logit lens")))
    display(found.by_relation.round(3))
else:
    display(Markdown("The analysed prompts come from one relation."))

# %% tags=["remove-cell"]
found.save(Results(run_dir, chapter.METHOD))

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
# # Ablation and attention knockout
#
# Ablation removes the components with the largest direct logit attribution (setting them to
# zero, or to their mean over the prompts at each position) and measures the metric drop.
# Attention knockout [@geva2023dissecting] blocks the last token's attention to the subject
# tokens, or to the relation tokens, in a window of consecutive layers, and measures how much
# the probability of the answer changes: where the answer is read from the subject.

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
n_components = 6  # top components by |DLA| to ablate
knockout_window = 0  # layers knocked out together; 0: n_layers // 6
n_counterfactuals = 3  # counterfactuals per prompt: same relation, other answer, equal length first

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from factcircuits.run.session import start_analysis

session, prepared, note = start_analysis(globals())
display(Markdown(f"Analysed: {note}."))

# %%
from factcircuits.chapters import ablation_knockout as chapter
from factcircuits.methods import ablation as AB
from factcircuits.methods import knockout as KO
from factcircuits.results.store import Results
from factcircuits.results.summary import Options

found = chapter.summarise(session.lm, prepared, options=Options.of(chapter.METHOD, globals()))
abl, ko, h = found.ablation, found.knockout, found.headline

# %% [markdown]
# ## Ablating the top components
#
# **Resample ablation** (the headline) replaces a component's output at every position with
# its output on one of the prompt's counterfactual prompts (same relation, another answer,
# the same token length) and averages the metric over those donors: the component still
# carries an activation the model really produces, only not the one for this answer.
# **Zero** and **mean** ablation, shown for comparison, put activations no prompt produces
# into the model (a zero; an average over prompts that mostly share the answer), so part of
# what they measure is the model leaving its distribution
# [@heimersheim2024patching; @zhang2023patching].

# %%
AB.ablation_figure(abl.table).show()
components = abl.components
joint_txt = "".join(f" Ablating all {len(components)} together ({r.mode}"
                    f"{', off-distribution' if r.mode != 'resample' else ''}) drops it by "
                    f"{r.drop:.3f}." for r in abl.joint.itertuples())
donors = (f"{h.ablation_resample_prompts} of {len(prepared.prompts)} prompts have a "
          f"counterfactual prompt of equal token length to resample from "
          f"({h.ablation_resample_donors:.1f} on average); the others are left out of "
          "resample ablation" if h.ablation_resample_donors else
          "No prompt has a counterfactual prompt of equal token length, so the headline falls "
          "back to zero ablation")
display(Markdown(
    f"Components ablated: the {len(components)} with the largest mean |DLA| "
    f"({', '.join(AB.component_label(c) for c in components)}). Mean clean metric "
    f"{abl.clean_mean:.3f}. {donors}. The biggest single drop is "
    f"**{h.ablation_biggest_drop:.3f}**, from {h.ablation_biggest_mode}-ablating "
    f"**{h.ablation_biggest_component}**.{joint_txt} Off the distribution, zero "
    f"ablation's biggest single drop is {h.ablation_zero_biggest_drop:.3f} "
    f"({h.ablation_zero_biggest_component}) and mean ablation's "
    f"{h.ablation_mean_biggest_drop:.3f} ({h.ablation_mean_biggest_component}); "
    f"mean ablation uses the mean over all {len(session.task.prompts)} dataset prompts at "
    "each position."))
display(abl.summary)

# %% [markdown]
# ## Attention knockout from the last position

# %%
KO.knockout_figure(ko.table).show()
KO.knockout_figure(ko.table, "metric_change").show()
display(Markdown(" ".join(
    f"Blocking the last token's attention to the **{w.role}** tokens hurts most in layers "
    f"{w.first}–{w.last} (centre {w.centre}): P(answer) changes by "
    f"{100 * w.relative_p_change:.1f}% and the metric by {w.metric_change:.3f}."
    for w in ko.worst_windows) + f" (Windows of {ko.window} layers.)"))
if h.knockout_relation_minus_subject is not None:
    low, high = h.knockout_relation_minus_subject_ci
    which = {"relation": "blocking the **relation** tokens hurts more",
             "subject": "blocking the **subject** hurts more"}.get(
        found.knockout_hurts_more, "which of the two hurts more is **not resolved**")
    display(Markdown(
        f"Each at its own worst window, P(answer)'s relative change with the relation tokens "
        f"blocked minus with the subject blocked is {h.knockout_relation_minus_subject:+.1%} "
        f"(95% paired bootstrap CI {low:+.1%} to {high:+.1%}): {which}. Both are total effects: "
        f"the attention is blocked and every later computation reacts."))

# %% tags=["remove-cell"]
found.save(Results(run_dir, chapter.METHOD))

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
# Attention knockout (Geva et al. 2023) blocks the last token's attention to the subject
# tokens, or to the relation tokens, in a window of consecutive layers, and measures how much
# the probability of the answer changes: where the answer is read from the subject.

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
run_dir = "."
n_components = 6  # top components by |DLA| to ablate
knockout_window = 0  # layers knocked out together; 0: n_layers // 6

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from factcircuits.run.display import init_notebook
from factcircuits.run.session import open_session_from

init_notebook()
session = open_session_from(globals())
prepared, note = session.known()
display(Markdown(f"Analysed: {note}."))

# %%
from factcircuits.methods import ablation as AB
from factcircuits.methods import attribution as A
from factcircuits.methods import knockout as KO
from factcircuits.run.folders import save_headline, save_table

NOTEBOOK = "06_ablation_knockout"
dec = A.decompose(session.model, session.tokenizer, prepared, session.batch_size, progress=True)
d = A.answer_direction(session.model, prepared, dec.pre_cap_logits)
components = A.top_components(A.layer_dla(dec, d), A.head_dla(session.model, dec, d),
                              n_components)
abl = AB.ablation_table(session.model, session.tokenizer, prepared, components,
                        batch_size=session.batch_size, reference=session.task, progress=True)
summary = AB.summarise(abl)
save_table(run_dir, NOTEBOOK, "ablation", abl)
save_table(run_dir, NOTEBOOK, "ablation_summary", summary)

# %% [markdown]
# ## Ablating the top components

# %%
AB.ablation_figure(abl).show()
single = summary[~summary["component"].str.startswith("all")]
big = single.iloc[0]
joint = summary[summary["component"].str.startswith("all")]
joint_txt = "".join(f" Ablating all {len(components)} together ({r.mode}) drops it by "
                    f"{r.drop:.3f}." for r in joint.itertuples())
display(Markdown(
    f"Components ablated: the {len(components)} with the largest mean |DLA| "
    f"({', '.join(AB.component_label(c) for c in components)}). Mean clean metric "
    f"{abl['clean'].mean():.3f}. The biggest single drop is **{big['drop']:.3f}**, from "
    f"{big['mode']}-ablating **{big['component']}**.{joint_txt} Mean ablation uses the mean "
    f"over all {len(session.task.prompts)} dataset prompts at each position."))
display(summary)

# %% [markdown]
# ## Attention knockout from the last position

# %%
ko = KO.knockout_sweep(session.model, session.tokenizer, prepared, knockout_window or None,
                       batch_size=session.batch_size, progress=True)
save_table(run_dir, NOTEBOOK, "knockout", ko)
save_table(run_dir, NOTEBOOK, "knockout_summary", KO.summarise(ko))
KO.knockout_figure(ko).show()
KO.knockout_figure(ko, "metric_change").show()
peaks = KO.peak_windows(ko)
k = int(ko["window"].iloc[0])
display(Markdown(" ".join(
    f"Blocking the last token's attention to the **{role}** tokens hurts most in layers "
    f"{p['first']}–{p['last']} (centre {p['centre']}): P(answer) changes by "
    f"{100 * p['relative_p_change']:.1f}% and the metric by {p['metric_change']:.3f}."
    for role, p in peaks.items()) + f" (Windows of {k} layers.)"))

# %%
_ = save_headline(run_dir, NOTEBOOK, {
    "ablation_biggest_drop": big["drop"], "ablation_biggest_component": big["component"],
    "ablation_biggest_mode": big["mode"], "knockout_window": k,
    **{f"knockout_{role}_peak_centre": p["centre"] for role, p in peaks.items()},
    **{f"knockout_{role}_peak_relative_p_change": p["relative_p_change"]
       for role, p in peaks.items()}})

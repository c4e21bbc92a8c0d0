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
# # Activation patching: which states carry the fact?
#
# Each prompt is paired with a counterfactual prompt (the subject swapped for another subject
# of the same relation, with a different answer). We run the counterfactual ("corrupted")
# prompt and paste in one activation from the clean run: the residual stream entering a layer,
# an attention output or an MLP output at one position, or one attention head's output. The
# **normalized effect** (patched − corrupted)/(clean − corrupted) of the task metric says how
# much of the clean answer that one state restores: 0 = still the corrupted answer, 1 = fully
# the clean one (Zhang & Nanda 2023; Heimersheim & Nanda 2024). Class averages normalize the
# mean metric, so a pair with a small clean−corrupted gap cannot dominate.

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
max_patches = "auto"  # patched copies stacked per forward ("auto": memory cap)
heads_by_position = False  # also patch every head at every position (n_heads × slower)

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from factcircuits.run.session import start_analysis

session, prepared, note = start_analysis(globals())
pairs, dropped = session.patchable(prepared)
display(Markdown(
    f"Analysed: {note}. Of these, **{len(pairs.prompts)}** have a counterfactual prompt of "
    f"the same token length and are patched; **{len(dropped)}** are left out, because "
    "patching compares the same positions in both runs and a different token count would "
    "shift every position after the subject."))
if len(dropped):
    display(dropped[["prompt", "corrupted_prompt", "reason"]])

# %%
import plotly.express as px

from factcircuits.methods import patching as P
from factcircuits.methods.positions import CLASS_TITLES
from factcircuits.methods.summaries import patching_summary
from factcircuits.run.folders import save_headline, save_table

NOTEBOOK = "04_activation_patching"
summary = patching_summary(session.lm, pairs, n_dropped=len(dropped), max_patches=max_patches,
                           heads_by_position=heads_by_position)
results, headline = summary.results, summary.headline
if results:
    display(Markdown(
        f"Mean {prepared.main_metric}: clean **{headline['clean_metric']:.2f}**, corrupted "
        f"**{headline['corrupted_metric']:.2f}** over {len(pairs.prompts)} pairs."))
    if summary.caveat:
        display(Markdown(f"**Caveat.** {summary.caveat}"))
else:
    display(Markdown("No prompt pair can be patched, so this notebook shows nothing further."))

# %% [markdown]
# ## Layer × token class
#
# Every pair's positions are labelled with ROME's token classes (subject tokens, the tokens
# after it, the last token); the heatmaps average the effect over pairs and over positions of
# a class.

# %%
for component in results:
    grid = summary.class_grid(component)
    fig = px.imshow(grid.T, aspect="auto", color_continuous_scale="RdBu", zmin=-1, zmax=1,
                    labels={"x": "layer", "y": "token class", "color": "normalized"},
                    title=f"Patching the {P.COMPONENT_TITLES[component]}: normalized effect")
    fig.update_yaxes(ticktext=[CLASS_TITLES.get(c, c) for c in grid.columns],
                     tickvals=list(grid.columns))
    fig.show()

# %% [markdown]
# ## One example, position by position
#
# The same three patchings for the first pair, with its own tokens on the position axis.

# %%
if results:
    ex = 0
    n_tok = int(results["resid_pre"].lengths[ex])
    positions = summary.positions
    ex_tokens = positions[positions["prompt_id"] == ex]["token"].tolist()
    ex_labels = [f"{i}: {t!r}" for i, t in enumerate(ex_tokens)]
    display(Markdown(f"Clean: `{pairs.prompts[ex]!r}` → corrupted: "
                     f"`{pairs.corrupted_prompts[ex]!r}`"))
    for component, result in results.items():
        z = result.normalized()[:, :n_tok, ex].T.numpy()
        fig = px.imshow(z, aspect="auto", color_continuous_scale="RdBu", zmin=-1, zmax=1,
                        labels={"x": "layer", "y": "position", "color": "normalized"},
                        title=f"{P.COMPONENT_TITLES[component]}, example {ex}")
        fig.update_yaxes(ticktext=ex_labels, tickvals=list(range(n_tok)))
        fig.show()

# %% [markdown]
# ## Attention heads
#
# Each head's output (all positions at once) pasted from the clean run.

# %%
if results:
    fig = px.imshow(summary.heads.normalized_mean().numpy(), aspect="auto",
                    color_continuous_scale="RdBu", zmin=-1, zmax=1,
                    labels={"x": "head", "y": "layer", "color": "normalized"},
                    title="Per-head patching (all positions): normalized effect")
    fig.show()
    display(summary.top_heads)

# %% [markdown]
# ## Where the effect peaks

# %%
if results:
    peaks = summary.peaks
    display(peaks)
    r, a, m = (peaks.set_index("component").loc[c] for c in ("resid_pre", "attn_out", "mlp_out"))
    handover = summary.handover
    display(Markdown(
        "In the residual stream the clean answer is carried by the subject tokens first and by "
        "the last token later; the last token's effect first reaches the subject tokens' at "
        + (f"layer **{handover}**." if handover is not None else "no layer.")))
    display(Markdown(
        f"The residual stream carries the most at the **{CLASS_TITLES[r['token_class']]}** "
        f"(layer {r['layer']}, normalized effect {r['effect']:.2f}). MLP outputs peak at the "
        f"{CLASS_TITLES[m['token_class']]} in layer {m['layer']} ({m['effect']:.2f}); "
        f"attention outputs at the {CLASS_TITLES[a['token_class']]} in layer {a['layer']} "
        f"({a['effect']:.2f}). The strongest single head is L{headline['top_head_layer']}"
        f"H{headline['top_head']} ({headline['top_head_effect']:.2f})."))

# %% tags=["remove-cell"]
if results:
    save_table(run_dir, NOTEBOOK, "patching_long", summary.long)
    save_table(run_dir, NOTEBOOK, "patching_by_class", summary.classes)
    save_table(run_dir, NOTEBOOK, "patching_by_role", summary.roles)
    save_table(run_dir, NOTEBOOK, "heads", P.tidy(summary.heads))
    save_table(run_dir, NOTEBOOK, "peaks", peaks)
    if summary.heads_by_position is not None:
        save_table(run_dir, NOTEBOOK, "heads_by_position", P.tidy(summary.heads_by_position))
if len(dropped):
    save_table(run_dir, NOTEBOOK, "dropped_pairs", dropped)
_ = save_headline(run_dir, NOTEBOOK, headline)

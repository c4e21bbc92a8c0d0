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

from factcircuits.run.display import init_notebook
from factcircuits.run.session import open_session_from

init_notebook()
session = open_session_from(globals())
prepared, note = session.known()
pairs, dropped = session.patchable(prepared)
display(Markdown(
    f"Analysed: {note}. Of these, **{len(pairs.prompts)}** have a counterfactual prompt of "
    f"the same token length and are patched; **{len(dropped)}** are left out, because "
    "patching compares the same positions in both runs and a different token count would "
    "shift every position after the subject."))
if len(dropped):
    display(dropped[["prompt", "corrupted_prompt", "reason"]])

# %%
import pandas as pd
import plotly.express as px

from factcircuits.methods import patching as P
from factcircuits.methods.positions import CLASS_TITLES, TOKEN_CLASSES
from factcircuits.run.folders import save_headline, save_table

NOTEBOOK = "04_activation_patching"
results, headline = {}, {"n_pairs": len(pairs.prompts), "n_dropped_unequal": len(dropped),
                         "metric": prepared.main_metric}
if len(pairs.prompts):
    positions = P.position_table(session.lm, pairs)
    for component in ("resid_pre", "attn_out", "mlp_out"):
        results[component] = P.patch(session.lm, pairs, component, max_patches=max_patches)
    heads = P.patch_heads(session.lm, pairs, max_patches=max_patches)
    long = pd.concat([P.tidy(r, positions) for r in results.values()], ignore_index=True)
    classes = P.by_class(long, "token_class")
    roles = P.by_class(long, "role")
    clean_mean, corrupt_mean = float(heads.clean.mean()), float(heads.corrupted.mean())
    display(Markdown(
        f"Mean {prepared.main_metric}: clean **{clean_mean:.2f}**, corrupted "
        f"**{corrupt_mean:.2f}** over {len(pairs.prompts)} pairs."))
    caveat = P.normalization_caveat(clean_mean, corrupt_mean, prepared.main_metric)
    if caveat:
        display(Markdown(f"**Caveat.** {caveat}"))
else:
    display(Markdown("No prompt pair can be patched, so this notebook shows nothing further."))

# %% [markdown]
# ## Layer × token class
#
# Every pair's positions are labelled with ROME's token classes (subject tokens, the tokens
# after it, the last token); the heatmaps average the effect over pairs and over positions of
# a class.

# %%
if results:
    for component in results:
        grid = classes[classes["component"] == component].pivot(
            index="layer", columns="token_class", values="normalized")
        grid = grid[[c for c in TOKEN_CLASSES if c in grid.columns]]
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
    head_grid = heads.normalized_mean()
    fig = px.imshow(head_grid.numpy(), aspect="auto", color_continuous_scale="RdBu", zmin=-1,
                    zmax=1, labels={"x": "head", "y": "layer", "color": "normalized"},
                    title="Per-head patching (all positions): normalized effect")
    fig.show()
    flat = head_grid.flatten().nan_to_num(float("-inf"))
    top = flat.topk(min(5, len(flat)))
    n_heads = head_grid.shape[1]
    top_heads = pd.DataFrame({"layer": (top.indices // n_heads).tolist(),
                              "head": (top.indices % n_heads).tolist(),
                              "normalized": top.values.tolist()})
    display(top_heads)
    if heads_by_position:
        by_pos = P.patch_heads_by_pos(session.lm, pairs, max_patches=max_patches)
        save_table(run_dir, NOTEBOOK, "heads_by_position", P.tidy(by_pos))

# %% [markdown]
# ## Where the effect peaks

# %%
if results:
    rows = []
    for component in results:
        best = P.peak(long[long["component"] == component], "token_class")
        best_role = P.peak(long[long["component"] == component], "role")
        rows.append({"component": component, **best, "role": best_role["role"],
                     "role_effect": best_role["effect"], "role_layer": best_role["layer"]})
        headline[f"{component}_peak"] = best["effect"]
        headline[f"{component}_peak_layer"] = best["layer"]
        headline[f"{component}_peak_class"] = best["token_class"]
    peaks = pd.DataFrame(rows)
    display(peaks)
    r, a, m = (peaks.set_index("component").loc[c] for c in ("resid_pre", "attn_out", "mlp_out"))
    headline.update(top_head_layer=int(top_heads["layer"][0]), top_head=int(top_heads["head"][0]),
                    top_head_effect=float(top_heads["normalized"][0]),
                    clean_metric=clean_mean, corrupted_metric=corrupt_mean)
    resid_roles = roles[roles["component"] == "resid_pre"].pivot(
        index="layer", columns="role", values="normalized")
    handover = None
    if {"subject", "last"} <= set(resid_roles.columns):
        later = resid_roles.index[resid_roles["last"] >= resid_roles["subject"]]
        handover = int(later[0]) if len(later) else None
    headline["resid_pre_handover_layer"] = handover
    display(Markdown(
        "In the residual stream the clean answer is carried by the subject tokens first and by "
        "the last token later; the last token's effect first reaches the subject tokens' at "
        + (f"layer **{handover}**." if handover is not None else "no layer.")))
    display(Markdown(
        f"The residual stream carries the most at the **{CLASS_TITLES[r['token_class']]}** "
        f"(layer {r['layer']}, normalized effect {r['effect']:.2f}). MLP outputs peak at the "
        f"{CLASS_TITLES[m['token_class']]} in layer {m['layer']} ({m['effect']:.2f}); "
        f"attention outputs at the {CLASS_TITLES[a['token_class']]} in layer {a['layer']} "
        f"({a['effect']:.2f}). The strongest single head is L{top_heads['layer'][0]}"
        f"H{top_heads['head'][0]} ({top_heads['normalized'][0]:.2f})."))

# %% tags=["remove-cell"]
if results:
    save_table(run_dir, NOTEBOOK, "patching_long", long)
    save_table(run_dir, NOTEBOOK, "patching_by_class", classes)
    save_table(run_dir, NOTEBOOK, "patching_by_role", roles)
    save_table(run_dir, NOTEBOOK, "heads", P.tidy(heads))
    save_table(run_dir, NOTEBOOK, "peaks", peaks)
if len(dropped):
    save_table(run_dir, NOTEBOOK, "dropped_pairs", dropped)
_ = save_headline(run_dir, NOTEBOOK, headline)

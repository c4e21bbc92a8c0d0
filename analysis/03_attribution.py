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
# its direct logit attribution (DLA) is that vector, divided by the final norm's scale, dotted
# with the answer direction. Together with the embeddings and the unembedding bias they sum to
# the metric, which is checked below.

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
direction = "auto"
top_components = 10  # heads and neurons listed by |DLA|

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from factcircuits.run.display import init_notebook
from factcircuits.run.session import open_session_from

init_notebook()
session = open_session_from(globals())
prepared, note = session.known()
display(Markdown(f"Analysed: {note}."))

# %%
from factcircuits.methods import attribution as A
from factcircuits.run.folders import save_headline, save_table

NOTEBOOK = "03_attribution"
dec = A.decompose(session.model, session.tokenizer, prepared, session.batch_size, progress=True)
d = A.answer_direction(session.model, prepared, dec.pre_cap_logits, direction)
check = A.sum_check(dec, d)
layers = A.layer_dla(dec, d)
heads = A.head_dla(session.model, dec, d, progress=True)
save_table(run_dir, NOTEBOOK, "sum_check", check)
save_table(run_dir, NOTEBOOK, "layer_dla", layers)
save_table(run_dir, NOTEBOOK, "head_dla", heads)

# %% [markdown]
# ## Do the components sum to the metric?

# %%
max_err = float(check["error"].abs().max())
cap = A.soft_cap_note(session.model)
sum_passes = max_err < 1e-3
verdict = "passes" if sum_passes else "**fails**"
against = " (pre-cap logits)" if cap else ""
lin = ("" if d.exact else
       f" For the yes/no log-odds the components sum to the first-order approximation at the "
       f"final logits; the gap (largest {check['linearisation_offset'].abs().max():.3f}) is the "
       f"difference of the within-set entropies, added back before the check.")
display(Markdown(f"Direction: {d.label}. Largest |metric{against} − (components + bias)| over "
                 f"{len(check)} prompts: {max_err:.2e}; the 1e-3 check {verdict}.{lin}"
                 + (f"\n\n**Caveat.** {cap}" if cap else "")))
display(check)

# %% [markdown]
# ## By layer: attention and MLP

# %%
A.layer_figure(layers).show()
means = A.summarise_layers(layers[layers.component != "embed"])
top_row = means.loc[means["dla"].abs().idxmax()]
display(Markdown(f"The largest mean contribution is the {top_row['component']} of layer "
                 f"**{int(top_row['layer'])}** ({top_row['dla']:.3f})."))

# %% [markdown]
# ## By head

# %%
A.head_heatmap(heads).show()
top_h = A.top_heads(heads, top_components)
display(top_h)
display(Markdown(f"Top head: layer {int(top_h['layer'][0])}, head {int(top_h['head'][0])}, mean "
                 f"DLA {top_h['dla'][0]:.3f}."))
save_table(run_dir, NOTEBOOK, "top_heads", top_h)

# %% [markdown]
# ## By neuron, in the MLP layer with the largest contribution

# %%
mlp_means = means[means.component == "mlp"]
key_layer = int(mlp_means.loc[mlp_means["dla"].abs().idxmax(), "layer"])
neurons = A.neuron_dla(session.model, session.tokenizer, prepared, key_layer, d,
                       session.batch_size, progress=True)
top_n = A.top_neurons(neurons, top_components)
share = float(top_n["dla"].sum() / mlp_means.set_index("layer").loc[key_layer, "dla"])
display(Markdown(f"Key MLP layer: **{key_layer}**. Its top {len(top_n)} neurons together carry "
                 f"{100 * share:.0f}% of the layer's mean DLA."))
display(top_n)
save_table(run_dir, NOTEBOOK, "top_neurons", top_n)

# %%
_ = save_headline(run_dir, NOTEBOOK, {
    "dla_sum_check_max_abs_error": max_err, "dla_sum_check_passes": sum_passes,
    "dla_sum_checked_against": "pre-cap logits" if cap else "logits",
    "top_head": f"L{int(top_h['layer'][0])}H{int(top_h['head'][0])}",
    "top_head_dla": top_h["dla"][0],
    "top_layer_component": f"{top_row['component']} L{int(top_row['layer'])}",
    "top_layer_component_dla": top_row["dla"], "key_mlp_layer": key_layer,
    "direction": d.kind})

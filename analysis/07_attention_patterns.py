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
# # Attention patterns of the top heads
#
# The heads with the largest direct logit attribution, on one example: where does the last
# token look? (Interactive: pick a head from the menu; hover for tokens.)

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
n_heads = 6
example = 0

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from factcircuits.run.display import init_notebook
from factcircuits.run.session import open_session_from

init_notebook()
session = open_session_from(globals())
prepared, note = session.known()
display(Markdown(f"Analysed: {note}."))

# %%
from factcircuits.methods import attention as AT
from factcircuits.methods import attribution as A
from factcircuits.methods.positions import prompt_positions
from factcircuits.run.folders import save_headline, save_table

NOTEBOOK = "07_attention_patterns"
dec = A.decompose(session.model, session.tokenizer, prepared, session.batch_size, progress=True)
d = A.answer_direction(session.model, prepared, dec.pre_cap_logits)
top = A.top_heads(A.head_dla(session.model, dec, d), n_heads)
heads = list(zip(top["layer"].astype(int), top["head"].astype(int)))
ex = min(example, len(prepared.prompts) - 1)
tokens, patterns = AT.head_patterns(session.model, session.tokenizer, prepared.prompts[ex],
                                    heads, prepared.prompt_format)
pos = prompt_positions(session.tokenizer, prepared.prompts[ex], prepared.rows["subject"][ex],
                       prepared.prompt_format, prepared.rows["prompt"][ex])
last = AT.last_token_attention(tokens, patterns)
last["class"] = [pos.classes[k] for k in last["key"]]
save_table(run_dir, NOTEBOOK, "last_token_attention", last)
display(Markdown(f"Prompt: `{prepared.prompts[ex]!r}`; subject tokens: "
                 f"{', '.join(repr(tokens[i]) for i in pos.subject)}."))
display(top)

# %%
AT.pattern_figure(tokens, patterns).show()

# %%
AT.last_token_figure(last).show()
subj = last[last["class"].str.startswith("subject")].groupby(["layer", "head"])["attention"].sum()
best = subj.idxmax()
display(Markdown(f"Of these heads, L{best[0]}H{best[1]} puts the most attention from the last "
                 f"token on the subject ({subj.max():.2f} of its attention)."))
top_dla = subj.get((heads[0][0], heads[0][1]), 0.0)
display(Markdown(f"The head with the largest direct effect, L{heads[0][0]}H{heads[0][1]}, puts "
                 f"{top_dla:.2f} of the last token's attention on the subject."))

# %% tags=["remove-cell"]
_ = save_headline(run_dir, NOTEBOOK, {
    "top_subject_head": f"L{best[0]}H{best[1]}", "top_subject_head_attention": subj.max(),
    "top_dla_head": f"L{heads[0][0]}H{heads[0][1]}",
    "top_dla_head_subject_attention": top_dla, "example": ex})

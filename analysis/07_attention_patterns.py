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
# token look?

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
n_heads = 6  # heads shown (the largest by |DLA|)
example = 0  # the prompt shown (index among those analysed)

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from factcircuits.run.session import start_analysis

session, prepared, note = start_analysis(globals())
display(Markdown(f"Analysed: {note}."))

# %%
from factcircuits.chapters import attention_patterns as chapter
from factcircuits.methods import attention as AT
from factcircuits.results.store import Results
from factcircuits.results.summary import Options
from factcircuits.run.display import media_note

summary = chapter.summarise(session.lm, prepared, options=Options.of(chapter.METHOD, globals()))
tokens, h = summary.tokens, summary.headline
display(Markdown(f"Prompt: `{prepared.prompts[summary.example]!r}`; subject tokens: "
                 f"{', '.join(repr(tokens[i]) for i in summary.positions.subject)}."))
display(summary.top_heads)

# %%
AT.pattern_figure(tokens, summary.patterns).show()
media_note(*AT.pattern_figure_notes(summary.patterns))

# %%
AT.last_token_figure(summary.last).show()
display(Markdown(f"Of these heads, {h.top_subject_head} puts the most attention from the "
                 f"last token on the subject ({h.top_subject_head_attention:.2f} of its "
                 "attention)."))
display(Markdown(f"The head with the largest direct effect, {h.top_dla_head}, puts "
                 f"{h.top_dla_head_subject_attention:.2f} of the last token's attention on "
                 "the subject."))

# %% tags=["remove-cell"]
summary.save(Results(run_dir, chapter.METHOD))

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
# # Task check: does the model know these facts?
#
# Before asking *where* a model stores a fact, check *that* it retrieves it. This notebook
# scores every prompt with every metric of the task, shows the model's top next tokens, and
# keeps the prompts the model knows (parameter `known`) for the mechanistic analyses that follow.

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
top_k = 5  # next tokens listed per prompt

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from factcircuits.run.display import init_notebook
from factcircuits.run.session import open_session_from

init_notebook()
session = open_session_from(globals())

# %%
import plotly.express as px

from factcircuits.chapters import task_check as chapter
from factcircuits.methods import task_check
from factcircuits.results.store import Results
from factcircuits.results.summary import Options

prepared = session.task
report = chapter.summarise(session.lm, prepared, options=Options.of(chapter.METHOD, globals()))


def shown(table, name):
    """The table, or its first rows and where the full table is (hundreds of prompts)."""
    head, note = task_check.shown_rows(table, f"results/{chapter.METHOD.notebook}/{name}.csv")
    if note:
        display(Markdown(note))
    return head
display(Markdown(report.summary_markdown()))

# %% [markdown]
# ## Model and dataset

# %%
display(report.model_table)

# %% [markdown]
# ## Top next tokens per prompt
#
# The model's own ranking at the position where the answer is read, as data rather than
# printout.

# %%
display(shown(report.top_tokens_wide, "top_tokens"))

# %% [markdown]
# ## Every metric, per prompt
#
# Signs are set by the label: positive means the model leans towards the right answer.

# %%
display(Markdown(task_check.metric_explanation(session.task)))
display(shown(report.per_prompt_display, "per_prompt"))

# %%
if len(report.per_prompt) <= task_check.MAX_ROWS_SHOWN:
    fig = px.bar(report.per_prompt, x="short_prompt", y="metric", color="label_text",
                 labels={"metric": report.main_metric, "short_prompt": "prompt",
                         "label_text": "label"},
                 title=f"{report.main_metric} per prompt (positive = right)")
    fig.update_layout(xaxis_tickangle=-40, height=460)
else:  # hundreds of prompts: their distribution, not one unreadable bar each
    fig = px.histogram(report.per_prompt, x="metric", color="label_text", nbins=40,
                       labels={"metric": report.main_metric, "label_text": "label"},
                       title=f"{report.main_metric} over {len(report.per_prompt)} prompts "
                             "(positive = right)")
fig.show()

# %% [markdown]
# ## By relation
#
# Accuracy per relation with its exact 95% interval (Clopper–Pearson) over the relation's
# prompts; each relation is tested against the pooled accuracy (exact binomial test,
# Holm-adjusted over the relations tested). *Known* prompts pass the `known` criterion,
# *analysed* ones go on to the mechanistic notebooks (all known prompts, or `per_relation` of
# them per relation).

# %%
if report.by_relation is not None:
    table = report.by_relation
    fig = px.scatter(table, x="accuracy", y="relation", error_x=table["accuracy_high"]
                     - table["accuracy"], error_x_minus=table["accuracy"] - table["accuracy_low"],
                     title="Accuracy by relation (bars: exact 95% interval)",
                     labels={"accuracy": "accuracy (top-1)" if prepared.task == "cloze"
                             else "accuracy"})
    fig.add_vline(x=report.headline.accuracy, line_dash="dot",
                  annotation_text="all relations")
    fig.update_layout(height=120 + 28 * len(table))
    fig.show()
    display(Markdown(chapter.relation_accuracy_text(table)))
    display(chapter.relation_view(table))
else:
    display(Markdown("The dataset has one relation."))

# %% [markdown]
# ## Prompts kept for the mechanistic analyses

# %%
display(Markdown(report.filter_markdown()))
if len(report.dropped):
    display(shown(chapter.dropped_view(report.dropped), "dropped"))

# %% tags=["remove-cell"]
report.filtered_rows.to_csv(f"{run_dir}/{task_check.FILTERED_FILE}", index=False)
report.save(Results(run_dir, chapter.METHOD))

"""Notebook 07, attention patterns: the heads with the largest direct effect, on one example,
and how much of the last token's attention each puts on the subject."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from factcircuits.methods import attribution as A
from factcircuits.methods.attention import (
    EXAMPLE,
    N_HEADS,
    Patterns,
    head_patterns,
    last_token_attention,
)
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.positions import PromptPositions, prompt_positions
from factcircuits.models import LoadedModel
from factcircuits.results.headlines import Headline, number
from factcircuits.results.kinds import Table
from factcircuits.results.registry import HEADS, Finding, Method
from factcircuits.results.run import Run
from factcircuits.results.summary import Options, Summary, estimates_of

SHARE = "fraction of the last token's attention"


@dataclass
class AttentionHeadline(Headline):
    top_subject_head: str | None = number("among the top-DLA heads, the one attending most "
                                          "to the subject from the last token")
    top_subject_head_attention: float | None = number("its attention on the subject", SHARE)
    top_dla_head: str | None = number("the head with the largest mean |DLA|")
    top_dla_head_subject_attention: float | None = number("its attention on the subject",
                                                          SHARE)
    example: int | None = number("the prompt shown (index among those analysed)")


@dataclass(kw_only=True)
class AttentionSummary(Summary):
    top_heads: pd.DataFrame  # the heads with the largest mean |DLA|
    heads: list[tuple[int, int]]
    example: int  # the prompt shown
    tokens: list[str]
    patterns: Patterns
    positions: PromptPositions
    last: pd.DataFrame  # attention from the last token, with each key's token class
    subject_attention: pd.Series  # per (layer, head): attention from the last token on subject


def summarise(lm: LoadedModel, prepared: PreparedTask, *, options: Options
              ) -> AttentionSummary:
    """Attention patterns of the `n_heads` heads with the largest mean |DLA| on prompt
    `example` (clamped to the prompts), and how much of the last token's attention each puts
    on the subject."""
    att = A.attribute_heads(lm, prepared, batch_size=options.batch_size, progress=True)
    top = A.top_heads(att.heads, options.n_heads)
    heads = list(zip(top["layer"].astype(int), top["head"].astype(int)))
    ex = min(options.example, len(prepared.prompts) - 1)
    tokens, patterns = head_patterns(lm, prepared, heads, example=ex)
    pos = prompt_positions(lm.tokenizer, prepared.prompts[ex], prepared.rows["subject"][ex],
                           prepared.prompt_format, prepared.rows["prompt"][ex])
    last = last_token_attention(tokens, patterns)
    last["class"] = [pos.classes[k] for k in last["key"]]
    subj = (last[last["class"].str.startswith("subject")].groupby(["layer", "head"])
            ["attention"].sum())
    best = subj.idxmax()
    top_dla = subj.get((heads[0][0], heads[0][1]), 0.0)
    headline = AttentionHeadline(
        top_subject_head=f"L{best[0]}H{best[1]}", top_subject_head_attention=float(subj.max()),
        top_dla_head=f"L{heads[0][0]}H{heads[0][1]}",
        top_dla_head_subject_attention=float(top_dla), example=ex)
    tables = {"last_token_attention": last}
    return AttentionSummary(headline=headline, tables=tables,
                            estimates=estimates_of(METHOD, headline, tables), top_heads=top,
                            heads=heads, example=ex, tokens=tokens, patterns=patterns,
                            positions=pos, last=last, subject_attention=subj)


def attention_heads(run: Run) -> list[Finding]:
    """Its clause of the heads bullet: the top-DLA head's attention on the subject."""
    h = run.headline(METHOD)
    if h.top_dla_head_subject_attention is None:
        return []
    return [Finding(HEADS, f"on the example prompt {h.top_dla_head} puts "
                    f"{h.top_dla_head_subject_attention:.2f} of the last token's attention on "
                    "the subject", 30)]


METHOD = Method(
    notebook="07_attention_patterns", title="Attention patterns", short="attention",
    headline=AttentionHeadline,
    results={"last_token_attention": Table({"layer": "int", "head": "int", "key": "int",
                                            "token": "str", "attention": "float",
                                            "class": "str"},
                                           "attention from the last token, per key")},
    parameters=(N_HEADS, EXAMPLE),
    findings=attention_heads,
)

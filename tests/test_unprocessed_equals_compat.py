"""On the real SmolLM2 the unprocessed bridge (raw weights, no folded copy) gives every
method's tables as compatibility mode does, within 1e-4: DLA by layer, head and neuron, the
logit lens and its top tokens, activation patching, causal tracing, ablation, attention
knockout and attention patterns."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import ablation as AB
from factcircuits.methods import attention as AT
from factcircuits.methods import attribution as A
from factcircuits.methods import causal_tracing as CT
from factcircuits.methods import knockout as KO
from factcircuits.methods import logit_lens as LL
from factcircuits.methods import patching as P
from factcircuits.methods.evaluate import prepare
from factcircuits.models import load_model
from factcircuits.models.tokens import encode

TOL = 1e-4
pytestmark = [pytest.mark.embedded, pytest.mark.slow]


def tables(processing: str) -> dict[str, pd.Series | pd.DataFrame]:
    torch.set_num_threads(1)
    lm = load_model("default", processing=processing)
    assert lm.provenance["processing"] == processing
    prepared = prepare(lm, load_dataset("paris-cloze"))
    clean = encode(lm.tokenizer, prepared.prompts).lengths
    corrupt = encode(lm.tokenizer, prepared.corrupted_prompts).lengths
    prepared = prepared.subset((clean == corrupt).nonzero().flatten()[:2].tolist())
    dec = A.decompose(lm, prepared)
    d = A.answer_direction(lm, prepared, dec.pre_cap_logits)
    layers = A.layer_dla(dec, d)
    heads = A.head_dla(lm, dec, d)
    components = A.top_components(layers, heads, 3)
    lens = LL.logit_lens(lm, prepared, dec=dec)
    top = LL.top_tokens(lm, dec, k=5, answer_ids=[int(prepared.answer_ids[0])])
    _, patterns = AT.head_patterns(lm, prepared, [(3, 0), (20, 4)])
    trace = CT.trace(lm, prepared, kinds=("hidden", "mlp"), noise_samples=2, progress=False)
    return {
        "logits": pd.Series(dec.logits.flatten().numpy()),
        "layer_dla": layers["dla"], "head_dla": heads["dla"],
        "neuron_dla": A.neuron_dla(lm, prepared, 20, d)["dla"],
        "sum_check": A.sum_check(dec, d)["components_plus_bias"],
        "logit_lens": lens.table["value"],
        "top_tokens": top.drop(columns=["top_probs"]),
        "patch_resid_pre": pd.Series(P.patch(lm, prepared, "resid_pre",
                                             progress=False).values.flatten().numpy()),
        "patch_heads": pd.Series(P.patch_heads(lm, prepared,
                                               progress=False).values.flatten().numpy()),
        "trace_hidden": pd.Series(trace["hidden"].values.nan_to_num().flatten().numpy()),
        "trace_mlp": pd.Series(trace["mlp"].values.nan_to_num().flatten().numpy()),
        "noise_std": pd.Series([trace["hidden"].noise_std]),
        "ablation": AB.ablation_table(lm, prepared, components)["ablated"],
        "knockout": KO.knockout_sweep(lm, prepared)["metric"],
        "patterns": pd.Series(torch.cat([p.flatten() for p in patterns.values()]).numpy()),
    }


def test_every_methods_tables_match_compatibility_mode():
    unprocessed, compat = tables("none"), tables("compat")
    assert unprocessed.keys() == compat.keys()
    for name in unprocessed:
        mine, ref = unprocessed[name], compat[name]
        if isinstance(ref, pd.DataFrame):
            assert mine.equals(ref), name
        else:
            assert len(mine) == len(ref) and len(ref) > 0, name
            assert (mine - ref).abs().max() < TOL, name

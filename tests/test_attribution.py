"""DLA: components + biases sum to the metric; heads sum to their layer; per-head values match
an independent patch-out computation; yes/no directions."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import attribution as A
from factcircuits.methods.evaluate import prepare
from factcircuits.models import load_model
from factcircuits.models.forward import capture_last
from factcircuits.models.tiny import FAMILIES, tiny_model


@pytest.fixture(scope="module")
def tiny():
    return load_model("tiny")


def final_gain(lm):
    """The final RMSNorm's weight as transformers holds it (Llama: x / rms · w): 1 in
    compatibility mode, where it is folded into W_U."""
    if lm.provenance["processing"] == "compat":
        return torch.ones(lm.cfg.d_model)
    return lm.model.original_model.model.norm.weight.detach().float()


def _prepared(lm, name):
    return prepare(lm, load_dataset(name), "raw", None, None, drop_multi_token=True)


@pytest.fixture(scope="module")
def cloze(tiny):
    pr = _prepared(tiny, "paris-cloze")
    dec = A.decompose(tiny, pr, batch_size=4)
    return pr, dec, A.answer_direction(tiny, pr, dec.logits)


def test_cloze_dla_sums_to_metric(tiny, cloze):
    pr, dec, d = cloze
    check = A.sum_check(dec, d)
    # target is computed from the model's own logits, independently of the decomposition
    assert torch.allclose(d.target, pr.metric(dec.logits))
    assert check["error"].abs().max() < 1e-3
    assert (check["linearisation_offset"] == 0).all()


def test_heads_sum_to_layer_attention(tiny, cloze):
    _, dec, d = cloze
    heads = A.head_dla(tiny, dec, d)
    layers = A.layer_dla(dec, d)
    attn = layers[layers.component == "attn"].set_index(["prompt", "layer"])["dla"]
    summed = heads.groupby(["prompt", "layer"])["dla"].sum()
    assert (attn - summed.loc[attn.index]).abs().max() < 1e-4
    assert heads["head"].max() == tiny.model.cfg.n_heads - 1  # query heads, not KV heads (GQA)


@pytest.mark.parametrize("layer,head", [(2, 1), (1, 3)])
def test_head_dla_equals_patch_out(tiny, cloze, layer, head):
    """Zero the head's hook_z while every later component is frozen at its clean value and
    the final norm scale is frozen: the metric drop is exactly the head's DLA."""
    pr, dec, d = cloze
    model, L = tiny.model, tiny.model.cfg.n_layers
    batch = pr.clean_batch(tiny.tokenizer)
    later = [f"blocks.{ly}.hook_mlp_out" for ly in range(layer, L)]
    later += [f"blocks.{ly}.hook_attn_out" for ly in range(layer + 1, L)]
    store = {}
    with torch.no_grad():
        model.run_with_hooks(batch.tokens, attention_mask=batch.attention_mask,
                             fwd_hooks=[(n, lambda a, hook, n=n: store.__setitem__(n, a.clone()))
                                        for n in later])

    def zero_head(z, hook):
        z = z.clone()
        z[:, :, head] = 0
        return z

    def extra(last):
        return [(f"blocks.{layer}.attn.hook_z", zero_head)] + [
            (n, lambda a, hook, n=n: store[n]) for n in later]

    values, _ = capture_last(model, batch, [f"blocks.{L - 1}.hook_resid_post"], batch_size=64,
                             extra_hooks=extra)
    resid = values[f"blocks.{L - 1}.hook_resid_post"]
    logits = (resid / dec.scale) * final_gain(tiny) @ model.W_U.detach().float() \
        + model.b_U.detach().float()
    drop = pr.metric(dec.logits) - pr.metric(logits)
    heads = A.head_dla(tiny, dec, d)
    dla = heads[(heads["layer"] == layer) & (heads["head"] == head)].sort_values("prompt")["dla"]
    assert torch.allclose(drop, torch.tensor(dla.to_numpy()), atol=1e-4)


def test_yesno_directions(tiny):
    pr = _prepared(tiny, "paris-yesno")
    dec = A.decompose(tiny, pr, heads=False)
    exact = A.answer_direction(tiny, pr, dec.logits, "logit_diff_sum")
    assert A.sum_check(dec, exact)["error"].abs().max() < 1e-3
    lin = A.answer_direction(tiny, pr, dec.logits, "log_odds")
    check = A.sum_check(dec, lin)
    assert check["error"].abs().max() < 1e-3  # with the linearisation offset added back
    # the log-odds direction is its gradient: compare with autograd at the final logits
    logits = dec.logits.clone().requires_grad_(True)
    pr.metric(logits).sum().backward()
    grad_dir = logits.grad @ (final_gain(tiny)[:, None] * tiny.model.W_U.detach().float()).T
    assert torch.allclose(grad_dir, lin.vectors, atol=1e-5)


def test_neuron_dla_sums_to_mlp(tiny, cloze):
    pr, dec, d = cloze
    neurons = A.neuron_dla(tiny, pr, 1, d)
    layers = A.layer_dla(dec, d)
    mlp = layers[(layers.component == "mlp") & (layers.layer == 1)].set_index("prompt")["dla"]
    summed = neurons.groupby("prompt")["dla"].sum()
    assert (mlp - summed).abs().max() < 1e-4


@pytest.mark.parametrize("cap,noted", [(None, False), (-1.0, False), (0.0, False),
                                       (30.0, True)])
def test_soft_cap_note_only_for_a_positive_cap(tiny, cap, noted):
    """Gemma-2 style cfg.output_logits_soft_cap > 0 gets the note (naming the cap); a missing,
    negative or zero cap (TransformerLens's "none") gets none."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(**{k: v for k, v in vars(tiny.model.cfg).items()
                             if k != "output_logits_soft_cap"})
    if cap is not None:
        cfg.output_logits_soft_cap = cap
    note = A.soft_cap_note(SimpleNamespace(model=SimpleNamespace(cfg=cfg)))
    assert bool(note) == noted
    if noted:
        assert "cap = 30" in note


@pytest.mark.embedded
def test_embedded_cloze_dla_sums():
    lm = load_model("default")
    pr = _prepared(lm, "paris-cloze").subset([0, 1, 2, 3])
    dec = A.decompose(lm, pr)
    d = A.answer_direction(lm, pr, dec.logits)
    assert A.sum_check(dec, d)["error"].abs().max() < 1e-3
    heads = A.head_dla(lm, dec, d)
    layers = A.layer_dla(dec, d)
    attn = layers[layers.component == "attn"].set_index(["prompt", "layer"])["dla"]
    summed = heads.groupby(["prompt", "layer"])["dla"].sum().loc[attn.index]
    assert (attn - summed).abs().max() < 1e-3


# --------------------------------------------------------------------------- DLA by source
@pytest.mark.parametrize("family,processing", [(f, "none") for f in FAMILIES]
                         + [("llama", "compat"), ("gemma2", "compat")])
def test_source_parts_sum_to_the_head_dla(family, processing):
    """Σ over sources of A[last, s] · (v_s W_O) · u is the head's DLA on every family:
    grouped-query attention (v per key/value head), Gemma 2/3's post-attention norm (scale
    frozen), Qwen 2's value biases, Gemma 2's soft-caps and sliding windows."""
    lm = tiny_model(family=family, seed=3, processing=processing)
    pr = prepare(lm, load_dataset("paris-cloze")).subset(range(6))
    dec = A.decompose(lm, pr, batch_size=4)
    d = A.answer_direction(lm, pr, dec.pre_cap_logits)
    heads = A.head_dla(lm, dec, d)
    sources = A.head_source_dla(lm, pr, dec, d, batch_size=4)  # sub-batches of two widths
    assert set(sources["source"]) == set(A.SOURCES)
    summed = sources.groupby(["prompt", "layer", "head"])["dla"].sum()
    own = heads[heads["head"] >= 0].set_index(["prompt", "layer", "head"])["dla"]
    assert (summed.loc[own.index] - own).abs().max() < 1e-5
    assert own.abs().max() > 0.1  # real contributions, not zeros summing to zeros


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_subject_part_is_the_head_reading_only_the_subject(family):
    """Independent check of one source: rerun the model with the values of every non-subject
    position zeroed in one layer (the attention pattern does not depend on the values), take
    that layer's hook_z at the last token and project it as `head_dla` does: it is the
    subject part."""
    from factcircuits.methods.positions import position_mask, task_positions

    lm = tiny_model(family=family, seed=3)
    pr = prepare(lm, load_dataset("paris-cloze")).subset(range(5))
    dec = A.decompose(lm, pr, batch_size=8)
    d = A.answer_direction(lm, pr, dec.pre_cap_logits)
    sources = A.head_source_dla(lm, pr, dec, d, batch_size=8)
    batch = pr.clean_batch(lm.tokenizer)
    subject = position_mask(task_positions(pr, lm.tokenizer), "subject", batch.tokens.shape[1])
    layer = 1

    def only_subject(v, hook):
        return v * subject[:, : v.shape[1], None, None].to(v.dtype)

    z_name = f"blocks.{layer}.attn.hook_z"
    values, _ = capture_last(lm.model, batch, [z_name], batch_size=8,
                             extra_hooks=lambda last: [(f"blocks.{layer}.attn.hook_v",
                                                        only_subject)])
    out = A.head_outputs(lm, values[z_name], layer)
    if dec.attn_post_scale is not None:
        out = out * dec.attn_post_gain[layer] / dec.attn_post_scale[:, layer, None, None]
    expected = torch.einsum("nhd,nd->nh", dec.normalise(out), d.vectors)
    got = (sources[(sources["layer"] == layer) & (sources["source"] == "subject")]
           .pivot(index="prompt", columns="head", values="dla").to_numpy())
    assert torch.allclose(torch.tensor(got, dtype=torch.float32), expected, atol=1e-5)
    assert expected.abs().max() > 1e-3


def test_source_split_shares_add_up(tiny, cloze):
    pr, dec, d = cloze
    sources = A.head_source_dla(tiny, pr, dec, d)
    top = A.top_heads(A.head_dla(tiny, dec, d), 3)
    split = A.source_split(sources, top)
    assert list(zip(split["layer"], split["head"])) == list(zip(top["layer"], top["head"]))
    assert split["dla"].to_numpy() == pytest.approx(top["dla"].to_numpy(), abs=1e-5)
    shares = split[[f"{s}_share" for s in A.SOURCES]].sum(axis=1)
    assert shares.to_numpy() == pytest.approx(1.0)


def _sources(parts: dict[str, list[float]]) -> pd.DataFrame:
    """A head_source_dla table of one head (L2H1): per source, one value per prompt."""
    return pd.DataFrame([{"prompt": i, "layer": 2, "head": 1, "source": s, "dla": v}
                         for s, values in parts.items() for i, v in enumerate(values)])


@pytest.mark.parametrize("parts,moves", [
    # 0.8 of a positive DLA through the subject in every prompt: moves it
    ({"subject": [0.8, 1.6, 0.4, 1.2], "relation": [0.1, 0.2, 0.05, 0.15],
      "last": [0.1, 0.2, 0.05, 0.15], "other": [0.0] * 4}, True),
    # the same DLA mostly through the relation tokens: does not
    ({"subject": [0.1, 0.2, 0.05, 0.15], "relation": [0.8, 1.6, 0.4, 1.2],
      "last": [0.1, 0.2, 0.05, 0.15], "other": [0.0] * 4}, False),
    # mostly through the subject but pushing against the answer: does not
    ({"subject": [-0.8, -1.6, -0.4, -1.2], "relation": [-0.1, -0.2, -0.05, -0.15],
      "last": [-0.1, -0.2, -0.05, -0.15], "other": [0.0] * 4}, False),
])
def test_top_head_source_shares_and_the_moves_verdict(parts, moves):
    from factcircuits.chapters import attribution as AD

    fields = AD.top_head_source_fields(_sources(parts), 2, 1, seed=0)
    total = sum(sum(v) for v in parts.values())
    for source in A.SOURCES:  # ratios of means, by hand
        assert fields[f"top_head_{source}_share"] == pytest.approx(sum(parts[source]) / total)
    assert fields["top_head_moves_from_subject"] is moves


def _attribution_run(tmp_path, **fields):
    import json

    from factcircuits.chapters import attribution as AD
    from factcircuits.results.run import Run

    folder = tmp_path / "m__d__1"
    folder.mkdir()
    record = {"run_id": "m__d__1", "status": "ok",
              "parameters": {"model": "default", "dataset": "toy", "task": "cloze", "seed": 0},
              "notebooks": [], "model": {"resolved_name": "org/toy", "n_layers": 11},
              "headline": {AD.METHOD.notebook: AD.AttributionHeadline(
                  top_head="L7H2", top_head_dla=1.25, top_head_dla_ci=[0.9, 1.6],
                  **fields).to_json()}}
    (folder / "run.json").write_text(json.dumps(record))
    return Run.load(folder)


@pytest.mark.parametrize("moves,said", [
    (True, "L7H2 **moves the attribute from the subject** to the last token"),
    (False, "this run does not show L7H2 moving the attribute from the subject"),
])
def test_findings_say_moves_only_when_most_comes_through_the_subject(tmp_path, moves, said):
    from factcircuits.chapters import attribution as AD

    shares = {"subject": (0.7, [0.6, 0.8]), "relation": (0.2, [0.1, 0.3]),
              "last": (0.1, [0.0, 0.2]), "other": (0.0, [0.0, 0.0])}
    fields = {f"top_head_{s}_share{suffix}": v[i] for s, v in shares.items()
              for i, suffix in enumerate(("", "_ci"))}
    run = _attribution_run(tmp_path, top_head_moves_from_subject=moves, **fields)
    [finding] = AD.attribution_findings(run)
    assert ("of L7H2's direct effect on the answer (DLA 1.25 (95% CI 0.90 to 1.60)), 70% (95% "
            "CI 60% to 80%) through the subject tokens, 20% (95% CI 10% to 30%) through the "
            "relation tokens") in finding.text
    assert said in finding.text and "Direct effect" in finding.text


def test_no_source_finding_without_the_split(tmp_path):
    from factcircuits.chapters import attribution as AD

    assert AD.attribution_findings(_attribution_run(tmp_path)) == []

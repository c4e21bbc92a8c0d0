"""Resample ablation: a component's output replaced by its output on a counterfactual prompt
(equal token length, different answer), the metric averaged over the donors, equals the same
replacement done by hand, one prompt and one donor at a time."""

from __future__ import annotations

import math

import pytest
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import ablation as AB
from factcircuits.methods.counterfactual_sets import with_counterfactuals
from factcircuits.methods.evaluate import prepare

pytestmark = pytest.mark.usefixtures("one_thread")

COMPONENTS = [("mlp", 1), ("head", 2, 1), ("attn", 0)]


def _hand_ablated(lm, prompt: str, donor: str, components, answer: int, cf: int) -> float:
    """The clean prompt run alone with each component's output at every position set to the
    donor's (a full-vector or a one-head replacement), logit(answer) − logit(cf) at the end."""
    model, tok = lm.model, lm.tokenizer
    clean, other = tok(prompt, return_tensors="pt")["input_ids"], tok(donor, return_tensors=
                                                                        "pt")["input_ids"]
    assert clean.shape == other.shape
    _, cache = model.run_with_cache(other)
    hooks = []
    for comp in components:
        name = AB.component_hook(comp)
        head = comp[2] if comp[0] == "head" else None

        def put(act, hook, name=name, head=head):
            act = act.clone()
            if head is None:
                act[:] = cache[name]
            else:
                act[:, :, head] = cache[name][:, :, head]
            return act
        hooks.append((name, put))
    with torch.inference_mode():
        logits = model.run_with_hooks(clean, fwd_hooks=hooks)[0, -1]
    return float(logits[answer] - logits[cf])


def _donors(lm, prepared, i: int) -> list[str]:
    """Prompt i's donors, chosen by hand: its drawn counterfactual prompts with the clean
    prompt's token count whose answer's first token differs from the answer's."""
    tok = lm.tokenizer
    draws = prepared.counterfactual_draws
    mine = draws[draws["prompt_id"] == i]
    n = len(tok(prepared.prompts[i])["input_ids"])
    return [p for p, a in zip(mine["corrupted_prompt"], mine["corrupted_answer"])
            if len(tok(p)["input_ids"]) == n
            and tok.encode(a, add_special_tokens=False)[0] != int(prepared.answer_ids[i])]


@pytest.fixture(scope="module", params=["tiny", "tiny-gemma", "tiny-gemma2", "tiny-gemma3",
                                        "tiny-qwen2"])
def family_lm(request):
    from factcircuits.models import load_model

    return load_model(request.param)


def test_resample_ablation_equals_hand_patching(family_lm):
    """On every tiny family (Gemma's post-norms, Qwen's grouped-query heads)."""
    tiny_lm = family_lm
    prepared = with_counterfactuals(tiny_lm, prepare(tiny_lm, load_dataset("paris-cloze")), 3,
                                    seed=0)
    table = AB.ablation_table(tiny_lm, prepared, COMPONENTS, modes=("resample",),
                              batch_size=3)
    assert set(table["mode"]) == {"resample"}
    checked = with_two = 0
    for i in range(len(prepared.prompts)):
        donors = _donors(tiny_lm, prepared, i)
        with_two += len(donors) >= 2
        for label, group in [("mlp L1", [COMPONENTS[0]]), ("L2H1", [COMPONENTS[1]]),
                             ("all 3 together", COMPONENTS)]:
            row = table[(table["prompt"] == i) & (table["component"] == label)].iloc[0]
            if not donors:  # nothing of equal length to resample from
                assert math.isnan(row["ablated"])
                continue
            hand = [_hand_ablated(tiny_lm, prepared.prompts[i], d, group,
                                  int(prepared.answer_ids[i]), int(prepared.cf_ids[i]))
                    for d in donors]
            assert row["ablated"] == pytest.approx(sum(hand) / len(hand), abs=1e-4)
            assert row["drop"] == pytest.approx(row["clean"] - row["ablated"], abs=1e-6)
            checked += 1
    # the check covers prompts with several donors (an average) and a real change
    assert checked >= 6 and with_two >= 1
    resampled = table[table["component"] == "all 3 together"]["drop"].dropna()
    assert resampled.abs().max() > 1e-2


def test_resampling_a_prompt_from_itself_changes_nothing(tiny_lm):
    """A donor identical to the prompt hands back the prompt's own activations."""
    prepared = prepare(tiny_lm, load_dataset("paris-cloze"))
    twin = prepared.subset(list(range(len(prepared.prompts))))
    twin.corrupted_prompts = list(twin.prompts)
    # without drawn counterfactuals the donor is the corrupted prompt: here the prompt itself
    ablated = AB.resample_ablated(tiny_lm, twin, [COMPONENTS])[0]
    table = AB.ablation_table(tiny_lm, twin, COMPONENTS[:1], modes=("zero",), joint=False)
    assert torch.allclose(ablated, torch.tensor(table["clean"].to_numpy()).float(), atol=1e-4)


def test_the_chapters_headline_ablation_is_resample(tiny_lm, tmp_path):
    import json

    from factcircuits.chapters import ablation_knockout as AK
    from factcircuits.results.run import Run

    prepared = with_counterfactuals(tiny_lm, prepare(tiny_lm, load_dataset("paris-cloze")), 3,
                                    seed=0)
    abl = AK.ablate_top_components(tiny_lm, prepared, n_components=3)
    h = abl.headline
    singles = abl.summary[~abl.summary["component"].str.startswith("all")]
    resampled = singles[singles["mode"] == "resample"]
    assert h["ablation_biggest_mode"] == "resample"
    assert h["ablation_biggest_drop"] == pytest.approx(resampled["drop"].max())
    assert h["ablation_biggest_component"] == resampled.loc[resampled["drop"].idxmax(),
                                                            "component"]
    zero = singles[singles["mode"] == "zero"]
    assert h["ablation_zero_biggest_drop"] == pytest.approx(zero["drop"].max())
    per_prompt = abl.table[(abl.table["mode"] == "resample")].groupby("prompt")["ablated"]
    assert h["ablation_resample_prompts"] == int(per_prompt.apply(
        lambda s: s.notna().all()).sum()) >= 1
    folder = tmp_path / "m__d__1"
    folder.mkdir()
    headline = AK.AblationKnockoutHeadline(**h)
    (folder / "run.json").write_text(json.dumps({
        "run_id": "m__d__1", "status": "ok", "parameters": {"model": "tiny", "seed": 0},
        "notebooks": [], "model": {"n_layers": 3},
        "headline": {AK.METHOD.notebook: headline.to_json()}}))
    [finding] = AK.ablation_findings(Run.load(folder))
    assert f"ablating **{h['ablation_biggest_component']}** alone" in finding.text
    assert "by resampling" in finding.text and "Off the model's distribution" in finding.text

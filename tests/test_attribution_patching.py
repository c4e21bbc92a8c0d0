"""Attribution patching (AtP / AtP*) against independent computations on the tiny model:
the first-order estimate is the directional derivative of the metric (autograd through plain
TransformerLens hooks), clean-into-clean estimates vanish, the QK fix recomputes the attention
pattern that a really patched run has and agrees with AtP to first order, and the exact
patching of proposed cells equals the fast patching engine."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import atp_checks as AC
from factcircuits.methods import attribution_patching as AP
from factcircuits.methods import patching as P
from factcircuits.methods.engine import Resumable
from factcircuits.methods.evaluate import prepare
from factcircuits.methods.hooks import hook_name
from factcircuits.models.tokens import encode

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread


@pytest.fixture(scope="module")
def pairs(tiny_lm):
    prepared = prepare(tiny_lm, load_dataset("paris-cloze"))
    clean = encode(tiny_lm.tokenizer, prepared.prompts).lengths
    corrupt = encode(tiny_lm.tokenizer, prepared.corrupted_prompts).lengths
    return prepared.subset(clean == corrupt)


@pytest.fixture(scope="module")
def scanned(tiny_lm, pairs):
    return AP.scan(tiny_lm, pairs, progress=False)


def _interpolated_metric_derivative(lm, prepared, i, component, layer, pos, head=None):
    """d/dα of the metric of prompt i's corrupted run with one activation moved to
    corrupted + α (clean − corrupted), at α = 0, by autograd through a plain hook."""
    model = lm.model
    name = hook_name(layer, component)
    clean = encode(lm.tokenizer, [prepared.prompts[i]]).tokens
    corrupt = encode(lm.tokenizer, [prepared.corrupted_prompts[i]]).tokens
    _, cache = model.run_with_cache(clean, names_filter=lambda n: n == name,
                                    return_cache_object=False)
    alpha = torch.zeros((), requires_grad=True)

    def move(act, hook):
        act = act.clone()
        index = (0, pos) if head is None else (0, pos, head)
        act[index] = act[index] + alpha * (cache[name][index] - act[index].detach())
        return act

    with model.hooks(fwd_hooks=[(name, move)]):
        logits = model(corrupt)[:, -1]
    value = prepared.metric(logits, torch.tensor([i]))[0]
    return float(torch.autograd.grad(value, alpha)[0])


@pytest.mark.parametrize("component", ["resid_pre", "attn_out", "mlp_out", "z"])
def test_estimate_is_the_directional_derivative(tiny_lm, pairs, scanned, component):
    result = scanned[component]
    n_layers = tiny_lm.cfg.n_layers
    for i in range(len(pairs.prompts)):
        n, first = int(result.lengths[i]), int(result.first_difference[i])
        for layer, pos in ((0, first), (n_layers - 1, n - 1), (1, (first + n) // 2)):
            head = (layer + pos) % tiny_lm.cfg.n_heads if component == "z" else None
            expected = _interpolated_metric_derivative(tiny_lm, pairs, i, component, layer,
                                                       pos, head)
            index = (layer, pos, i) if head is None else (layer, pos, head, i)
            got = float(result.atp[index])
            assert got == pytest.approx(expected, rel=1e-3, abs=1e-4), (i, layer, pos, head)


def test_clean_into_clean_estimates_vanish(tiny_lm, pairs):
    twin = pairs.subset(list(range(len(pairs.prompts))))
    twin.corrupted_prompts = list(twin.prompts)
    for result in AP.scan(tiny_lm, twin, progress=False).values():
        assert result.atp.abs().max() == 0 and result.atp_star.abs().max() == 0
        assert torch.equal(result.clean, result.corrupted)


def test_identical_prefix_and_padding_cells_are_zero(scanned):
    for result in scanned.values():
        assert result.atp[~result.valid()].abs().max() == 0
        assert result.atp_star[~result.valid()].abs().max() == 0
        assert result.atp[result.valid()].abs().max() > 0


def test_baselines_match_exact_patching(tiny_lm, pairs, scanned):
    exact = P.patch(tiny_lm, pairs, "resid_pre", progress=False)
    result = scanned["resid_pre"]
    assert torch.allclose(result.clean, exact.clean, atol=1e-4)
    assert torch.allclose(result.corrupted, exact.corrupted, atol=1e-4)
    assert result.patched().shape == exact.values.shape
    # cells patching provably cannot change: the exact effect is 0 there, and so is AtP's
    outside = ~result.valid()
    assert (exact.values - exact.corrupted)[outside].abs().max() == 0
    assert result.estimate()[outside].abs().max() == 0


def test_qk_fix_pattern_is_the_patched_runs_pattern(tiny_lm, pairs):
    """The exact pattern AtP* uses for layer r, position p moved to its clean value, equals
    the pattern a real patched forward (plain hooks from the token embedding on) computes."""
    model = tiny_lm.model
    i, layer = 0, 1
    clean = encode(tiny_lm.tokenizer, [pairs.prompts[i]]).tokens
    corrupt = encode(tiny_lm.tokenizer, [pairs.corrupted_prompts[i]]).tokens
    name = hook_name(layer, "resid_pre")
    _, clean_cache = model.run_with_cache(clean, return_cache_object=False,
                                          names_filter=lambda n: n == name)
    _, corrupt_cache = model.run_with_cache(corrupt, return_cache_object=False)
    pos = corrupt.shape[1] - 2

    def patch_pos(act, hook):
        act[0, pos] = clean_cache[name][0, pos]
        return act

    kept = {}

    def keep(act, hook):
        kept["pattern"] = act.detach().clone()
        return act

    with model.hooks(fwd_hooks=[(name, patch_pos), (hook_name(layer, "pattern"), keep)]):
        model(corrupt)
    moved = corrupt_cache[name].clone()
    moved[0, pos] = clean_cache[name][0, pos]
    runner = Resumable(model)
    got = AP._pattern_from_layer(runner, model, layer, moved)
    assert (got - kept["pattern"]).abs().max() < 1e-5
    base = AP._pattern_from_layer(runner, model, layer, corrupt_cache[name])
    assert (base - corrupt_cache[hook_name(layer, "pattern")]).abs().max() < 1e-5
    assert (got - base).abs().max() > 1e-3  # the patch does move the pattern


def test_qk_correction_is_second_order(tiny_lm, pairs):
    """AtP* − AtP = g·(exact − linearised pattern change): it shrinks like ε² when the patched
    difference is scaled by ε, so the QK fix only changes what the linearisation gets wrong."""
    model = tiny_lm.model
    corrupt = encode(tiny_lm.tokenizer, [pairs.corrupted_prompts[0]]).tokens
    clean = encode(tiny_lm.tokenizer, [pairs.prompts[0]]).tokens
    layer = 1
    resid, pattern = (hook_name(layer, "resid_pre"),
                      hook_name(layer, "pattern"))
    _, clean_cache = model.run_with_cache(clean, return_cache_object=False)
    acts = {}

    def keeper(name):
        def keep(act, hook):
            acts[name] = act
            return act
        return keep

    with model.hooks(fwd_hooks=[(resid, keeper(resid)), (pattern, keeper(pattern))]):
        value = pairs.metric(model(corrupt)[:, -1], torch.tensor([0]))[0]
    (grad_pattern,) = torch.autograd.grad(value, [acts[pattern]], retain_graph=True)
    (vjp,) = torch.autograd.grad(acts[pattern], [acts[resid]], grad_pattern)
    delta = clean_cache[resid] - acts[resid].detach()
    runner = Resumable(model)
    sizes = {}
    with torch.no_grad(), AP._PatternProbe(runner, model) as probe:
        for eps in (1e-1, 1e-2):
            (corr,) = AP._qk_corrections(probe, layer, acts[resid].detach(), [eps * delta],
                                         grad_pattern, vjp)
            sizes[eps] = float(corr.abs().max())
    assert sizes[1e-1] > 1e-6
    assert sizes[1e-2] < 0.05 * sizes[1e-1]  # quadratic: 0.01×; a linear error would be 0.1×


def test_patch_cells_equals_the_patching_engine(tiny_lm, pairs, scanned):
    for component in ("resid_pre", "mlp_out"):
        cells = AC.top_cells(scanned[component], k=4)
        exact = P.patch(tiny_lm, pairs, component, progress=False)
        expected = [float(exact.values[c.layer, c.pos, c.prompt_id]
                          - exact.corrupted[c.prompt_id]) for c in cells.itertuples()]
        got = AC.patch_cells(tiny_lm, pairs, component, cells)
        assert got.to_numpy() == pytest.approx(expected, abs=1e-4)
    cells = AC.top_cells(scanned["z"], k=4)
    exact = P.patch_heads_by_pos(tiny_lm, pairs, progress=False)
    expected = [float(exact.values[c.layer, c.pos, c.head, c.prompt_id]
                      - exact.corrupted[c.prompt_id]) for c in cells.itertuples()]
    assert AC.patch_cells(tiny_lm, pairs, "z", cells).to_numpy() == pytest.approx(
        expected, abs=1e-4)


def test_top_cells_are_the_largest_estimates(scanned):
    result = scanned["resid_pre"]
    cells = AC.top_cells(result, k=3)
    for i, part in cells.groupby("prompt_id"):
        est = result.atp[..., i][result.valid()[..., i]].abs()
        assert sorted(part["estimate"].abs(), reverse=True) == pytest.approx(
            est.topk(3).values.tolist())
        assert list(part["rank"]) == [0, 1, 2]


def test_spearman_and_agreement_by_hand():
    assert AC.spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([10.0, 20, 30, 40])) == 1
    assert AC.spearman(torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1])) == -1
    # ranks (1,2,3,4) vs (1,3,2,4): 1 − 6·2/(4·15) = 0.8
    assert AC.spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 3, 2, 4])) == \
        pytest.approx(0.8)
    # one prompt, 1 layer × 4 positions; exact top-2 = positions 3, 0; scan top-2 = 3, 1
    exact = P.PatchResult("resid_pre", torch.tensor([[[-3.0], [0.5], [1.0], [4.0]]]) + 1,
                          torch.tensor([2.0]), torch.tensor([1.0]), "pos", torch.tensor([4]))
    est = torch.tensor([[[-0.5], [2.0], [1.0], [5.0]]])
    scan = AP.ScanResult("resid_pre", est, est, exact.clean, exact.corrupted,
                         torch.tensor([4]), torch.tensor([0]))
    found = AC.agreement(scan, exact, k_exact=2, k_scan=2)
    assert found["recall_top2_in_top2"] == 0.5
    assert found["spearman"] == pytest.approx(AC.spearman(est.flatten(), exact.values.flatten()))
    assert found["n_cells"] == 4
    # exact |effects| 4, 0.5, 0, 3: cells within 10% of the 2nd largest (3) are 4 and 3
    assert found["exact_near_top2"] == 2


def test_agreement_with_exact_patching_on_tiny(tiny_lm, pairs, scanned, capsys):
    """Rank correlation of the scan with exact patching on the tiny random model (reported;
    a random 3-layer model is far from linear, so the bar is only "clearly positive")."""
    rows = []
    for component in ("resid_pre", "attn_out", "mlp_out"):
        exact = P.patch(tiny_lm, pairs, component, progress=False)
        for star in (False, True):
            rows.append(AC.agreement(scanned[component], exact, star=star))
    rows.append(AC.agreement(scanned["z"], P.patch_heads(tiny_lm, pairs, progress=False)))
    table = pd.DataFrame(rows)
    with capsys.disabled():
        print("\n" + table.to_string(index=False))
    assert (table["spearman"] > 0.5).all()
    assert not math.isnan(table["recall_top5_in_top10"].iloc[0])

"""Patched runs unembed only the token ids the metric reads (`Resumable.unembed(hidden, vocab)`):
those logits are bitwise the full unembedding's (of a batch of several rows), the others NaN;
so patching with the task's metric gives the numbers of patching with the full unembedding
(to rounding where a forward has fewer rows than a blocked product), on every tiny family
(Gemma 2's soft cap included)."""

from __future__ import annotations

import pytest
import torch

from factcircuits.data.datasets import load_dataset
from factcircuits.methods import patching as P
from factcircuits.methods.evaluate import prepare
from factcircuits.methods.resume import COLUMN_ROWS, COLUMN_WIDTH, Resumable
from factcircuits.models import load_model

FAMILIES = ["tiny", "tiny-gemma", "tiny-gemma2", "tiny-gemma3", "tiny-qwen2"]

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one thread


@pytest.mark.parametrize("spec", FAMILIES)
def test_unembedded_columns_are_the_full_unembedding_bitwise(spec):
    lm = load_model(spec)
    runner = Resumable(lm.model)
    gen = torch.Generator().manual_seed(3)
    hidden = 3 * torch.randn(40, lm.cfg.d_model, generator=gen)
    vocab = torch.tensor([7, 2, 101, 300])
    full = runner.unembed(hidden)  # a batch of 40 rows: the blocked product
    assert runner.columns_exact()  # this machine's BLAS: checked once per model
    for n_rows in (1, 3, COLUMN_ROWS, 40):
        part = runner.unembed(hidden[:n_rows], vocab)
        assert torch.equal(part[:, vocab], full[:n_rows, vocab]), n_rows
        computed = ~part.isnan()  # the ids asked for, padded to a blocked product's width
        assert torch.equal(part[computed], full[:n_rows][computed])
        # the other columns: NaN, never a wrong number
        assert int(computed[0].sum()) == COLUMN_WIDTH < lm.cfg.d_vocab


@pytest.mark.parametrize("spec", ["tiny", "tiny-gemma2"])
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_patching_with_the_metric_columns_equals_the_full_unembedding(spec, direction):
    lm = load_model(spec)
    prepared = prepare(lm, load_dataset("paris-cloze"))
    ok = [i for i, p in enumerate(prepared.pair_problems(lm.tokenizer)) if not p][:4]
    prepared = prepared.subset(ok)

    def same_metric(logits, index):  # not the task's own: patch unembeds every column
        return prepared.metric(logits, index)

    for max_patches in (1, "auto"):
        kw = dict(direction=direction, max_patches=max_patches, progress=False)
        columns = P.patch(lm, prepared, "resid_pre", **kw)
        full = P.patch(lm, prepared, "resid_pre", metric=same_metric, **kw)
        assert not columns.values.isnan().any()
        # the same bits where a forward has >= 4 rows; a forward of fewer rows (tiny models
        # stack few copies) unembeds in the full path through a one-row product, which sums in
        # another order
        assert (columns.values - full.values).abs().max() <= 1e-5, max_patches
        assert torch.equal(columns.clean, full.clean)

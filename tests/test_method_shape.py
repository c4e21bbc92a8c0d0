"""One method shape: every chapter module exposes `summarise(lm, prepared, *, options)`, whose
Summary holds its headline, the tables its notebook saves (each declared in its registry entry)
and its Estimates as the write-up reads them from the saved run; `Options` checks the values
against the parameters' declarations."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import factcircuits.chapters as chapters
from factcircuits.data.datasets import load_dataset
from factcircuits.errors import UserError
from factcircuits.methods.evaluate import prepare
from factcircuits.results.estimates import Estimate
from factcircuits.results.registry import builtin_methods
from factcircuits.results.run import Run
from factcircuits.results.store import Results
from factcircuits.results.summary import Options, Summary

pytestmark = pytest.mark.usefixtures("one_thread")

MODULES = [importlib.import_module(f"{chapters.__name__}.{m.name}")
           for m in pkgutil.iter_modules(chapters.__path__)]
# every code path at its smallest cost on the tiny model
SMALL = {"noise_samples": 1, "ig_steps": 2, "scan_top_k": 2, "n_counterfactuals": 2,
         "stability_resamples": 5, "min_pairs": 2, "n_components": 2, "batch_size": 4}


def test_every_registered_chapter_is_a_module_with_summarise():
    assert {m.METHOD.notebook for m in MODULES} == {m.notebook for m in builtin_methods()}
    for module in MODULES:
        signature = inspect.signature(module.summarise)
        assert list(signature.parameters) == ["lm", "prepared", "options"], module.__name__
        assert signature.parameters["options"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__.rsplit(".", 1)[-1])
def test_summarise_returns_the_headline_declared_tables_and_estimates(module, tiny_lm, tmp_path):
    method = module.METHOD
    prepared = prepare(tiny_lm, load_dataset("paris-cloze"), n_prompts=8,
                       drop_multi_token=True)
    values = {k: v for k, v in SMALL.items()
              if k in {p.name for p in method.parameters} or k == "batch_size"}
    found = module.summarise(tiny_lm, prepared,
                             options=Options(method, values, run_dir=str(tmp_path)))
    assert isinstance(found, Summary)
    assert type(found.headline) is method.headline
    assert found.tables and set(found.tables) <= set(method.results)
    assert all(isinstance(e, Estimate) for e in found.estimates)
    found.save(Results(tmp_path, method))  # every table valid against its declaration
    # the estimates are the ones the write-up reads back from the saved run (its tables as
    # CSV: floats to CSV precision)
    back = method.estimates_of(Run.in_progress(tmp_path))
    assert [_rounded(e) for e in found.estimates] == [_rounded(e) for e in back]


def _rounded(estimate: Estimate) -> dict:
    return {k: (float(f"{v:.6g}") if isinstance(v, float) else
                [float(f"{x:.6g}") for x in v] if isinstance(v, list) else v)
            for k, v in estimate.to_json().items()}


def test_options_take_declared_defaults_and_refuse_what_is_not_declared():
    from factcircuits.chapters import causal_tracing

    options = Options(causal_tracing.METHOD, {"noise_samples": 2, "seed": 7})
    assert options.noise_samples == 2 and options["seed"] == 7
    assert options.trace_window == "auto" and options.batch_size == 16  # declared defaults
    with pytest.raises(UserError, match="noise_samples=0"):
        Options(causal_tracing.METHOD, noise_samples=0)
    with pytest.raises(UserError, match="top_k not among its parameters"):
        Options(causal_tracing.METHOD, top_k=3)  # the task check's, not tracing's
    taken = Options.of(causal_tracing.METHOD, {"noise_samples": 3, "session": object()})
    assert taken.noise_samples == 3 and "session" not in taken

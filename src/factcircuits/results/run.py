"""A run as the write-up reads it, read once: `Run.load(folder)`.

`run.json` is the run's single record (parameters, provenance, the model, each method's
headline); result tables, graphs and arrays are read from `results/` when first asked for and
kept. Findings, comparison, provenance, versions and the preview all take `Run`s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from factcircuits.results.estimates import Estimate
from factcircuits.results.headlines import Headline
from factcircuits.results.registry import Method, methods
from factcircuits.results.store import HEADLINE_DIR, result_folder

# Position of a layer in the stack: 0 = first layer, 1 = last. Bands name thirds of the depth.
DEPTH_BANDS = ((1 / 3, "early"), (2 / 3, "middle"), (float("inf"), "late"))
RUN_JSON = "run.json"


def relative_depth(layer: float | None, n_layers: int | None) -> float | None:
    """layer / (n_layers − 1): comparable across models of different depth."""
    if layer is None or not n_layers or n_layers < 2:
        return None
    return float(layer) / (n_layers - 1)


def depth_band(depth: float | None) -> str | None:
    if depth is None:
        return None
    return next(name for limit, name in DEPTH_BANDS if depth < limit)


@dataclass
class Run:
    run_id: str
    folder: Path
    record: dict[str, Any]  # run.json
    headlines: dict[str, Headline] = field(default_factory=dict)  # by notebook
    _results: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, folder: Path | str) -> Run:
        folder = Path(folder)
        record = json.loads((folder / RUN_JSON).read_text())
        stored = record.get("headline") or {}
        headlines = {m.notebook: m.headline.from_json(stored[m.notebook]) for m in methods()
                     if isinstance(stored.get(m.notebook), dict)}
        return cls(record.get("run_id") or folder.name, folder, record, headlines)

    @classmethod
    def in_progress(cls, folder: Path | str) -> Run:
        """A run still being written (a notebook reading the methods before it): the
        headlines saved so far (`store.Results.headline`), no run.json yet."""
        folder = Path(folder)
        headlines = {}
        for m in methods():
            path = folder / HEADLINE_DIR / f"{m.notebook}.json"
            if path.is_file():
                headlines[m.notebook] = m.headline.from_json(json.loads(path.read_text()))
        return cls(folder.name, folder, {}, headlines)

    # ------------------------------------------------------------- per-method results
    def has(self, method: Method) -> bool:
        return method.notebook in self.headlines

    def headline(self, method: Method) -> Any:
        """The method's headline; when the run lacks it, one whose fields are all None (so a
        run with only some notebooks still gets the findings its results support)."""
        found = self.headlines.get(method.notebook)
        return found if found is not None else method.headline()

    def result(self, method: Method, name: str) -> Any:
        """A table (DataFrame), graph ((nodes, edges)) or arrays (dict) the method saved, or
        None."""
        key = (method.notebook, name)
        if key not in self._results:
            self._results[key] = method.results[name].load(result_folder(self.folder, method),
                                                          name)
        return self._results[key]

    def estimates(self) -> list[Estimate]:
        """Every method's Estimates of this run, in chapter order."""
        return [e for m in methods() for e in m.estimates_of(self)]

    def not_computed(self) -> list[str]:
        return [f"{nb}.{k}" for nb, h in self.headlines.items() for k in sorted(h.not_computed)]

    # ------------------------------------------------------------- the run's identity
    @property
    def parameters(self) -> dict[str, Any]:
        return self.record.get("parameters") or {}

    @property
    def model_info(self) -> dict[str, Any]:
        return self.record.get("model") or {}

    @property
    def model(self) -> str:
        info = self.model_info
        return str(info.get("resolved_name") or info.get("name") or self.parameters.get("model")
                   or "unknown model")

    @property
    def dataset(self) -> str:
        """A registered dataset's name, or a dataset file's stem ('data/my.csv' -> 'my')."""
        text = str(self.parameters.get("dataset") or "?")
        return Path(text).stem if "/" in text or text.endswith((".csv", ".jsonl")) else text

    @property
    def task(self) -> str:
        return str(self.parameters.get("task") or "?")

    @property
    def n_layers(self) -> int | None:
        return self.model_info.get("n_layers")

    def depth(self, layer: float | None) -> float | None:
        return relative_depth(layer, self.n_layers)

    @property
    def short_model(self) -> str:
        return self.model.rsplit("/", 1)[-1]

    @property
    def title(self) -> str:
        """'<model> on <dataset>', plus what narrows its prompts (one relation, a sample per
        relation), so that runs on one dataset are told apart in the write-up."""
        narrowed = [str(self.parameters["relation"])] if self.parameters.get("relation") else []
        if int(self.parameters.get("per_relation") or 0) > 0:
            narrowed.append(f"{int(self.parameters['per_relation'])} per relation")
        extra = f" ({', '.join(narrowed)})" if narrowed else ""
        return f"{self.short_model} on {self.dataset}{extra}"

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.run_id.lower())

"""Saving a method's results from its notebook, validated against its registry entry.

    results = Results(run_dir, tracing.METHOD)
    results.save("aie_by_class", table)      # a Table, Graph or Arrays the entry declares
    results.headline(summary.headline)       # an instance of the entry's headline class

A run in progress keeps them as files (`results/<notebook>/…`, `headline/<notebook>.json`);
when the run ends the runner folds the headlines into `run.json`, the run's single record
(`take_headlines`), and the write-up reads them from there (`results.run.Run`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from factcircuits.files import atomic_write
from factcircuits.results.headlines import Headline
from factcircuits.results.kinds import ResultError
from factcircuits.results.registry import Method

RESULTS_DIR, HEADLINE_DIR = "results", "headline"


def result_folder(run_dir: str | Path, method: Method) -> Path:
    return Path(run_dir) / RESULTS_DIR / method.notebook


class Results:
    def __init__(self, run_dir: str | Path, method: Method):
        self.run_dir, self.method = Path(run_dir), method

    def save(self, name: str, value: Any) -> None:
        """Write one declared result. Returns None: a notebook cell ending in `out.save(…)`
        must not print the written paths into the write-up."""
        kind = self.method.results.get(name)
        where = f"{self.method.notebook} result {name!r}"
        if kind is None:
            raise ResultError(f"{where} is not declared in the method's entry "
                              f"(declared: {', '.join(self.method.results) or 'none'})")
        kind.save(result_folder(self.run_dir, self.method), name, value, where)

    def headline(self, headline: Headline) -> Path:
        if type(headline) is not self.method.headline:
            raise ResultError(f"{self.method.notebook} headline: expected "
                              f"{self.method.headline.__name__}, got {type(headline).__name__}")
        path = self.run_dir / HEADLINE_DIR / f"{self.method.notebook}.json"
        return atomic_write(path, json.dumps(headline.to_json(), indent=2, sort_keys=True,
                                             allow_nan=False) + "\n")

    def load(self, name: str) -> Any:
        """A result saved earlier in this run (by this method or, through another method's
        `Results`, by an earlier notebook), or None."""
        return self.method.results[name].load(result_folder(self.run_dir, self.method), name)

    def load_headline(self) -> Headline | None:
        path = self.run_dir / HEADLINE_DIR / f"{self.method.notebook}.json"
        return self.method.headline.from_json(json.loads(path.read_text())) \
            if path.is_file() else None


def take_headlines(run_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The headline files of a run in progress, keyed by notebook, removed from the folder:
    the runner writes them into run.json, so they are kept once."""
    folder = Path(run_dir) / HEADLINE_DIR
    if not folder.is_dir():
        return {}
    found = {}
    for path in sorted(folder.glob("*.json")):
        try:
            found[path.stem] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ResultError(f"headline {path.name} is unreadable "
                              f"({str(exc).splitlines()[0][:80]})") from None
    for path in folder.glob("*.json"):
        path.unlink()
    folder.rmdir()
    return found

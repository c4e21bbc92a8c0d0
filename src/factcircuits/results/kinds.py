"""What a method can save besides its headline, each validated when saved:

- `Table`: a tidy DataFrame, `results/<notebook>/<name>.csv`; its columns and their kinds.
- `Graph`: nodes and edges with scores (a circuit), `results/<notebook>/<name>/nodes.csv` and
  `edges.csv`; every edge's `source` and `target` must be a node's `name`.
- `Arrays`: named numpy arrays of declared dimensions, `results/<notebook>/<name>.npz`.

Column kinds: "int", "float" (ints are floats too), "str", "bool", "any". A saved table with a
missing or undeclared column, or a column of another kind, is refused in one line that names
the method, the result and the column.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from factcircuits.errors import UserError
from factcircuits.files import atomic_write

KINDS = ("int", "float", "str", "bool", "any")


class ResultError(UserError):
    """A result that does not match its declaration."""


def _kind_ok(series: pd.Series, kind: str) -> bool:
    values = series.dropna()
    if kind == "any" or values.empty:
        return True
    if kind == "bool":
        return pd.api.types.is_bool_dtype(series) or values.isin([True, False]).all()
    if kind == "str":
        return pd.api.types.is_object_dtype(series) or pd.api.types.is_string_dtype(series)
    if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return False
    return kind == "float" or bool((values == values.round()).all())  # int: whole numbers


def check_columns(table: pd.DataFrame, columns: dict[str, str], where: str,
                  open_columns: bool = False) -> None:
    missing = [c for c in columns if c not in table.columns]
    extra = [] if open_columns else [c for c in table.columns if c not in columns]
    if missing or extra:
        raise ResultError(f"{where}: columns {', '.join(map(str, missing))} missing"
                          if missing else f"{where}: undeclared column(s) "
                          f"{', '.join(map(str, extra))}; declare them in the method's entry")
    for name, kind in columns.items():
        if not _kind_ok(table[name], kind):
            raise ResultError(f"{where}: column {name} holds {table[name].dtype}, declared "
                              f"{kind}; fix the method or its entry")


@dataclass(frozen=True)
class Table:
    columns: dict[str, str]
    meaning: str = ""
    open_columns: bool = False  # pivots whose columns depend on the data (declared: the index)

    def save(self, folder: Path, name: str, table: pd.DataFrame, where: str) -> list[Path]:
        if not isinstance(table, pd.DataFrame):
            raise ResultError(f"{where}: expected a DataFrame, got {type(table).__name__}")
        check_columns(table, self.columns, where, self.open_columns)
        return [atomic_write(folder / f"{name}.csv", table.to_csv(index=False))]

    def load(self, folder: Path, name: str) -> pd.DataFrame | None:
        path = folder / f"{name}.csv"
        if not path.is_file():
            return None
        try:
            return pd.read_csv(path)
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            return None


@dataclass(frozen=True)
class Graph:
    """Nodes (`name` plus `node_columns`) and directed edges (`source`, `target` plus
    `edge_columns`, e.g. a score)."""

    node_columns: dict[str, str] = field(default_factory=dict)
    edge_columns: dict[str, str] = field(default_factory=dict)
    meaning: str = ""

    def save(self, folder: Path, name: str, graph: tuple[pd.DataFrame, pd.DataFrame],
             where: str) -> list[Path]:
        nodes, edges = graph
        check_columns(nodes, {"name": "str", **self.node_columns}, f"{where} nodes")
        check_columns(edges, {"source": "str", "target": "str", **self.edge_columns},
                      f"{where} edges")
        unknown = sorted(set(edges["source"]).union(edges["target"]) - set(nodes["name"]))
        if unknown:
            raise ResultError(f"{where}: edges name node(s) {', '.join(unknown[:3])} that are "
                              "not in its nodes")
        return [atomic_write(folder / name / "nodes.csv", nodes.to_csv(index=False)),
                atomic_write(folder / name / "edges.csv", edges.to_csv(index=False))]

    def load(self, folder: Path, name: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
        parts = [folder / name / f"{part}.csv" for part in ("nodes", "edges")]
        if not all(p.is_file() for p in parts):
            return None
        return pd.read_csv(parts[0]), pd.read_csv(parts[1])


@dataclass(frozen=True)
class Arrays:
    """Named arrays; `dims` gives each array's dimension names (its number of axes)."""

    dims: dict[str, tuple[str, ...]]
    meaning: str = ""

    def save(self, folder: Path, name: str, arrays: dict[str, np.ndarray],
             where: str) -> list[Path]:
        if set(arrays) != set(self.dims):
            raise ResultError(f"{where}: arrays {sorted(arrays)} but the entry declares "
                              f"{sorted(self.dims)}")
        for key, value in arrays.items():
            value = np.asarray(value)
            if value.ndim != len(self.dims[key]) or not np.issubdtype(value.dtype, np.number):
                raise ResultError(f"{where}: array {key} has shape {value.shape} "
                                  f"({value.dtype}), declared numeric "
                                  f"[{', '.join(self.dims[key])}]")
        import io

        buffer = io.BytesIO()
        np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
        return [atomic_write(folder / f"{name}.npz", buffer.getvalue())]

    def load(self, folder: Path, name: str) -> dict[str, np.ndarray] | None:
        path = folder / f"{name}.npz"
        if not path.is_file():
            return None
        with np.load(path) as data:
            return {k: data[k] for k in data.files}

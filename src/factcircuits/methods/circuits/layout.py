"""Where a circuit's nodes go in a static drawing, in pixels, so that no label overlaps another.

Each node is drawn as a box holding its name. Rows run from the input (bottom) to the logits
(top), one per layer; a layer whose heads feed its own MLP gets two, its attention (heads and
key/value heads) below its MLP, so every edge runs upward. Within a row the
boxes sit side by side with `BOX_GAP` between them, ordered to shorten edges (each node at the
mean x of its neighbours in rows already placed, one sweep up and one down); a row wider than
the canvas wraps onto further lines. Box widths come from the label's length at `FONT_SIZE`
with `CHAR_WIDTH`, an upper bound on the advance of the capitals and digits node names are
made of, so a label fits inside its box: boxes that do not overlap are labels that do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

FONT_SIZE = 10  # px, the labels' font
# × font size, per character: node names (input, logits, L12H3, L4KV1, MLP 7) average at
# most 0.65 em a character in DejaVu Sans, the widest of the fonts the figures ask for
CHAR_WIDTH = 0.68
FONT_FAMILY = "DejaVu Sans, Arial, sans-serif"
PAD_X, PAD_Y = 5, 4  # px between a label and its box
BOX_GAP = 10  # px between boxes of one line
LINE_GAP = 6  # px between the wrapped lines of one row
ROW_GAP = 14  # px between rows, where the edges run


@dataclass(frozen=True)
class Box:
    """A node's box in pixels (y up)."""
    name: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def overlaps(self, other: Box) -> bool:
        return (self.x0 < other.x1 and other.x0 < self.x1
                and self.y0 < other.y1 and other.y0 < self.y1)


@dataclass
class Layout:
    boxes: dict[str, Box]
    rows: list[tuple[str, float]]  # (row label, y of its first line's centre), bottom to top
    width: float
    height: float


def label_size(name: str, font_size: float = FONT_SIZE) -> tuple[float, float]:
    """Width and height in pixels of the box around a label."""
    return len(name) * CHAR_WIDTH * font_size + 2 * PAD_X, 1.3 * font_size + 2 * PAD_Y


def row_of(name: str, layer: int, split: set[int] = frozenset()) -> tuple[int, int]:
    """(layer, 0 | 1): a layer's MLP sits one row above its attention when the layer is in
    `split` (its heads feed its MLP), else in the same row; input and logits are rows of
    their own."""
    return int(layer), 1 if name.startswith("MLP") and int(layer) in split else 0


def row_label(row: tuple[int, int], n_layers: int, split: set[int] = frozenset()) -> str:
    layer, sub = row
    if layer < 0:
        return "input"
    if layer >= n_layers:
        return "logits"
    if layer not in split:
        return f"layer {layer}"
    return f"layer {layer} MLP" if sub else f"layer {layer} attention"


def _natural(name: str) -> tuple:
    return (name.startswith("MLP"), "KV" in name, len(name), name)


def _lines(names: list[str], width: float, font_size: float) -> list[list[str]]:
    """Greedy wrap of one row's boxes into lines no wider than `width`."""
    lines: list[list[str]] = [[]]
    used = 0.0
    for name in names:
        w = label_size(name, font_size)[0]
        if lines[-1] and used + BOX_GAP + w > width:
            lines.append([])
            used = 0.0
        used += (BOX_GAP if lines[-1] else 0.0) + w
        lines[-1].append(name)
    return lines


def _pack(order: dict, width: float, font_size: float) -> tuple[dict[str, Box], list]:
    """Boxes of every row, bottom to top, each line centred on the canvas."""
    boxes, rows, y = {}, [], 0.0
    for row, names in order.items():
        first = None
        for line in _lines(names, width, font_size):
            sizes = [label_size(n, font_size) for n in line]
            h = max(s[1] for s in sizes)
            total = sum(s[0] for s in sizes) + BOX_GAP * (len(line) - 1)
            x = (width - total) / 2
            for name, (w, _) in zip(line, sizes):
                boxes[name] = Box(name, x, y, x + w, y + h)
                x += w + BOX_GAP
            first = y + h / 2 if first is None else first
            y += h + LINE_GAP
        rows.append((row, first))
        y += ROW_GAP - LINE_GAP
    return boxes, rows


def _pull(name: str, others: list[str], boxes: dict[str, Box], placed: set,
          row_at: dict) -> float:
    """The mean x of a node's neighbours in rows already placed (its own x without any)."""
    xs = [boxes[o].centre[0] for o in others if row_at[o] in placed]
    return sum(xs) / len(xs) if xs else boxes[name].centre[0]


def layered_layout(nodes: pd.DataFrame, edges: pd.DataFrame, width: float,
                   n_layers: int | None = None, font_size: float = FONT_SIZE) -> Layout:
    """Boxes for `nodes` (node, layer) on a canvas `width` pixels wide; `edges` (upstream,
    downstream) order each row. The height follows from the rows."""
    layer_of = dict(zip(nodes["node"], nodes["layer"]))
    if n_layers is None:  # the logits' layer is the model's depth
        n_layers = layer_of.get("logits", max(layer_of.values(), default=-1) + 1)
    split = {int(layer_of[d]) for u, d in zip(edges["upstream"], edges["downstream"])
             if str(d).startswith("MLP") and u in layer_of and d in layer_of
             and layer_of[u] == layer_of[d]}
    row_at = {name: row_of(name, layer_of[name], split) for name in layer_of}
    order: dict[tuple[int, int], list[str]] = {}
    for name in sorted(layer_of, key=_natural):
        order.setdefault(row_at[name], []).append(name)
    order = dict(sorted(order.items()))
    neighbours: dict[str, list[str]] = {name: [] for name in layer_of}
    for up, down in zip(edges["upstream"], edges["downstream"]):
        if up in neighbours and down in neighbours:
            neighbours[up].append(down)
            neighbours[down].append(up)
    boxes, _ = _pack(order, width, font_size)
    for sweep in (list(order), list(order)[::-1]):  # up, then down
        for i, row in enumerate(sweep):
            placed = set(sweep[:i])
            pulls = {name: _pull(name, neighbours[name], boxes, placed, row_at)
                     for name in order[row]}
            order[row] = sorted(order[row], key=pulls.__getitem__)
            boxes, _ = _pack(order, width, font_size)
    boxes, rows = _pack(order, width, font_size)
    height = max((b.y1 for b in boxes.values()), default=0.0)
    return Layout(boxes, [(row_label(r, n_layers, split), y) for r, y in rows], width, height)


def overlapping(boxes) -> list[tuple[str, str]]:
    """Pairs of boxes that overlap (a plain all-pairs check)."""
    items = list(boxes)
    return [(a.name, b.name) for i, a in enumerate(items) for b in items[i + 1:]
            if a.overlaps(b)]

"""Which patched states are sufficient, which necessary, which both: denoising and noising read
at the same cell (component, token class, layer).

Denoising restores one clean state into the corrupted run: the share of the clean−corrupted
gap it restores says how *sufficient* that state is. Noising corrupts one state of the clean
run: the share it loses says how *necessary* it is (Heimersheim & Nanda 2024). A state is
called sufficient (necessary) when the 95% interval of the share restored (lost) lies above
`BAR`, half the gap; both when both do. Both tables are on the share scale (`PatchResult.
as_effect`), so one function reads either.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from factcircuits.methods.intervals import normalized_curves
from factcircuits.methods.uncertainty import ratio_of_means_estimate
from factcircuits.results.parameter_declarations import SEED

BAR = 0.5  # half of the clean−corrupted gap: "the state carries most of the answer"

VERDICTS = {(True, True): "necessary and sufficient", (True, False): "sufficient",
            (False, True): "necessary", (False, False): "neither resolved"}


def cell_share(long: pd.DataFrame, component: str, token_class: str, layer: int,
               n_layers: int, seed: int = SEED.default) -> tuple[float, list[float]] | None:
    """The share of the gap (ratio of means over pairs, as `patching.by_class`) of one cell of
    a share-scale long table, with its 95% bootstrap interval; None when no pair has it."""
    metric, clean, corrupted = normalized_curves(long, component, token_class, n_layers)
    column = [x[:, layer] for x in (metric, clean, corrupted)]
    keep = ~np.isnan(column[0])
    if not keep.any():
        return None
    m, c, k = (x[keep] for x in column)
    found = ratio_of_means_estimate(m - k, c - k, seed)
    return found.value, list(found.interval())


def verdict(restored_ci: list[float] | None, lost_ci: list[float] | None) -> str:
    """'necessary and sufficient', 'sufficient', 'necessary' or 'neither resolved', from the
    intervals of the share restored by denoising and lost by noising at one cell."""
    def above(ci):
        return bool(ci) and all(v == v for v in ci) and ci[0] > BAR
    return VERDICTS[above(restored_ci), above(lost_ci)]


def both_ways(denoising: pd.DataFrame, noising: pd.DataFrame, component: str,
              token_class: str, layer: int, n_layers: int, seed: int = SEED.default) -> dict:
    """At one cell: the share restored (denoising) and lost (noising) with their 95% intervals
    (`*_low`, `*_high`; NaN when no pair has the cell) and the verdict. Tables: `patching.tidy`
    of share-scale results, with token classes."""
    nan = (float("nan"), [float("nan"), float("nan")])
    restored = cell_share(denoising, component, token_class, layer, n_layers, seed) or nan
    lost = cell_share(noising, component, token_class, layer, n_layers, seed) or nan
    return {"component": component, "token_class": token_class, "layer": int(layer),
            "restored": restored[0], "restored_low": restored[1][0],
            "restored_high": restored[1][1], "lost": lost[0], "lost_low": lost[1][0],
            "lost_high": lost[1][1], "verdict": verdict(restored[1], lost[1])}

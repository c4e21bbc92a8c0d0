"""What each head of a circuit does: where its last-token attention goes and where its direct
effect on the answer comes from, and a role read off those numbers.

For every query head of a circuit (the `head` nodes of `summary.node_frame`), on the clean
prompts of the run's pairs:
  attention   the last token's attention weight summed over the positions of each token
              class of `attribution.SOURCES` (subject, relation, last, other: BOS and any
              format prefix), averaged over prompts;
  direct effect
              the head's DLA at the last token split by the source position it reads
              (`attribution.head_source_dla`: attention weight × that position's OV output,
              projected on the answer direction; the parts add up to the head's DLA), averaged
              over prompts, and each source's share of the head's DLA (ratio of means).
Intervals: a bootstrap over prompts (`uncertainty.resample_counts`, seeded by the run's seed),
one set of resamples for every head.

Roles (Chughtai et al. 2024's subject, relation and mixed heads; Yao et al. 2024's mover heads),
from the direct effect only:
  mover     writes the answer (mean DLA > 0, its interval above 0) and most of that comes
            through the subject tokens (the subject share's interval lies above `READS`);
  relation  writes the answer and most of it comes through the relation tokens (likewise);
  mixed     writes the answer, subject and relation tokens each carry at least `MIXED_FLOOR`
            of it (point estimates) and neither is a resolved majority;
  other     everything else: no resolved positive direct effect (a head can matter to the
            circuit through the heads and MLPs it feeds, not the logits), or one that comes
            mostly through the last token or BOS.
The attention columns are reported beside the role, not used by it: a head can attend to the
subject and still write nothing from it.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from factcircuits.methods import attribution as A
from factcircuits.methods.uncertainty import N_RESAMPLES, resample_counts, resampled_means
from factcircuits.results.parameter_declarations import BATCH_SIZE, SEED

ROLES = ("mover", "relation", "mixed", "other")
READS = 0.5  # a source carries a head's direct effect when its share's interval lies above this
MIXED_FLOOR = 0.25  # mixed: subject and relation tokens each carry at least this share
ROLE_COLOURS = {"mover": "#d62728", "relation": "#1f77b4", "mixed": "#9467bd",
                "other": "#bdbdbd"}
_HEAD = re.compile(r"^L(\d+)H(\d+)$")
# the role table's columns and their kinds (the run saves it as `head_roles`)
COLUMNS = {"node": "str", "layer": "int", "head": "int", "role": "str",
           "dla": "float", "dla_low": "float", "dla_high": "float",
           **{f"dla_{s}": "float" for s in A.SOURCES},
           **{f"{s}_share{x}": "float" for s in ("subject", "relation")
              for x in ("", "_low", "_high")},
           **{f"attn_{s}": "float" for s in A.SOURCES},
           **{f"attn_{s}{x}": "float" for s in ("subject", "relation") for x in ("_low", "_high")}}


def circuit_heads(nodes: pd.DataFrame) -> list[tuple[int, int]]:
    """(layer, head) of every query head among a circuit's nodes (column `node` or `name`);
    input, MLPs, logits and grouped key/value heads (L5KV1: a reader input, no output of its
    own) are not heads with a direct effect."""
    names = nodes["node"] if "node" in nodes else nodes["name"]
    found = [_HEAD.match(str(name)) for name in names]
    return sorted({(int(m[1]), int(m[2])) for m in found if m})


def attention_by_source(pattern: Float[Tensor, "n L H pos"], codes: Int[Tensor, "n pos"]
                        ) -> Float[Tensor, "n L H sources"]:
    """The last token's attention summed over the positions of each of `attribution.SOURCES`
    (codes from `attribution.source_codes`; padding keys carry no weight)."""
    one_hot = torch.nn.functional.one_hot(codes, len(A.SOURCES)).to(pattern.dtype)
    return torch.einsum("nlhp,nps->nlhs", pattern, one_hot)


def classify(dla: float, dla_low: float, subject_share: float, subject_low: float,
             relation_share: float, relation_low: float) -> str:
    """The role of one head from its direct effect (see the module docstring)."""
    if not (dla > 0 and dla_low > 0):
        return "other"
    if subject_low > READS:
        return "mover"
    if relation_low > READS:
        return "relation"
    if subject_share >= MIXED_FLOOR and relation_share >= MIXED_FLOOR:
        return "mixed"
    return "other"


def _interval(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Central 95 % of bootstrap samples along axis 0 (NaN resamples left out)."""
    with np.errstate(all="ignore"):
        low, high = np.nanpercentile(samples, [2.5, 97.5], axis=0)
    return low, high


def role_table(sources: pd.DataFrame, attention: Float[Tensor, "n L H sources"],
               heads: list[tuple[int, int]], seed: int = SEED.default,
               n_resamples: int = N_RESAMPLES) -> pd.DataFrame:
    """One row per head of `heads`: node, layer, head, role; the mean DLA with its interval,
    its parts by source (`dla_<source>`; they add up to `dla`), the subject and relation
    shares with intervals, and the mean attention to each source (`attn_<source>`), with
    intervals for subject and relation."""
    columns = list(COLUMNS)
    if not heads:
        return pd.DataFrame(columns=columns)
    table = sources.set_index(["prompt", "layer", "head", "source"])["dla"]
    n = int(sources["prompt"].max()) + 1
    # [n, heads, sources]: the per-prompt parts of each head, in the order of `heads`
    parts = np.stack([table.xs((ly, h), level=("layer", "head")).unstack("source")
                      .reindex(index=range(n), columns=list(A.SOURCES)).to_numpy()
                      for ly, h in heads], axis=1)
    totals = parts.sum(-1)
    att = attention[:, [ly for ly, _ in heads], [h for _, h in heads]].numpy()  # [n, K, S]
    counts = resample_counts(n, n_resamples, seed)
    part_draws = resampled_means(parts, counts)  # [R, K, S]
    total_draws = resampled_means(totals, counts)  # [R, K]
    att_draws = resampled_means(att, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        share_draws = part_draws / total_draws[..., None]
        shares = parts.mean(0) / totals.mean(0)[:, None]
    dla_low, dla_high = _interval(total_draws)
    share_low, share_high = _interval(share_draws)
    att_low, att_high = _interval(att_draws)
    s, r = A.SOURCES.index("subject"), A.SOURCES.index("relation")
    rows = []
    for k, (layer, head) in enumerate(heads):
        dla = float(totals[:, k].mean())
        row = {"node": f"L{layer}H{head}", "layer": layer, "head": head,
               "role": classify(dla, float(dla_low[k]), float(shares[k, s]),
                                float(share_low[k, s]), float(shares[k, r]),
                                float(share_low[k, r])),
               "dla": dla, "dla_low": float(dla_low[k]), "dla_high": float(dla_high[k]),
               **{f"dla_{src}": float(parts[:, k, i].mean()) for i, src in enumerate(A.SOURCES)}}
        for name, i in (("subject", s), ("relation", r)):
            row |= {f"{name}_share": float(shares[k, i]),
                    f"{name}_share_low": float(share_low[k, i]),
                    f"{name}_share_high": float(share_high[k, i])}
        row |= {f"attn_{src}": float(att[:, k, i].mean()) for i, src in enumerate(A.SOURCES)}
        for name, i in (("subject", s), ("relation", r)):
            row |= {f"attn_{name}_low": float(att_low[k, i]),
                    f"attn_{name}_high": float(att_high[k, i])}
        rows.append(row)
    return pd.DataFrame(rows, columns=columns)


def head_roles(lm, prepared, heads: list[tuple[int, int]], *, seed: int = SEED.default,
               batch_size: int = BATCH_SIZE.default, progress: bool = False) -> pd.DataFrame:
    """`role_table` of `heads` on the clean prompts of `prepared` (the run's pairs): one pass
    for the last-token decomposition, one for the attention patterns and values."""
    from factcircuits.methods.positions import task_positions

    dec = A.decompose(lm, prepared, batch_size=batch_size, heads=False, progress=progress)
    direction = A.answer_direction(lm, prepared, dec.pre_cap_logits)
    inputs = A.capture_head_inputs(lm.model, prepared.clean_batch(lm.tokenizer), batch_size,
                                   progress)
    sources = A.head_source_dla(lm, prepared, dec, direction, inputs=inputs)
    codes = A.source_codes(task_positions(prepared, lm.tokenizer), inputs[0].shape[-1])
    return role_table(sources, attention_by_source(inputs[0], codes), heads, seed)


def role_counts(roles: pd.DataFrame) -> dict[str, list[str]]:
    """The heads of each role, in layer order (every role present, maybe empty)."""
    ordered = roles.sort_values(["layer", "head"]) if len(roles) else roles
    return {role: list(ordered.loc[ordered["role"] == role, "node"]) if len(roles) else []
            for role in ROLES}

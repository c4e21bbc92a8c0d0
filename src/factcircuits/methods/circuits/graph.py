"""The computational graph of edge attribution: nodes, reader inputs and edges, in one fixed
order shared by the scores, the circuits and the exact evaluation.

Nodes (names as in the other chapters):
  input       the token embeddings as the first block receives them (Gemma's √d_model scaling
              included);
  L{l}H{h}    attention head h of layer l (a query head);
  MLP {l}     the MLP of layer l;
  logits      the unembedding (after the final norm).

Writers are input, every head and every MLP. A head's write is its slice of the output
projection, o_h = z_h W_O[:, h]ᵀ; where the model normalises the attention output before the
residual add (Gemma 2/3 `post_attention_layernorm`), the write is o_h × gain / s, with s the
norm's scale of that run's summed attention output, so the heads' writes add up exactly to what
the block adds to the residual (the MLP likewise through `post_feedforward_layernorm`).

Readers are reader *inputs*: the query input of every query head, the key and value inputs of
every key/value head, every MLP's input and the logits. Under grouped-query attention a key or
value input belongs to a key/value head shared by a group of query heads, so it is one reader
(named L{l}KV{g}, listing the heads it feeds) and its edges are counted once, not once per
query head; with as many key/value heads as query heads it is named L{l}H{g}.

Edges go from every writer to every reader input downstream of it: into layer l's attention
inputs from input, the heads and MLPs of layers < l; into layer l's MLP from those and layer
l's heads; into the logits from every writer. Edges are not split by position: an edge carries
the writer's output at every position to the reader at the same position (the residual stream
is per position), as in Syed et al. 2023, Hanna et al. 2024 and MIB.

Edge order (the index of every tensor of edge scores or masks): for each layer, its attention
block (readers q_0..q_{H-1}, k_0..k_{KV-1}, v_0..v_{KV-1}, each over its writers in writer
order), then its MLP block; the logits block last. Writer order: input, then per layer its
heads and its MLP.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

INPUT_KINDS = ("q", "k", "v", "mlp", "logits")


@dataclass(frozen=True)
class Graph:
    n_layers: int
    n_heads: int
    n_kv_heads: int

    @classmethod
    def of(cls, model) -> Graph:
        cfg = model.cfg
        kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
        return cls(int(cfg.n_layers), int(cfg.n_heads), int(kv))

    @property
    def group(self) -> int:
        """Query heads per key/value head."""
        return self.n_heads // self.n_kv_heads

    @property
    def n_attn_readers(self) -> int:
        return self.n_heads + 2 * self.n_kv_heads

    @property
    def n_writers(self) -> int:
        return 1 + self.n_layers * (self.n_heads + 1)

    def writers_before(self, layer: int, sublayer: str) -> int:
        """How many writers feed layer `layer`'s attention ("attn") or MLP ("mlp") inputs;
        layer = n_layers and "attn" is the logits."""
        base = 1 + layer * (self.n_heads + 1)
        return base + (self.n_heads if sublayer == "mlp" else 0)

    def head_writer(self, layer: int, head: int) -> int:
        return 1 + layer * (self.n_heads + 1) + head

    def mlp_writer(self, layer: int) -> int:
        return 1 + layer * (self.n_heads + 1) + self.n_heads

    @cached_property
    def blocks(self) -> list[tuple[int, str, int, int, int]]:
        """(layer, sublayer "attn" | "mlp" | "logits", n_readers, n_writers, first edge) of each
        block of edges, in edge order."""
        out, start = [], 0
        for layer in range(self.n_layers):
            for sub, n_r in (("attn", self.n_attn_readers), ("mlp", 1)):
                n_u = self.writers_before(layer, sub)
                out.append((layer, sub, n_r, n_u, start))
                start += n_r * n_u
        out.append((self.n_layers, "logits", 1, self.n_writers, start))
        return out

    @property
    def n_edges(self) -> int:
        _, _, n_r, n_u, start = self.blocks[-1]
        return start + n_r * n_u

    def split(self, mask: Float[Tensor, "*circuits n_edges"]) -> list[Tensor]:
        """Per block, the mask reshaped to [*circuits, n_readers, n_writers]."""
        lead = mask.shape[:-1]
        return [mask[..., start:start + n_r * n_u].reshape(*lead, n_r, n_u)
                for _, _, n_r, n_u, start in self.blocks]

    def join(self, blocks: list[Tensor]) -> Tensor:
        """Inverse of `split`: per-block [*lead, n_readers, n_writers] → [*lead, n_edges]."""
        return torch.cat([b.flatten(-2) for b in blocks], -1)

    # ----------------------------------------------------------------- names
    @cached_property
    def writer_names(self) -> list[str]:
        names = ["input"]
        for layer in range(self.n_layers):
            names += [f"L{layer}H{h}" for h in range(self.n_heads)] + [f"MLP {layer}"]
        return names

    @cached_property
    def writer_layers(self) -> list[int]:
        """Layer of each writer (input: −1)."""
        out = [-1]
        for layer in range(self.n_layers):
            out += [layer] * (self.n_heads + 1)
        return out

    def kv_name(self, layer: int, g: int) -> str:
        return f"L{layer}H{g}" if self.group == 1 else f"L{layer}KV{g}"

    def kv_heads(self, layer: int, g: int) -> list[str]:
        """The query heads a key/value head feeds."""
        return [f"L{layer}H{h}" for h in range(g * self.group, (g + 1) * self.group)]

    def readers(self, layer: int, sublayer: str) -> list[tuple[str, str, list[str]]]:
        """(downstream node, input kind, heads fed) of each reader of one block."""
        if sublayer == "logits":
            return [("logits", "logits", [])]
        if sublayer == "mlp":
            return [(f"MLP {layer}", "mlp", [])]
        q = [(f"L{layer}H{h}", "q", [f"L{layer}H{h}"]) for h in range(self.n_heads)]
        kv = [(self.kv_name(layer, g), kind, self.kv_heads(layer, g))
              for kind in ("k", "v") for g in range(self.n_kv_heads)]
        return q + kv

    def edge_table(self) -> pd.DataFrame:
        """One row per edge, in edge order: upstream, downstream (node names), input (q, k, v,
        mlp, logits), upstream_layer (input: −1), downstream_layer (logits: n_layers),
        downstream_heads (the query heads a q/k/v input feeds, comma-separated)."""
        cols: dict[str, list] = {k: [] for k in ("upstream", "downstream", "input",
                                                 "upstream_layer", "downstream_layer",
                                                 "downstream_heads")}
        for layer, sub, _, n_u, _ in self.blocks:
            for name, kind, heads in self.readers(layer, sub):
                cols["upstream"] += self.writer_names[:n_u]
                cols["upstream_layer"] += self.writer_layers[:n_u]
                cols["downstream"] += [name] * n_u
                cols["input"] += [kind] * n_u
                cols["downstream_layer"] += [layer] * n_u
                cols["downstream_heads"] += [",".join(heads)] * n_u
        return pd.DataFrame(cols)

    def full(self) -> Bool[Tensor, " n_edges"]:
        return torch.ones(self.n_edges, dtype=torch.bool)

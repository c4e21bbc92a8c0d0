"""The patching engine: one driver for every exact intervention that copies a stored activation
into another run (activation patching, causal tracing, AtP's exact check).

Methods describe their interventions as data, the engine plans and executes (TransformerLens's
`generic_activation_patch` with its `index_df`; ROME's `trace_with_patch` with its list of
states):

- a method prepares its prompt groups (`prepare_group`: the source run's activations, the
  reference run's residuals and KV cache, both runs' metric) and writes its plan, a list of
  `Step`s (group, first recomputed position, copy = start layer and patches, and the method's
  own key for the result);
- `execute` stacks consecutive steps of one group and position into forwards of as many
  copies as the memory budget allows (`memory_budget`, `stack_size`) and yields each stack's
  metric; the method puts the numbers where its keys say.

Why a patched copy is cheap: it differs from the reference run only from one position p and
one layer l on. Positions < p are unchanged in every layer (causal attention) and blocks < l
see the reference residual, so a copy resumes the decoder at block l on positions p.. with a
KV cache of the positions before (`methods.resume.Resumable`) and unembeds only the last
position; copies stacked along the batch axis join at their own start layer (`run_stack`), so
stacking copies of different layers wastes no block.

Vocabulary:
  group   prompts of one token length (no padding, so no attention mask and a shared last
          position), with the activations to patch in (`StackGroup.sources`, hook name →
          [G, pos, ...]) and the reference run (`StackGroup.reference_resid`, `.kv`);
  patch   (hook name, head or None, position or None = every position from `past` on): the
          source activation replaces the run's there;
  copy    (start layer, [patch, ...]): one patched run of the whole group;
  step    one copy in a plan, with the group, its first recomputed position and the result's key.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm import tqdm  # text bars: shown in the terminal log under papermill

from factcircuits.errors import UserError
from factcircuits.methods.hooks import hook_name
from factcircuits.methods.resume import KV, Resumable
from factcircuits.results.parameter_declarations import auto_or_whole

# Activations of one stacked forward (GPU: 25% of free memory). On CPU the forwards are bound
# by float32 matmuls, which reach their best rate from about a thousand rows; 48 MiB stacked
# one or two noise-sampled copies (tens of rows), 256 MiB stacks enough copies for that.
AUTO_BUDGET_BYTES = {"cpu": 256 * 2**20}

#: (hook name, head or None, position or None = every position from `past` on)
Patch = tuple[str, "int | None", "int | None"]
#: (start layer, patches): one patched copy of a group
Copy = tuple[int, list[Patch]]
#: metric(final logits [batch, vocab], prompt index [batch]) → [batch]
Metric = Callable[[Tensor, Tensor], Tensor]

T = TypeVar("T")


MAX_PATCHES = auto_or_whole("max_patches", "auto", 'patched copies stacked per forward ("auto": '
                            "memory cap)", 1, "use 'auto' (a memory cap) or a whole number of "
                            "at least 1 (patched copies per forward)")


# --------------------------------------------------------------------------- memory budget
def memory_budget(device: str, budget: int | str | None = "auto") -> int:
    """Bytes one stacked forward may use: `budget` itself, or for "auto"/None 25% of the free
    GPU memory on CUDA, `AUTO_BUDGET_BYTES["cpu"]` otherwise."""
    if budget not in (None, "auto"):
        return int(budget)
    if str(device).startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info()
        return int(free * 0.25)
    return AUTO_BUDGET_BYTES["cpu"]


def _row_bytes(cfg, n_tokens: int, n_layers_kv: int) -> int:
    """Rough bytes one stacked sequence needs in a forward (activations + KV cache + logits)."""
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    n_kv = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    per_token = 8 * cfg.d_model + 3 * d_mlp + 2 * cfg.n_heads * n_tokens
    kv = 2 * n_layers_kv * n_kv * cfg.d_head * n_tokens
    return 4 * (n_tokens * per_token + kv + 2 * cfg.d_vocab)


def max_patches_for(cfg, n_prompts: int, n_tokens: int, budget_bytes: int) -> int:
    """How many patched copies of a group of `n_prompts` rows of `n_tokens` fit the budget."""
    per_copy = n_prompts * _row_bytes(cfg, n_tokens, cfg.n_layers)
    return max(1, budget_bytes // max(per_copy, 1))


def stack_size(max_patches: int | str, cfg, n_rows: int, n_tokens: int, budget_bytes: int) -> int:
    """Copies per forward: `max_patches` when it is an int, else what the budget allows."""
    if isinstance(max_patches, int):
        return max_patches
    return max_patches_for(cfg, n_rows, n_tokens, budget_bytes)


def chunks(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """`items` cut into consecutive pieces of at most `size`."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def groups_by(key: Int[Tensor, " n"]) -> list[Int[Tensor, " g"]]:
    """Indices of the rows sharing each value of `key`, in increasing key order."""
    return [(key == k).nonzero().flatten() for k in sorted(set(key.tolist()))]


# --------------------------------------------------------------------------- groups
@dataclass
class StackGroup:
    """One group of equal-length prompts ready for stacked patched runs (G rows)."""

    index: Int[Tensor, " G"]  # prompt index of each row
    sources: dict[str, Tensor]  # hook name -> activation to patch in [G, pos, ...]
    reference_resid: list[Float[Tensor, "G pos d_model"]]  # per layer, entering the block
    kv: KV  # per layer (k, v) [G, kv_heads, pos, d_head] of the reference run
    source_metric: Float[Tensor, " G"]  # metric of the run the sources come from (clean)
    reference_metric: Float[Tensor, " G"]  # metric of the reference (corrupted) run

    @property
    def n_tokens(self) -> int:
        return self.reference_resid[0].shape[1]


def capture_reference(runner: Resumable, model, tokens: Int[Tensor, "batch pos"],
                      fwd_hooks=()) -> tuple[Float[Tensor, "batch vocab"],
                                             list[Float[Tensor, "batch pos d_model"]], KV]:
    """Run `tokens` (with `fwd_hooks`, e.g. embedding noise) keeping the residual entering
    every block and the KV cache: (final logits, [resid per layer], [(k, v) per layer])."""
    n_layers = model.cfg.n_layers
    resid_names = [hook_name(layer, "resid_pre") for layer in range(n_layers)]
    kept = []

    def keep(act, hook):
        kept.append(act.detach().clone())
        return act

    with model.hooks(fwd_hooks=[*fwd_hooks, *[(n, keep) for n in resid_names]]):
        logits, kv = runner.kv_cache(tokens)
    if len(kept) != n_layers:
        raise UserError("could not capture the residual stream of every layer")
    return logits, kept, kv


@torch.inference_mode()
def prepare_group(runner: Resumable, model, metric: Metric, index: Int[Tensor, " g"],
                  source_tokens: Int[Tensor, "g pos"], reference_tokens: Int[Tensor, "G pos"],
                  names: set[str], reference_hooks=()) -> StackGroup:
    """A group ready for patched runs: the source run's activations at `names` and the
    reference run (`reference_tokens` with `reference_hooks`, e.g. embedding noise). The
    reference may hold k stacked copies of the group (k noise samples: G = k·g rows); the
    sources are repeated to match, and row r stands for prompt index[r mod g]."""
    device = model.cfg.device
    source_logits, cache = model.run_with_cache(
        source_tokens.to(device), names_filter=lambda name: name in names,
        return_cache_object=False)
    logits, resid, kv = capture_reference(runner, model, reference_tokens.to(device),
                                          fwd_hooks=reference_hooks)
    k = len(reference_tokens) // len(source_tokens)
    rows = index.repeat(k) if k > 1 else index
    sources = {n: a.repeat(k, *[1] * (a.ndim - 1)) if k > 1 else a for n, a in cache.items()}
    return StackGroup(rows, sources, resid, kv,
                      metric(source_logits[:, -1], index).float().cpu(),
                      metric(logits, rows).float().cpu())


def run_stack(runner: Resumable, model, group: StackGroup, past: int, copies: Sequence[Copy],
              metric: Metric, vocab: Int[Tensor, " k"] | None = None
              ) -> Float[Tensor, "n_copies G"]:
    """One forward of len(copies) patched copies of `group` at positions past.. (each copy is
    (start layer, patches), see the module docstring). A copy joins the batch at its own start
    layer: blocks before it would only reproduce the reference run. Returns the metric of each
    copy's rows, in the order given. `vocab`: the token ids `metric` reads, if known (only
    those logits are computed, see `Resumable.unembed`)."""
    G = len(group.index)
    order = sorted(range(len(copies)), key=lambda j: copies[j][0])
    starts = [copies[j][0] for j in order]
    first = starts[0]
    n_layers = len(group.reference_resid)
    joining = {layer: starts.count(layer) for layer in set(starts)}
    active = [sum(n for start, n in joining.items() if start <= layer) for layer in range(n_layers)]
    residual = group.reference_resid[first][:, past:].repeat(joining[first], 1, 1)
    kv = None
    if past:
        kv = [(k[:, :, :past].repeat(max(active[i], 1), 1, 1, 1),
               v[:, :, :past].repeat(max(active[i], 1), 1, 1, 1))
              for i, (k, v) in enumerate(group.kv)]
    by_name: dict[str, list] = {}
    for row, j in enumerate(order):
        for name, head, pos in copies[j][1]:
            by_name.setdefault(name, []).append((row, head, pos))

    def apply(act, items, source):
        for row, head, pos in items:
            rows = slice(row * G, (row + 1) * G)
            if pos is None:  # all positions
                if head is None:
                    act[rows] = source[:, past:]
                else:
                    act[rows, :, head] = source[:, past:, head]
            elif head is None:
                act[rows, pos - past] = source[:, pos]
            else:
                act[rows, pos - past, head] = source[:, pos, head]
        return act

    def make_hook(name, items):
        source = group.sources[name]
        return lambda act, hook: apply(act, items, source)

    def make_join(layer, name):
        new = group.reference_resid[layer][:, past:].repeat(joining[layer], 1, 1)
        items, source = by_name.pop(name, []), group.sources.get(name)

        def join(act, hook):
            act = torch.cat([act, new.to(act.dtype)])
            return apply(act, items, source) if items else act

        return join

    hooks = [(hook_name(layer, "resid_pre"), make_join(layer, hook_name(layer, "resid_pre")))
             for layer in sorted(joining) if layer != first]
    hooks += [(name, make_hook(name, items)) for name, items in by_name.items()]
    with model.hooks(fwd_hooks=hooks):
        logits = runner.run(first, residual, kv, past, vocab=vocab)
    index = group.index.repeat(len(copies))
    values = metric(logits, index).float().cpu().view(len(copies), G)
    out = torch.empty_like(values)
    out[torch.tensor(order)] = values
    return out


# --------------------------------------------------------------------------- the driver
@dataclass(frozen=True)
class Step:
    """One patched copy in a plan: group `group` run from position `past` on as `copy`; `cell`
    is the method's key for where the result goes (a grid index, a table row...)."""

    group: int
    past: int
    copy: Copy
    cell: Hashable


@torch.inference_mode()
def execute(runner: Resumable, model, groups: Sequence[StackGroup], plan: Sequence[Step],
            metric: Metric, *, max_patches: int | str = MAX_PATCHES.default, budget_bytes="auto",
            progress: bool = True, desc: str = "patching", vocab: Int[Tensor, " k"] | None = None
            ) -> Iterator[tuple[Sequence[Step], Float[Tensor, "n_steps G"]]]:
    """Run `plan`: consecutive steps of one group and position share forwards, `max_patches`
    copies each (an int; "auto": as many as `budget_bytes` allows, see `memory_budget`).
    Yields each forward's steps with their metric (one row of the group's G rows per step),
    in plan order. `vocab`: the token ids `metric` reads, if known (see `run_stack`)."""
    budget = memory_budget(model.cfg.device, budget_bytes)
    stacks = []
    for (g, past), steps in itertools.groupby(plan, key=lambda step: (step.group, step.past)):
        group = groups[g]
        cap = stack_size(max_patches, model.cfg, len(group.index), group.n_tokens, budget)
        stacks += [(group, past, chunk) for chunk in chunks(list(steps), cap)]
    for group, past, chunk in tqdm(stacks, desc=desc, mininterval=1.0, disable=not progress,
                                   leave=False):
        yield chunk, run_stack(runner, model, group, past, [s.copy for s in chunk], metric,
                               vocab)

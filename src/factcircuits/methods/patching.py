"""Activation patching, clean into corrupted (TransformerLens conventions), fast.

For every cell (layer l, position p) the clean run's activation replaces the corrupted run's,
and the task metric is read at the last token: `result[l, p]` is the same number as
`transformer_lens.patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache,
metric)[l, p]` (likewise `attn_out`, `mlp_out`, and per head `z` over all positions).

Why it is faster than TransformerLens's one-full-forward-per-cell loop, with the same numbers:
- causality: patching (l, p) leaves every position < p unchanged in every layer, so a patched
  run only computes positions p.. of layers l.., reading the corrupted run's keys/values of
  positions < p from a KV cache;
- start at layer l: the corrupted residual entering layer l is cached, so blocks < l are
  skipped (the bridge's own `start_at_layer` still runs blocks 0..l-1 internally and discards
  them, so it saves nothing: we run the Hugging Face decoder on the sliced block list);
- unembed only the last position (the metric's);
- stack many patches along the batch axis (copies of the prompt group, one patch each), as
  many as the memory cap allows (`max_patches="auto"`), so matrix multiplies stay large; a
  copy joins the stacked batch at its own layer (a hook concatenates its rows there), so
  stacking patches of different layers wastes no block;
- positions before the first token where a pair differs hold identical activations in both
  runs, so patching there is provably a no-op: those cells get the corrupted metric without a
  forward (pairs are grouped by length and first differing token).

Prompts are grouped by token length (clean and corrupted prompts of a pair must have equal
length: `Session.patchable` keeps those); inside a group there is no padding, so no attention
mask is needed and the last position is shared. Results are per prompt ([layer, pos, prompt]);
cells past a shorter prompt's end hold its corrupted metric (patching there changes nothing,
exactly what TransformerLens returns on right-padded tokens).

Scope: Hugging Face decoder-only models whose decoder has a `layers` (or `h`) block list that
the bridge wraps (Llama, Mistral, Qwen2/3, Gemma, GPT-2 style...). Models that alternate
sliding-window and global layers (Gemma-2/3) are exact for prompts shorter than the window.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import pandas as pd
import torch
from tqdm import tqdm  # text bars: shown in the terminal log under papermill

from factcircuits.errors import UserError
from factcircuits.models.tokens import encode

COMPONENTS = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "z": "blocks.{layer}.attn.hook_z",
}
COMPONENT_TITLES = {"resid_pre": "residual stream (resid_pre)", "attn_out": "attention output",
                    "mlp_out": "MLP output", "z": "attention head output (z)"}
AUTO_BUDGET_BYTES = {"cpu": 48 * 2**20}  # activations of one stacked forward; GPU: see below


# --------------------------------------------------------------------------- model plumbing
class Resumable:
    """Run the decoder from layer `start` on a given residual, with an optional KV cache of the
    positions before it, and return the logits at the last position only."""

    def __init__(self, model):
        self.model = model
        hf = getattr(model, "original_model", None)
        if hf is None:
            raise UserError("fast patching needs a TransformerBridge over a Hugging Face model")
        self.hf = hf
        self.decoder, self.attr = self._find_decoder(hf, model.blocks[0])
        self.softcap = getattr(hf.config, "final_logit_softcapping", None)

    @staticmethod
    def _find_decoder(hf, first_block):
        for module in hf.modules():
            for attr in ("layers", "h"):
                blocks = getattr(module, attr, None)
                if isinstance(blocks, torch.nn.ModuleList) and len(blocks) and \
                        blocks[0] is first_block:
                    return module, attr
        raise UserError("cannot find the decoder's block list in this model; fast patching "
                        "supports Hugging Face decoder-only models (Llama, Qwen, Gemma, GPT-2...)")

    @contextlib.contextmanager
    def _sliced(self, start: int, residual: torch.Tensor):
        blocks = getattr(self.decoder, self.attr)
        first = self.model.blocks[start]
        # Swap the given residual into the first block run (what the bridge's start_at_layer
        # does), so architectures that rescale inputs_embeds (Gemma) still get it unchanged.
        first._start_at_layer_idx, first._start_residual = start, residual
        setattr(self.decoder, self.attr, torch.nn.ModuleList(list(blocks)[start:]))
        try:
            with self._cache_kwarg():
                yield
        finally:
            setattr(self.decoder, self.attr, blocks)
            first._start_at_layer_idx, first._start_residual = None, None

    def kv_cache(self, tokens: torch.Tensor):
        """Run `tokens` and return (final logits [batch, vocab], per-layer (keys, values))."""
        with self._cache_kwarg():
            out = self.decoder(input_ids=tokens, use_cache=True)
        cache = out.past_key_values
        kv = [(layer.keys, layer.values) for layer in cache.layers]
        return self.unembed(out.last_hidden_state[:, -1]), kv

    @contextlib.contextmanager
    def _cache_kwarg(self):
        """The bridge's attention reads the KV cache from `past_key_values`; transformers 5
        passes it as `cache`: forward it."""

        def cache_kwarg(_module, args, kwargs):
            if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
                kwargs["past_key_values"] = kwargs["cache"]
            mask = kwargs.get("attention_mask")
            # No padding on this path: every row's causal mask is the same, and the batch may
            # grow between blocks (copies that start later join), so keep one row.
            if isinstance(mask, torch.Tensor) and mask.ndim == 4 and mask.shape[0] > 1:
                kwargs["attention_mask"] = mask[:1]
            return args, kwargs

        handles = [b.attn.register_forward_pre_hook(cache_kwarg, with_kwargs=True)
                   for b in self.model.blocks]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.model.unembed(hidden)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def run(self, start: int, residual: torch.Tensor, kv=None, past: int = 0) -> torch.Tensor:
        """Logits [batch, vocab] at the last position. `residual` [batch, pos, d] enters block
        `start` at absolute positions past..past+pos-1; `kv` holds keys/values of positions
        < past of every layer, repeated to the rows that layer sees (the batch may grow between
        blocks through hooks)."""
        from transformers import DynamicCache

        cache = None
        if past:
            cache = DynamicCache(ddp_cache_data=[(k, v) for k, v in kv], config=self.hf.config)
        with self._sliced(start, residual):
            out = self.decoder(inputs_embeds=residual, cache=cache, use_cache=cache is not None)
        return self.unembed(out.last_hidden_state[:, -1])


# --------------------------------------------------------------------------- results
@dataclass
class PatchResult:
    """Per-prompt patched metric of one component, plus the clean and corrupted baselines."""

    component: str
    values: torch.Tensor  # [n_layers, n_index, n_prompts]; index = position or head
    clean: torch.Tensor  # [n_prompts]
    corrupted: torch.Tensor  # [n_prompts]
    index_name: str = "pos"  # "pos" | "head" | "pos_head" (values [n_layers, n_pos, n_heads, n])
    lengths: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.long))

    def mean(self) -> torch.Tensor:
        """Mean over prompts: TransformerLens's result format ([n_layers, n_pos] or
        [n_layers, n_heads]) for a metric that averages over the batch."""
        return self.values.mean(-1)

    def normalized(self) -> torch.Tensor:
        """Per prompt (patched − corrupted)/(clean − corrupted): 0 = corrupted, 1 = clean."""
        return normalized_effect(self.values, self.clean, self.corrupted)

    def normalized_mean(self) -> torch.Tensor:
        """Normalized effect of the mean metric (TL's grid normalized by mean baselines)."""
        return normalized_effect(self.mean(), self.clean.mean(), self.corrupted.mean())


def normalized_effect(patched, clean, corrupted) -> torch.Tensor:
    """(patched − corrupted)/(clean − corrupted); `clean`/`corrupted` broadcast on the last
    axis (per prompt) or are scalars. NaN where clean == corrupted."""
    clean, corrupted = torch.as_tensor(clean), torch.as_tensor(corrupted)
    gap = clean - corrupted
    gap = torch.where(gap.abs() > 1e-12, gap, torch.full_like(gap, math.nan))
    return (patched - corrupted) / gap


# --------------------------------------------------------------------------- core
def normalization_caveat(clean_mean: float, corrupted_mean: float, metric: str) -> str:
    """A sentence for when (patched − corrupted)/(clean − corrupted) is not a meaningful scale:
    the corruption barely moves the metric, or moves it the wrong way. Empty otherwise."""
    gap = clean_mean - corrupted_mean
    if gap > 0.5 and gap > 0.25 * abs(clean_mean):
        return ""
    return (f"The corrupted prompts do not flip the answer (mean {metric} clean "
            f"{clean_mean:.3f} vs corrupted {corrupted_mean:.3f}), so the normalized effects "
            "below divide by a small or negative gap: read them as noise, not as localisation.")


def _groups(lengths: torch.Tensor) -> list[torch.Tensor]:
    return [(lengths == n).nonzero().flatten() for n in sorted(set(lengths.tolist()))]


def _first_difference(clean, corrupt) -> torch.Tensor:
    """Per pair, the first position where the clean and corrupted tokens differ (the length
    when they are identical)."""
    differ = (clean.tokens != corrupt.tokens) & clean.attention_mask.bool()
    pos = torch.arange(differ.shape[1]).expand_as(differ)
    return torch.where(differ, pos, differ.shape[1]).min(1).values.clamp(max=clean.lengths)


def _check_pairs(clean, corrupt):
    if clean.tokens.shape[0] != corrupt.tokens.shape[0]:
        raise UserError("clean and corrupted prompt lists differ in length")
    bad = (clean.lengths != corrupt.lengths).nonzero().flatten().tolist()
    if bad:
        raise UserError(f"{len(bad)} prompt pair(s) differ in token length (first: #{bad[0]}); "
                        "activation patching compares the same positions: keep equal-length "
                        "pairs (Session.patchable)")


def _budget_bytes(device: str, budget) -> int:
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
    """How many patched copies of a group of `n_prompts` fit the memory budget."""
    per_copy = n_prompts * _row_bytes(cfg, n_tokens, cfg.n_layers)
    return max(1, budget_bytes // max(per_copy, 1))


@dataclass
class _Group:
    index: torch.Tensor  # prompt index of each row
    clean_acts: dict  # hook name -> [G, n, ...]
    corrupt_resid: list  # per layer [G, n, d]
    kv: list  # per layer (k, v) [G, kv_heads, n, d_head]
    clean_metric: torch.Tensor
    corrupt_metric: torch.Tensor


def capture_corrupted(runner, model, tokens, fwd_hooks=()):
    """Run `tokens` (with `fwd_hooks`, e.g. embedding noise) keeping the residual entering
    every block and the KV cache: (final logits, [resid per layer], [(k, v) per layer])."""
    n_layers = model.cfg.n_layers
    resid_names = [COMPONENTS["resid_pre"].format(layer=layer) for layer in range(n_layers)]
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
def _prepare_group(runner, model, metric, index, clean_tokens, corrupt_tokens, names):
    device = model.cfg.device
    clean_tokens, corrupt_tokens = clean_tokens.to(device), corrupt_tokens.to(device)
    clean_logits, clean_cache = model.run_with_cache(
        clean_tokens, names_filter=lambda n: n in names, return_cache_object=False)
    logits, resid, kv = capture_corrupted(runner, model, corrupt_tokens)
    return _Group(index, {n: clean_cache[n] for n in names}, resid, kv,
                  metric(clean_logits[:, -1], index).float().cpu(),
                  metric(logits, index).float().cpu())


def _run_stack(runner, model, group: _Group, past: int, copies, metric):
    """One forward of len(copies) patched copies of the group at positions past.. Each copy is
    (start layer, patches); a patch is (hook name, head or None, position or None = all
    positions). A copy joins the batch at its own start layer (blocks before it would only
    reproduce the corrupted run), so stacking wastes no layer. Returns the metric
    [len(copies), G] in the order given."""
    G = len(group.index)
    order = sorted(range(len(copies)), key=lambda j: copies[j][0])
    starts = [copies[j][0] for j in order]
    first = starts[0]
    n_layers = len(group.corrupt_resid)
    joining = {layer: starts.count(layer) for layer in set(starts)}
    active = [sum(n for start, n in joining.items() if start <= layer) for layer in range(n_layers)]
    residual = group.corrupt_resid[first][:, past:].repeat(joining[first], 1, 1)
    kv = None
    if past:
        kv = [(k[:, :, :past].repeat(max(active[i], 1), 1, 1, 1),
               v[:, :, :past].repeat(max(active[i], 1), 1, 1, 1))
              for i, (k, v) in enumerate(group.kv)]
    by_name: dict[str, list] = {}
    for row, j in enumerate(order):
        for name, head, pos in copies[j][1]:
            by_name.setdefault(name, []).append((row, head, pos))

    def apply(act, items, clean):
        for row, head, pos in items:
            rows = slice(row * G, (row + 1) * G)
            if pos is None:  # all positions
                if head is None:
                    act[rows] = clean[:, past:]
                else:
                    act[rows, :, head] = clean[:, past:, head]
            elif head is None:
                act[rows, pos - past] = clean[:, pos]
            else:
                act[rows, pos - past, head] = clean[:, pos, head]
        return act

    def make_hook(name, items):
        clean = group.clean_acts[name]
        return lambda act, hook: apply(act, items, clean)

    def make_join(layer, name):
        new = group.corrupt_resid[layer][:, past:].repeat(joining[layer], 1, 1)
        items, clean = by_name.pop(name, []), group.clean_acts.get(name)

        def join(act, hook):
            act = torch.cat([act, new.to(act.dtype)])
            return apply(act, items, clean) if items else act

        return join

    hooks = [(COMPONENTS["resid_pre"].format(layer=layer),
              make_join(layer, COMPONENTS["resid_pre"].format(layer=layer)))
             for layer in sorted(joining) if layer != first]
    hooks += [(name, make_hook(name, items)) for name, items in by_name.items()]
    with model.hooks(fwd_hooks=hooks):
        logits = runner.run(first, residual, kv, past)
    index = group.index.repeat(len(copies))
    values = metric(logits, index).float().cpu().view(len(copies), G)
    out = torch.empty_like(values)
    out[torch.tensor(order)] = values
    return out


def _chunks(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


@torch.inference_mode()
def patch(lm, prepared, component: str = "resid_pre", by: str = "pos", layers=None,
          max_patches="auto", budget_bytes="auto", progress: bool = True,
          clean_batch=None, corrupt_batch=None, metric=None) -> PatchResult:
    """Activation patching of `component` (resid_pre | attn_out | mlp_out | z) clean into
    corrupted for every prompt pair of `prepared`.

    by="pos": every (layer, position) cell, the whole activation vector at that position
              (for z: every head at once) → values [n_layers, n_pos, n_prompts];
    by="head" (z only): every (layer, head), all positions → [n_layers, n_heads, n_prompts];
    by="pos_head" (z only): every (layer, position, head) → [n_layers, n_pos, n_heads, n].
    max_patches: patched copies stacked per forward ("auto": as many as `budget_bytes` allows;
    1 = one patch per forward, as TransformerLens). The metric defaults to `prepared.metric`.
    """
    if component not in COMPONENTS:
        raise UserError(f"component={component!r}: use one of {', '.join(COMPONENTS)}")
    if by != "pos" and component != "z":
        raise UserError(f"by={by!r} needs component='z' (attention heads)")
    model = lm.model
    tokenizer = lm.tokenizer
    metric = metric or prepared.metric
    clean = clean_batch or encode(tokenizer, prepared.prompts, prepared.prompt_format)
    corrupt = corrupt_batch or encode(tokenizer, prepared.corrupted_prompts,
                                      prepared.prompt_format)
    _check_pairs(clean, corrupt)
    cfg = model.cfg
    layers = list(range(cfg.n_layers)) if layers is None else list(layers)
    names = {layer: COMPONENTS[component].format(layer=layer) for layer in layers}
    n_prompts, width = clean.tokens.shape
    runner = Resumable(model)
    budget = _budget_bytes(cfg.device, budget_bytes)
    n_heads = cfg.n_heads
    shape = {"pos": (cfg.n_layers, width), "head": (cfg.n_layers, n_heads),
             "pos_head": (cfg.n_layers, width, n_heads)}[by]
    values = torch.full((*shape, n_prompts), math.nan)
    clean_metric = torch.zeros(n_prompts)
    corrupt_metric = torch.zeros(n_prompts)

    # Positions before the first token where a pair differs hold the same activations in both
    # runs (causal attention): patching there is a no-op, so those cells are the corrupted
    # metric without a forward. Grouping by (length, first difference) lets every group skip.
    first_diff = _first_difference(clean, corrupt)
    key = clean.lengths * (width + 1) + (first_diff if by != "head" else 0)
    plan = []  # (group_no, past position, copies, cells)
    prepared_groups = []
    for g_no, idx in enumerate(_groups(key)):
        n, skip = int(clean.lengths[idx[0]]), int(first_diff[idx[0]])
        group = _prepare_group(runner, model, metric, idx, clean.tokens[idx, :n],
                               corrupt.tokens[idx, :n], set(names.values()))
        prepared_groups.append(group)
        clean_metric[idx], corrupt_metric[idx] = group.clean_metric, group.corrupt_metric
        if by in ("pos", "pos_head"):
            values[:, n:, ..., idx] = group.corrupt_metric  # past the end: nothing to patch
            values[:, :skip, ..., idx] = group.corrupt_metric  # identical prefix: no-op
        cap = max_patches if isinstance(max_patches, int) else \
            max_patches_for(cfg, len(idx), n, budget)
        if by == "head":
            cells = [(layer, h) for layer in layers for h in range(n_heads)]
            for chunk in _chunks(cells, cap):
                copies = [(layer, [(names[layer], h, None)]) for layer, h in chunk]
                plan.append((g_no, 0, copies, chunk))
            continue
        for pos in range(skip, n):
            cells = [(layer, h) for layer in layers
                     for h in (range(n_heads) if by == "pos_head" else [None])]
            for chunk in _chunks(cells, cap):
                copies = [(layer, [(names[layer], h, pos)]) for layer, h in chunk]
                plan.append((g_no, pos, copies, chunk))

    for g_no, pos, copies, chunk in tqdm(plan, desc=f"patch {component}", mininterval=1.0,
                                         disable=not progress, leave=False):
        group = prepared_groups[g_no]
        out = _run_stack(runner, model, group, pos, copies, metric)
        for j, (layer, h) in enumerate(chunk):
            if by == "head":
                values[layer, h, group.index] = out[j]
            elif by == "pos_head":
                values[layer, pos, h, group.index] = out[j]
            else:
                values[layer, pos, group.index] = out[j]
    return PatchResult(component, values, clean_metric, corrupt_metric, by, clean.lengths)


def patch_resid_pre(lm, prepared, **kw) -> PatchResult:
    """Residual stream entering each block: values [n_layers, n_pos, n_prompts]."""
    return patch(lm, prepared, "resid_pre", **kw)


def patch_attn_out(lm, prepared, **kw) -> PatchResult:
    """Attention output of each block: values [n_layers, n_pos, n_prompts]."""
    return patch(lm, prepared, "attn_out", **kw)


def patch_mlp_out(lm, prepared, **kw) -> PatchResult:
    """MLP output of each block: values [n_layers, n_pos, n_prompts]."""
    return patch(lm, prepared, "mlp_out", **kw)


def patch_heads(lm, prepared, **kw) -> PatchResult:
    """Each attention head's output (z) over all positions: values [n_layers, n_heads, n]."""
    return patch(lm, prepared, "z", by="head", **kw)


def patch_heads_by_pos(lm, prepared, **kw) -> PatchResult:
    """Each attention head's output at each position: values [n_layers, n_pos, n_heads, n]."""
    return patch(lm, prepared, "z", by="pos_head", **kw)


# --------------------------------------------------------------------------- tidy forms
def position_table(lm, prepared) -> pd.DataFrame:
    """One row per (prompt, position): token string, ROME token class and coarse role
    (subject / relation / last / prefix)."""
    from factcircuits.methods.positions import task_positions

    rows = []
    for i, pos in enumerate(task_positions(prepared, lm.tokenizer)):
        relation = set(pos.relation)
        subject = set(pos.subject)
        for p, (tok, cls) in enumerate(zip(pos.tokens, pos.classes)):
            role = ("last" if p == pos.last else "subject" if p in subject else
                    "relation" if p in relation else "prefix")
            rows.append({"prompt_id": i, "pos": p, "token": tok, "token_class": cls,
                         "role": role})
    return pd.DataFrame(rows)


def tidy(result: PatchResult, positions: pd.DataFrame | None = None) -> pd.DataFrame:
    """Long form: one row per (layer, position or head, prompt) with the patched metric, the
    baselines and the normalized effect; position rows joined with `position_table` labels
    (cells past a prompt's end are dropped)."""
    norm = result.normalized()
    n_layers = result.values.shape[0]
    frames = []
    for layer in range(n_layers):
        if result.index_name == "pos_head":
            for p in range(result.values.shape[1]):
                for h in range(result.values.shape[2]):
                    frames.append(pd.DataFrame({
                        "layer": layer, "pos": p, "head": h,
                        "prompt_id": range(result.values.shape[-1]),
                        "metric": result.values[layer, p, h].numpy(),
                        "normalized": norm[layer, p, h].numpy()}))
            continue
        key = "head" if result.index_name == "head" else "pos"
        for k in range(result.values.shape[1]):
            frames.append(pd.DataFrame({
                "layer": layer, key: k, "prompt_id": range(result.values.shape[-1]),
                "metric": result.values[layer, k].numpy(), "normalized": norm[layer, k].numpy()}))
    df = pd.concat(frames, ignore_index=True)
    df.insert(0, "component", result.component)
    df["clean"] = result.clean.numpy()[df["prompt_id"]]
    df["corrupted"] = result.corrupted.numpy()[df["prompt_id"]]
    if "pos" in df and len(result.lengths):
        df = df[df["pos"].to_numpy() < result.lengths.numpy()[df["prompt_id"]]]
    if positions is not None and "pos" in df:
        df = df.merge(positions, on=["prompt_id", "pos"], how="left")
    return df.reset_index(drop=True)


def by_class(table: pd.DataFrame, column: str = "token_class") -> pd.DataFrame:
    """Normalized effect per (component, layer, class): the class's mean patched metric,
    normalized by the mean clean and corrupted metrics of the same rows (normalizing means, not
    averaging per-prompt ratios, so a pair with a small clean−corrupted gap cannot dominate)."""
    means = (table.groupby(["component", "layer", column], observed=True)
             [["metric", "clean", "corrupted"]].mean().reset_index())
    means["normalized"] = normalized_effect(torch.tensor(means["metric"].to_numpy()),
                                            torch.tensor(means["clean"].to_numpy()),
                                            torch.tensor(means["corrupted"].to_numpy())).numpy()
    means["n_cells"] = (table.groupby(["component", "layer", column], observed=True)
                        .size().to_numpy())
    return means


def peak(table: pd.DataFrame, column: str = "token_class") -> dict:
    """Where the class-averaged normalized effect peaks: {effect, layer, <column>}."""
    means = by_class(table, column)
    row = means.loc[means["normalized"].idxmax()]
    return {"effect": float(row["normalized"]), "layer": int(row["layer"]),
            column: str(row[column])}


def template_labels(positions: pd.DataFrame) -> list[str]:
    """Axis labels for the position axis: the token of prompt 0 and, when prompts differ at a
    position, the most common token class there."""
    labels = []
    for p, rows in positions.groupby("pos"):
        tokens = rows["token"].unique()
        cls = rows["token_class"].mode().iloc[0]
        labels.append(f"{p}: {tokens[0]!r}" if len(tokens) == 1 else f"{p}: [{cls}]")
    return labels

"""The resumable forward / stacking engine shared by activation patching and causal tracing.

A patched run of a prompt group differs from a reference ("corrupted") run only from one
position p and one layer l on: positions < p are unchanged in every layer (causal attention)
and blocks < l see the reference residual. So the engine

- captures the reference run once per group (`capture_reference`): the residual entering every
  block and the KV cache of every layer;
- resumes the decoder at a block on a given residual, reading positions < p from the KV cache,
  and unembeds only the last position (`Resumable.run`);
- stacks many patched copies of a group along the batch axis in one forward (`run_stack`); a
  copy joins the stacked batch at its own start layer (a hook concatenates its rows there), so
  stacking copies of different layers wastes no block;
- sizes the stack to a memory budget (`memory_budget`, `stack_size`).

Vocabulary:
  group   prompts of one token length (no padding, so no attention mask and a shared last
          position), with the activations to patch in (`StackGroup.sources`, hook name →
          [G, pos, ...]) and the reference run (`StackGroup.reference_resid`, `.kv`);
  patch   (hook name, head or None, position or None = every position from `past` on): the
          source activation replaces the run's there;
  copy    (start layer, [patch, ...]): one patched run of the whole group.

Resuming keeps every block's index: blocks before the start are pass-throughs, because decoders
read per-layer settings by list index (Gemma 2/3's `config.layer_types[i]`: RoPE base and
sliding/global mask). `Resumable` checks once per model that a forward resumed at every layer
reproduces the full forward, and refuses the model otherwise.

Scope: Hugging Face decoder-only models whose decoder has a `layers` (or `h`) block list that
the TransformerBridge wraps (Llama, Mistral, Qwen2/3, Gemma, GPT-2 style...). Models that
alternate sliding-window and global layers (Gemma-2/3) are exact at any prompt length: the KV
cache is built without the model config, so every layer keeps all keys/values (transformers'
sliding-window cache layers keep only the last window−1, and a prefix sliced out of them is
wrong once a prompt reaches the window), while the attention masks still apply the window.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from factcircuits.errors import UnsupportedArchitectureError, UserError
from factcircuits.methods.hooks import hook_name

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
KV = list[tuple[Tensor, Tensor]]  # per layer (keys, values) [batch, kv_heads, pos, d_head]

T = TypeVar("T")

# Resumed and full forwards run the same operations on the same inputs; only batch shapes
# differ, so they agree to rounding. Wrong per-layer settings move logits by 1e-2 and more.
RESUME_TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 2e-2}
RESUME_CHECKED = "_factcircuits_resume_checked"  # flag on the HF model: checked once


class _PassThrough(torch.nn.Module):
    """Stands in for a decoder block that a resumed forward skips: returns its input."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


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
        if not getattr(hf, RESUME_CHECKED, False):
            self.check_resumes()
            setattr(hf, RESUME_CHECKED, True)

    @torch.inference_mode()
    def check_resumes(self, n_tokens: int = 8) -> float:
        """Refuse a model whose forward resumed at some layer does not reproduce its full
        forward (a per-layer setting the decoder reads by index, as Gemma 2/3's attention
        types, would give wrong numbers silently). One short forward plus one resumed forward
        per layer; returns the largest |logit difference|."""
        cfg = self.model.cfg
        tokens = (torch.arange(n_tokens) * 7919 % cfg.d_vocab).unsqueeze(0).to(cfg.device)
        resid = []

        def keep(act, hook):
            resid.append(act.detach().clone())
            return act

        names = [hook_name(layer, "resid_pre") for layer in range(cfg.n_layers)]
        with self.model.hooks(fwd_hooks=[(n, keep) for n in names]):
            full, _ = self.kv_cache(tokens)
        tol = RESUME_TOLERANCE.get(full.dtype, 1e-2) * max(1.0, float(full.abs().max()))
        worst = 0.0
        for start in range(cfg.n_layers):
            diff = float((self.run(start, resid[start]) - full).abs().max())
            worst = max(worst, diff)
            if not diff <= tol:
                raise UnsupportedArchitectureError(
                    f"{type(self.hf).__name__}: a forward resumed at layer {start} differs "
                    f"from the full forward by {diff:.3g} in the logits (allowed {tol:.2g}); "
                    "activation patching, causal tracing and AtP* would be wrong on this "
                    "architecture, so they are refused: please report the model name")
        return worst

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
    def _sliced(self, start: int, residual: Tensor):
        blocks = getattr(self.decoder, self.attr)
        first = self.model.blocks[start]
        # Swap the given residual into the first block run (what the bridge's start_at_layer
        # does), so architectures that rescale inputs_embeds (Gemma) still get it unchanged.
        first._start_at_layer_idx, first._start_residual = start, residual
        # Blocks before `start` become pass-throughs rather than being cut from the list: the
        # decoder picks per-layer settings by list index (Gemma 2/3 read config.layer_types[i]
        # for each layer's RoPE base and sliding/global mask), so every block must keep its
        # index. A pass-through costs nothing; `start` then replaces what reaches it.
        skipped = [_PassThrough()] * start
        setattr(self.decoder, self.attr, torch.nn.ModuleList(skipped + list(blocks)[start:]))
        try:
            with self._cache_kwarg():
                yield
        finally:
            setattr(self.decoder, self.attr, blocks)
            first._start_at_layer_idx, first._start_residual = None, None

    def kv_cache(self, tokens: Int[Tensor, "batch pos"]
                 ) -> tuple[Float[Tensor, "batch vocab"], KV]:
        """Run `tokens`: (final-position logits [batch, vocab], per-layer (keys, values))."""
        from transformers import DynamicCache

        with self._cache_kwarg():  # full-length cache layers only: see the module docstring
            out = self.decoder(input_ids=tokens, cache=DynamicCache(), use_cache=True)
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
            if isinstance(mask, Tensor) and mask.ndim == 4 and mask.shape[0] > 1:
                kwargs["attention_mask"] = mask[:1]
            return args, kwargs

        handles = [b.attn.register_forward_pre_hook(cache_kwarg, with_kwargs=True)
                   for b in self.model.blocks]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def unembed(self, hidden: Float[Tensor, "batch d_model"]) -> Float[Tensor, "batch vocab"]:
        """Unembed final hidden states (after the final norm), with the model's soft cap."""
        logits = self.model.unembed(hidden)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def run(self, start: int, residual: Float[Tensor, "batch pos d_model"], kv: KV | None = None,
            past: int = 0) -> Float[Tensor, "batch vocab"]:
        """Logits at the last position. `residual` enters block `start` at absolute positions
        past..past+pos-1; `kv` holds keys/values of positions < past of every layer, repeated to
        the rows that layer sees (the batch may grow between blocks through hooks)."""
        from transformers import DynamicCache

        cache = None
        if past:
            cache = DynamicCache(ddp_cache_data=[(k, v) for k, v in kv])  # full layers
        with self._sliced(start, residual):
            out = self.decoder(inputs_embeds=residual, cache=cache, use_cache=cache is not None)
        return self.unembed(out.last_hidden_state[:, -1])


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


def run_stack(runner: Resumable, model, group: StackGroup, past: int, copies: Sequence[Copy],
              metric: Metric) -> Float[Tensor, "n_copies G"]:
    """One forward of len(copies) patched copies of `group` at positions past.. (each copy is
    (start layer, patches), see the module docstring). A copy joins the batch at its own start
    layer: blocks before it would only reproduce the reference run. Returns the metric of each
    copy's rows, in the order given."""
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
        logits = runner.run(first, residual, kv, past)
    index = group.index.repeat(len(copies))
    values = metric(logits, index).float().cpu().view(len(copies), G)
    out = torch.empty_like(values)
    out[torch.tensor(order)] = values
    return out

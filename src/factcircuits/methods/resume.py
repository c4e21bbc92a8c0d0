"""Resuming the decoder at a block on a given residual (`Resumable`): the primitive under the
patching engine (`methods.engine`).

A resumed forward runs blocks start.. on a residual, reading the keys/values of positions before
the first recomputed one from a KV cache, and unembeds only the last position. Blocks before the
start are pass-throughs, never cut from the layer list: decoders read per-layer settings by list
index (Gemma 2/3's `config.layer_types[i]`: RoPE base and sliding/global mask). `Resumable`
checks once per model that a forward resumed at every layer reproduces the full forward, and
refuses the model otherwise.

Scope: Hugging Face decoder-only models whose decoder has a `layers` (or `h`) block list that
the TransformerBridge wraps (Llama, Mistral, Qwen2/3, Gemma, GPT-2 style...). Models that
alternate sliding-window and global layers (Gemma-2/3) are exact at any prompt length: the KV
cache is built without the model config, so every layer keeps all keys/values (transformers'
sliding-window cache layers keep only the last window−1, and a prefix sliced out of them is
wrong once a prompt reaches the window), while the attention masks still apply the window.
"""

from __future__ import annotations

import contextlib

import torch
from jaxtyping import Float, Int
from torch import Tensor

from factcircuits.errors import UnsupportedArchitectureError, UserError
from factcircuits.methods.hooks import hook_name

KV = list[tuple[Tensor, Tensor]]  # per layer (keys, values) [batch, kv_heads, pos, d_head]

# Resumed and full forwards run the same operations on the same inputs; only batch shapes
# differ, so they agree to rounding. Wrong per-layer settings move logits by 1e-2 and more.
RESUME_TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 2e-2}
RESUME_CHECKED = "_factcircuits_resume_checked"  # flag on the HF model: checked once
# Unembedding only the columns a metric reads (`Resumable.unembed`) is exact when the BLAS
# computes each column as in the full product. On CPU BLAS it does once the product is a blocked
# kernel's (>= 16 columns, >= 4 rows; a narrower product or a one-row one is summed in
# another order): so pad to at least these sizes, and check once per model.
COLUMN_WIDTH, COLUMN_ROWS = 64, 8
COLUMNS_EXACT = "_factcircuits_columns_exact"  # flag on the HF model: None = not checked yet


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
            full_hidden, _ = self._full_forward(tokens)
        hidden = [self.run_hidden(start, resid[start]) for start in range(cfg.n_layers)]
        # One unembedding for every start: a one-row unembedding reads the whole (vocab ×
        # d_model) matrix for one row, so n_layers + 1 of them cost more than the forwards.
        logits = self.unembed(torch.cat([full_hidden, *hidden]))
        full = logits[:1]
        tol = RESUME_TOLERANCE.get(full.dtype, 1e-2) * max(1.0, float(full.abs().max()))
        worst = 0.0
        for start in range(cfg.n_layers):
            diff = float((logits[start + 1] - full).abs().max())
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
        hidden, kv = self._full_forward(tokens)
        return self.unembed(hidden), kv

    def _full_forward(self, tokens: Int[Tensor, "batch pos"]
                      ) -> tuple[Float[Tensor, "batch d_model"], KV]:
        """Run `tokens`: (final-position hidden states after the final norm, per-layer KV)."""
        from transformers import DynamicCache

        with self._cache_kwarg():  # full-length cache layers only: see the module docstring
            out = self.decoder(input_ids=tokens, cache=DynamicCache(), use_cache=True)
        cache = out.past_key_values
        return out.last_hidden_state[:, -1], [(layer.keys, layer.values) for layer in cache.layers]

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

    def unembed(self, hidden: Float[Tensor, "batch d_model"],
                vocab: Int[Tensor, " k"] | None = None) -> Float[Tensor, "batch vocab"]:
        """Unembed final hidden states (after the final norm), with the model's soft cap.
        `vocab`: the only token ids the caller reads. Then only those logits are computed (the
        metrics read two of tens of thousands: the full unembedding of every patched copy's
        last position was a tenth of patching's time), each bitwise the full product's (of a
        batch of at least `COLUMN_ROWS` rows, as the reference forwards are), and the other
        columns are NaN, so a metric that reads one shows NaN instead of a wrong number.
        Where the BLAS gives other bits (`columns_exact`), the full product is used."""
        if vocab is not None and self.columns_exact():
            logits = self._unembed_columns(hidden, vocab)
        else:
            logits = self.model.unembed(hidden)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def _unembed_columns(self, hidden: Float[Tensor, "batch d_model"],
                         vocab: Int[Tensor, " k"]) -> Float[Tensor, "batch vocab"]:
        head = self.model.unembed.original_component
        n_vocab, n_rows = head.out_features, len(hidden)
        vocab = vocab.to(head.weight.device)
        others = torch.ones(n_vocab, dtype=torch.bool, device=vocab.device)
        others[vocab] = False
        pad = max(0, min(COLUMN_WIDTH, n_vocab) - len(vocab))
        columns = torch.cat([vocab, others.nonzero().flatten()[:pad]])
        rows = hidden
        if n_rows < COLUMN_ROWS:
            rows = torch.cat([hidden, hidden.new_zeros(COLUMN_ROWS - n_rows, hidden.shape[1])])
        bias = None if head.bias is None else head.bias[columns]
        out = torch.nn.functional.linear(rows, head.weight[columns], bias)[:n_rows]
        logits = out.new_full((n_rows, n_vocab), float("nan"))
        logits[:, columns] = out
        return logits

    def columns_exact(self) -> bool:
        """Whether `unembed(hidden, vocab)` gives bitwise the full unembedding's logits here
        (a plain linear unembedding, and a BLAS that sums each column alike whatever the other
        columns): checked once per model on random states, at a few batch sizes."""
        exact = getattr(self.hf, COLUMNS_EXACT, None)
        if exact is None:
            head = self.model.unembed.original_component
            exact = type(head) is torch.nn.Linear
            if exact:
                gen = torch.Generator().manual_seed(0)
                hidden = torch.randn(8 * COLUMN_ROWS + 3, head.in_features, generator=gen)
                hidden = hidden.to(head.weight.device, head.weight.dtype)
                vocab = torch.randperm(head.out_features, generator=gen)[:4]
                with torch.inference_mode():
                    for n in (COLUMN_ROWS, 2 * COLUMN_ROWS + 3, len(hidden)):
                        full = self.model.unembed(hidden[:n])[:, vocab.to(head.weight.device)]
                        part = self._unembed_columns(hidden[:n], vocab)[:, vocab]
                        exact = exact and torch.equal(full, part)
            setattr(self.hf, COLUMNS_EXACT, exact)
        return exact

    def run_hidden(self, start: int, residual: Float[Tensor, "batch pos d_model"],
                   kv: KV | None = None, past: int = 0) -> Float[Tensor, "batch d_model"]:
        """`run` before the unembedding: the last position's hidden state after the final
        norm."""
        from transformers import DynamicCache

        cache = None
        if past:
            cache = DynamicCache(ddp_cache_data=[(k, v) for k, v in kv])  # full layers
        with self._sliced(start, residual):
            out = self.decoder(inputs_embeds=residual, cache=cache, use_cache=cache is not None)
        return out.last_hidden_state[:, -1]

    def run(self, start: int, residual: Float[Tensor, "batch pos d_model"], kv: KV | None = None,
            past: int = 0, vocab: Int[Tensor, " k"] | None = None) -> Float[Tensor, "batch vocab"]:
        """Logits at the last position. `residual` enters block `start` at absolute positions
        past..past+pos-1; `kv` holds keys/values of positions < past of every layer, repeated to
        the rows that layer sees (the batch may grow between blocks through hooks). `vocab`:
        see `unembed`."""
        return self.unembed(self.run_hidden(start, residual, kv, past), vocab)

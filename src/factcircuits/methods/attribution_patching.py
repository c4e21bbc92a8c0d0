"""Attribution patching (AtP; Nanda 2023) and its QK fix (AtP*; Kramár et al. 2024): a
first-order estimate of every activation-patching cell from two forwards and one backward.

Patching node n (one activation at one layer and position, clean into corrupted) changes the
metric M by M(corrupted with n := n_clean) − M(corrupted). AtP linearises M around the
corrupted run:

    estimate(n) = (n_clean − n_corrupted) · ∂M/∂n |corrupted

so one clean forward (the activations), one corrupted forward and one backward (the
gradients) give every cell of every component at once: residual stream, attention output and
MLP output at each (layer, position), and each head's output (z) at each position. Patching a
head at all positions is, to first order, the sum of its per-position estimates.

Where the linear estimate fails: attention softmax saturates, so a node that moves a query or
key can change an attention pattern far more (or less) than the gradient says (Kramár et al.
2024, §3.1.1). AtP*'s QK fix recomputes the attention pattern of the first attention layer that
reads the node *exactly* (the node changes the residual stream at its position; layer r's
pattern is recomputed with it) and linearises only from the pattern on:

    estimate*(n) = estimate(n) − g_r · Jpattern_r(Δ) + g_r · (pattern_r(x + Δ) − pattern_r(x))

with g_r = ∂M/∂pattern_r, applied here to resid_pre (r = l) and attention/MLP outputs
(r = l + 1). Later layers stay linear; head outputs (z) keep the plain estimate. AtP*'s other
fix (GradDrop, for cancelling paths) is not applied.

Conventions as `patching`: per prompt, clean into corrupted, the metric at the last token;
`estimate` is the estimated patched − corrupted metric, so `patched()` is comparable with
`PatchResult.values` and the exact effect is `PatchResult.values − PatchResult.corrupted`.
Prompt pairs must have equal token lengths (as for exact patching); prompts are grouped by
length, so no padding enters any forward.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from factcircuits.errors import UserError
from factcircuits.methods.engine import Resumable, groups_by
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.hooks import hook_name
from factcircuits.methods.patching import PatchResult, first_difference
from factcircuits.models import LoadedModel

SCAN_COMPONENTS = ("resid_pre", "attn_out", "mlp_out", "z")


@dataclass
class ScanResult:
    """Estimated patching effects of one component for every prompt.

    atp / atp_star: [n_layers, n_pos, n_prompts] ([n_layers, n_pos, n_heads, n_prompts] for
    z), the estimated patched − corrupted metric (AtP* = AtP where the QK fix does not apply).
    Cells past a prompt's end and before its first differing token are exactly 0."""

    component: str
    atp: torch.Tensor
    atp_star: torch.Tensor
    clean: torch.Tensor  # [n_prompts]
    corrupted: torch.Tensor  # [n_prompts]
    lengths: torch.Tensor  # [n_prompts]
    first_difference: torch.Tensor  # [n_prompts]: positions before it cannot change anything
    seconds: float = math.nan

    @property
    def index_name(self) -> str:
        return "pos_head" if self.component == "z" else "pos"

    def estimate(self, star: bool = False) -> torch.Tensor:
        return self.atp_star if star else self.atp

    def patched(self, star: bool = False) -> torch.Tensor:
        """Estimated patched metric, laid out like `PatchResult.values`."""
        return self.corrupted + self.estimate(star)

    def as_patch_result(self, star: bool = False) -> PatchResult:
        """For `patching.tidy`/`by_class` and the normalized effect."""
        return PatchResult(self.component, self.patched(star), self.clean, self.corrupted,
                           self.index_name, self.lengths)

    def heads(self, star: bool = False) -> torch.Tensor:
        """z only: estimated effect of patching each head at all positions, [n_layers, n_heads,
        n_prompts] (first order: the sum over positions)."""
        if self.component != "z":
            raise UserError("heads() needs the z (head output) scan")
        return self.estimate(star).sum(1)

    def valid(self) -> torch.Tensor:
        """Mask [n_layers, n_pos(, n_heads), n_prompts] of the cells patching can change:
        inside the prompt and from its first differing token on."""
        pos = torch.arange(self.atp.shape[1]).view(-1, 1)
        ok = (pos < self.lengths) & (pos >= self.first_difference)  # [n_pos, n_prompts]
        if self.component == "z":
            ok = ok.unsqueeze(1)
        return ok.expand_as(self.atp)


class _Stop(Exception):
    """Raised by a hook to end a forward once the pattern it needs is captured."""


class _PatternProbe:
    """Attention patterns of one block for a given residual stream entering it; only that
    block's attention runs. The hooks are set once for many calls (each `model.hooks` context
    costs the bridge milliseconds)."""

    def __init__(self, runner: Resumable, model):
        self.runner, self.model, self.kept = runner, model, []

    def __enter__(self):
        def stop(act, hook):
            self.kept.append(act.detach())
            raise _Stop

        names = [hook_name(layer, "pattern") for layer in range(self.model.cfg.n_layers)]
        self.context = self.model.hooks(fwd_hooks=[(name, stop) for name in names])
        self.context.__enter__()
        return self

    def __exit__(self, *exc):
        return self.context.__exit__(*exc)

    def __call__(self, layer: int, residual: torch.Tensor) -> torch.Tensor:
        """[batch, heads, pos, pos] of block `layer` for `residual` [batch, pos, d]."""
        self.kept.clear()
        try:  # the run starts at `layer`, so the first pattern hook to fire is that block's
            self.runner.run(layer, residual)
        except _Stop:
            pass
        return self.kept[0]


def _pattern_from_layer(runner: Resumable, model, layer: int, residual: torch.Tensor):
    """Attention pattern [batch, heads, pos, pos] of block `layer` for `residual`."""
    with _PatternProbe(runner, model) as probe:
        return probe(layer, residual)


def _qk_corrections(probe: _PatternProbe, reader: int, residual, deltas, grad_pattern, vjp):
    """AtP* − AtP for nodes that change the residual stream entering block `reader` by
    `delta` [G, n, d] at their own position (one delta per component): per position p,
    g · (exact − linearised) change of that block's attention pattern when position p alone
    moves by delta[:, p]. One forward for all; returns one [G, n] tensor per delta."""
    G, n, d = residual.shape
    eye = torch.eye(n, dtype=residual.dtype).view(n, 1, n, 1)
    # rows: the unmoved group, then per delta n copies (copy p: position p moved)
    moved = [residual] + [(residual.unsqueeze(0) + eye * delta.unsqueeze(0)).view(n * G, n, d)
                          for delta in deltas]
    patterns = probe(reader, torch.cat(moved))
    base, exact = patterns[:G], patterns[G:].view(len(deltas), n, G, *patterns.shape[1:])
    change = ((exact - base) * grad_pattern).sum((-1, -2, -3))  # [n_deltas, n(p), G]
    linear = [(vjp * delta).sum(-1) for delta in deltas]  # g · Jpattern(Δ_p): [G, n]
    return [change[j].T - linear[j] for j in range(len(deltas))]


def _scan_group(runner, model, metric, index, clean_tokens, corrupt_tokens, components,
                qk_fix):
    n_layers = model.cfg.n_layers
    names = {(c, layer): hook_name(layer, c) for c in components
             for layer in range(n_layers)}
    resid_names = [hook_name(layer, "resid_pre") for layer in range(n_layers)]
    pattern_names = [hook_name(layer, "pattern") for layer in range(n_layers)]
    wanted = set(names.values()) | (set(resid_names) if qk_fix else set())
    with torch.inference_mode():
        clean_logits, clean_cache = model.run_with_cache(
            clean_tokens, names_filter=lambda name: name in wanted, return_cache_object=False)
    clean_metric = metric(clean_logits[:, -1], index).float()

    acts = {}

    def keeper(name):  # hook.name may be an alias (resid_pre is blocks.l.hook_in)
        def keep(act, hook):
            acts[name] = act
            return act
        return keep

    hooked = wanted | (set(pattern_names) if qk_fix else set())
    with torch.enable_grad(), model.hooks(fwd_hooks=[(n, keeper(n)) for n in hooked]):
        logits = model(corrupt_tokens)
        corrupt_metric = metric(logits[:, -1], index)
        # Prompts are independent rows: the gradient of the sum is each prompt's gradient.
        order = sorted(hooked)
        grads = dict(zip(order, torch.autograd.grad(corrupt_metric.sum(),
                                                    [acts[n] for n in order],
                                                    retain_graph=qk_fix)))
        vjps = []
        if qk_fix:  # g_r · ∂pattern_r/∂resid_r, the part of the gradient AtP* replaces
            for layer in range(n_layers):
                vjps.append(torch.autograd.grad(acts[pattern_names[layer]],
                                                acts[resid_names[layer]],
                                                grads[pattern_names[layer]],
                                                retain_graph=layer < n_layers - 1)[0])
    atp, star = {}, {}
    for component in components:
        for layer in range(n_layers):
            name = names[(component, layer)]
            delta = clean_cache[name] - acts[name].detach()
            atp[component, layer] = (delta * grads[name]).sum(-1)  # [G, n] ([G, n, heads]: z)
            star[component, layer] = atp[component, layer]
    if qk_fix:
        with torch.no_grad(), _PatternProbe(runner, model) as probe:
            for reader in range(n_layers):
                # the nodes this block's attention reads first: its own resid_pre, the
                # previous block's attention and MLP outputs (head outputs z keep AtP)
                nodes = [(c, reader if c == "resid_pre" else reader - 1) for c in components
                         if c != "z" and (c == "resid_pre" or reader > 0)]
                if not nodes:
                    continue
                deltas = [clean_cache[names[node]] - acts[names[node]].detach()
                          for node in nodes]
                fixes = _qk_corrections(probe, reader, acts[resid_names[reader]].detach(),
                                        deltas, grads[pattern_names[reader]], vjps[reader])
                for node, fix in zip(nodes, fixes):
                    star[node] = atp[node] + fix
    out = {c: (torch.stack([atp[c, layer] for layer in range(n_layers)]),
               torch.stack([star[c, layer] for layer in range(n_layers)])) for c in components}
    return out, clean_metric.detach(), corrupt_metric.detach().float()


def scan(lm: LoadedModel, prepared: PreparedTask, components=SCAN_COMPONENTS, *,
         qk_fix: bool = True, metric=None, progress: bool = True) -> dict[str, ScanResult]:
    """AtP (and AtP* with `qk_fix`) estimates of patching every cell of `components`
    (resid_pre | attn_out | mlp_out by position; z by position and head) clean into corrupted
    for every prompt pair of `prepared`. Returns {component: ScanResult}."""
    unknown = [c for c in components if c not in SCAN_COMPONENTS]
    if unknown:
        raise UserError(f"component={unknown[0]!r}: use some of {', '.join(SCAN_COMPONENTS)}")
    start = time.perf_counter()
    model, cfg = lm.model, lm.model.cfg
    metric = metric or prepared.metric
    clean, corrupt = prepared.pairs(lm.tokenizer)
    n_prompts, width = clean.tokens.shape
    runner = Resumable(model) if qk_fix else None
    shape = {c: (cfg.n_layers, width, cfg.n_heads) if c == "z" else (cfg.n_layers, width)
             for c in components}
    atp = {c: torch.zeros(*shape[c], n_prompts) for c in components}
    star = {c: torch.zeros(*shape[c], n_prompts) for c in components}
    clean_metric, corrupt_metric = torch.zeros(n_prompts), torch.zeros(n_prompts)
    for idx in tqdm(groups_by(clean.lengths), desc="attribution patching", mininterval=1.0,
                    disable=not progress, leave=False):
        n = int(clean.lengths[idx[0]])
        device = cfg.device
        est, clean_m, corrupt_m = _scan_group(
            runner, model, metric, idx, clean.tokens[idx, :n].to(device),
            corrupt.tokens[idx, :n].to(device), components, qk_fix)
        clean_metric[idx], corrupt_metric[idx] = clean_m.cpu(), corrupt_m.cpu()
        for c, (a, s) in est.items():  # [L, G, n(, H)] → [L, n(, H), G]
            atp[c][:, :n, ..., idx] = a.movedim(1, -1).float().cpu()
            star[c][:, :n, ..., idx] = s.movedim(1, -1).float().cpu()
    first = first_difference(clean, corrupt)
    seconds = time.perf_counter() - start
    return {c: ScanResult(c, atp[c], star[c], clean_metric, corrupt_metric, clean.lengths,
                          first, seconds) for c in components}


# --------------------------------------------------------------------------- checking a scan

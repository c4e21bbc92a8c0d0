"""ROME causal tracing (Meng et al. 2022): corrupt the subject by adding Gaussian noise to its
token embeddings, then restore one clean state and see how much of the answer comes back.

- noise: `noise_scale` (ROME: 3) × the standard deviation of the embedding activations of the
  subject tokens (`hook_embed`, where the noise is added; ROME's `collect_embedding_std`),
  added to the embeddings of every subject token, independently for each of `noise_samples`
  samples (a seeded generator: the seed is recorded in the result). Not the std of W_E: Gemma
  scales embeddings by √d_model inside the embedding step, so W_E's std is √d_model too small;
- restored states: the hidden state (block output, `hook_resid_post`), the MLP output or the
  attention output at one (layer, token); with `window` > 1 the same token is restored in the
  `window` layers centred on the layer. ROME restored MLP/attention in a window of 10 of GPT-2
  XL's 48 layers; a fixed 10 spans a third of a 30-layer model and over half of an 18-layer
  one, where a windowed curve's peak can mark the window edge at which one strong layer (the
  layer-0 MLP, say) leaves or enters the window.
  Here each MLP / attention trace is kept at window 1 ("mlp", "attn": the single-layer curves
  that peaks and claims are read from) and at a window scaled to the depth ("windowed_mlp",
  "windowed_attn": `default_window`, ROME's 10/48 of the layers), in the same forwards;
- metric: P(answer) at the last token, averaged over noise samples (`metric="prob"`: P(correct
  object) for cloze, P(answer set of the label) for yes/no, i.e. P(True set) for a true
  statement and P(False set) for a false one), or the task's own metric (`metric="task"`);
- indirect effect of a state = metric(restored) − metric(corrupted); total effect =
  metric(clean) − metric(corrupted). With zero noise both are 0.

It runs on `methods.engine`, as activation patching does: restoring at (l, p) leaves positions
< p as in the noised run, so only positions p.. of layers ≥ the window's first layer are
recomputed, with many restorations stacked along the batch axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from factcircuits.errors import UserError
from factcircuits.methods import engine
from factcircuits.methods.engine import MAX_PATCHES
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.hooks import EMBED, hook_name
from factcircuits.methods.positions import TOKEN_CLASSES, task_positions
from factcircuits.models import LoadedModel
from factcircuits.results.parameter_declarations import (
    BATCH_SIZE,
    SEED,
    auto_or_whole,
    choice,
    positive_float,
    whole,
)

KINDS = ("hidden", "mlp", "attn")  # ROME's restored states (hooks.hook_name aliases)
KIND_TITLES = {"hidden": "hidden state (block output)", "mlp": "MLP output",
               "attn": "attention output"}
# the same states restored in a window of layers (ROME's MLP / attention traces)
WINDOWED = {"windowed_mlp": "mlp", "windowed_attn": "attn"}
TRACE_KINDS = (*KINDS, *WINDOWED)
ROME_WINDOW, ROME_LAYERS = 10, 48  # ROME's window on GPT-2 XL: about a fifth of the depth
# ROME's figures show the classes from the subject on (the prefix is never noised)
TRACED_CLASSES = tuple(c for c in TOKEN_CLASSES if c != "prefix")


# this method's run parameters (its registry entry lists them; notebook 05's cell shows them)
NOISE_SAMPLES = whole("noise_samples", 10, "ROME: 10 samples of subject noise per prompt", 1,
                      allowed="use a whole number of at least 1 (ROME: 10)")
NOISE_SCALE = positive_float("noise_scale", 3.0, "× the std of the subject tokens' embedding "
                             "activations (ROME: 3)", "use a finite number above 0 (× the "
                             "subject embeddings' std; ROME: 3)")
TRACE_WINDOW = auto_or_whole("trace_window", "auto", "windowed MLP / attention traces; auto: "
                             "10/48 of the depth (ROME: 10 of 48)", 1, "use 'auto' (ROME's 10 "
                             "of 48 layers scaled to the model's depth) or a whole number of "
                             "at least 1 (layers restored together)")
TRACE_METRICS = ("prob", "task")
TRACE_METRIC = choice("trace_metric", "prob", '"prob": P(answer) as in ROME; "task": the '
                      "task's own metric", TRACE_METRICS, "use 'prob' (P(answer), as ROME) or "
                      "'task' (the task's own metric)")


def embedding_std(model, batch, subject_positions=None,
                  batch_size: int = BATCH_SIZE.default) -> float:
    """Standard deviation over all entries of the `hook_embed` activations (what the noise is
    added to) at the subject tokens of the prompts in `batch` (every real token where no
    subject positions are given or none is found)."""
    from factcircuits.models.forward import final_logits

    kept: list[torch.Tensor] = []
    lengths = batch.lengths.tolist()
    if subject_positions is None or not any(subject_positions):
        subject_positions = [list(range(n)) for n in lengths]

    def hooks_for(part, last, mask):
        rows = range(len(batch.tokens))[part]

        def keep(act, hook):
            for row, i in enumerate(rows):
                pos = [p for p in subject_positions[i] if p < lengths[i]]
                kept.append(act[row, pos].float().cpu())
        return [(EMBED, keep)]

    final_logits(model, batch, batch_size, hooks_for=hooks_for, desc="embedding std")
    return float(torch.cat(kept).std())


def trace_title(kind: str, window: int) -> str:
    """'MLP output, one layer at a time' / 'MLP output, in windows of 6 layers'."""
    how = "one layer at a time" if window == 1 else f"in windows of {window} layers"
    return f"{KIND_TITLES[state_of(kind)]}, {how}"


def state_of(kind: str) -> str:
    """The restored state of a trace kind: "windowed_mlp" restores MLP outputs."""
    return WINDOWED.get(kind, kind)


def first_peak_layer(kind: str) -> int:
    """First layer a peak of `kind` is looked for in: the layer-0 MLP acts as part of the
    token embedding, so restoring its output at a noised subject token restores the subject's
    identity rather than a stored attribute (as in activation patching); its effect is
    reported on its own and MLP peaks are taken over layers ≥ 1."""
    return 1 if state_of(kind) == "mlp" else 0


def default_window(n_layers: int) -> int:
    """ROME's share of the depth: 10/48 of `n_layers`, rounded half up, at least 1
    (48 layers → 10, 30 → 6, 18 → 4, 2 → 1)."""
    return max(1, math.floor(n_layers * ROME_WINDOW / ROME_LAYERS + 0.5))


def resolve_window(window, n_layers: int) -> int:
    """`window` "auto" → `default_window`; a whole number is clamped to 1..n_layers."""
    if window == "auto":
        return default_window(n_layers)
    return max(1, min(int(window), n_layers))


def window_rule(window, n_layers: int) -> str:
    """How the window was chosen, in words (for the headline and the notebook)."""
    used = resolve_window(window, n_layers)
    if window == "auto":
        return (f"auto: {ROME_WINDOW}/{ROME_LAYERS} of the {n_layers} layers (ROME's "
                f"{ROME_WINDOW} of GPT-2 XL's {ROME_LAYERS}), rounded half up, at least 1: "
                f"{used} layers")
    clamped = "" if used == int(window) else f", clamped to the {n_layers} layers"
    return f"given: {int(window)} layers{clamped}"


def window_layers(layer: int, window: int, n_layers: int) -> list[int]:
    """ROME's window: layers [layer − window//2, layer + ceil(window/2)) clipped."""
    return list(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))


@dataclass
class TraceResult:
    kind: str
    window: int
    values: Float[Tensor, "n_layers n_pos n_prompts"]  # restored metric (mean over samples)
    clean: Float[Tensor, " n_prompts"]
    corrupted: Float[Tensor, " n_prompts"]  # mean over samples
    lengths: Int[Tensor, " n_prompts"]
    noise_scale: float
    noise_std: float
    noise_samples: int
    seed: int

    def indirect_effect(self) -> torch.Tensor:
        return self.values - self.corrupted

    def total_effect(self) -> torch.Tensor:
        return self.clean - self.corrupted

    def tidy(self, positions: pd.DataFrame | None = None) -> pd.DataFrame:
        """One row per traced (layer, position, prompt) inside each prompt's length."""
        n_layers, width, n = self.values.shape
        ie = self.indirect_effect()
        layer, pos, prompt = torch.meshgrid(torch.arange(n_layers), torch.arange(width),
                                            torch.arange(n), indexing="ij")
        df = pd.DataFrame({"kind": self.kind, "window": self.window,
                           "layer": layer.flatten().numpy(), "pos": pos.flatten().numpy(),
                           "prompt_id": prompt.flatten().numpy(),
                           "restored": self.values.flatten().numpy(),
                           "indirect_effect": ie.flatten().numpy()})
        df["clean"] = self.clean.numpy()[df["prompt_id"]]
        df["corrupted"] = self.corrupted.numpy()[df["prompt_id"]]
        df = df[(df["pos"].to_numpy() < self.lengths.numpy()[df["prompt_id"]])
                & ~np.isnan(df["restored"].to_numpy())]  # positions the trace left out
        if positions is not None:
            df = df.merge(positions, on=["prompt_id", "pos"], how="left")
        return df.reset_index(drop=True)


# P(answer) of a stacked forward is taken in row chunks of at most this many bytes of logits on
# CPU: a softmax over a whole stack's logits (hundreds of rows × the vocabulary) writes a fresh
# ~100 MB block that page-faults on every forward; chunks under glibc's 32 MiB mmap threshold
# reuse freed memory. Row-wise, so the numbers are the same.
SOFTMAX_CHUNK_BYTES = 24 * 2**20


def in_row_chunks(metric, d_vocab: int):
    """`metric(logits, index)` evaluated on row chunks of the logits (CPU only)."""
    rows = max(1, SOFTMAX_CHUNK_BYTES // (4 * d_vocab))

    def chunked(logits, index=None):
        if logits.device.type != "cpu" or len(logits) <= rows:
            return metric(logits, index)
        index = torch.arange(len(logits)) if index is None else index
        return torch.cat([metric(logits[i:i + rows], index[i:i + rows])
                          for i in range(0, len(logits), rows)])

    return chunked


def _noise_hook(noise: torch.Tensor):
    def hook(act, hook):
        return act + noise.to(act.device, act.dtype)
    return hook


@torch.inference_mode()
def trace(lm: LoadedModel, prepared: PreparedTask, kinds=KINDS, *,
          windows=None, noise_samples: int = NOISE_SAMPLES.default,
          noise_scale: float = NOISE_SCALE.default, seed: int = SEED.default,
          metric=TRACE_METRIC.default, max_patches=MAX_PATCHES.default, budget_bytes="auto",
          progress: bool = True, subject_positions=None,
          positions=None) -> dict[str, TraceResult]:
    """Causal traces of every clean prompt of `prepared` for each trace kind.

    kinds: names from TRACE_KINDS ("hidden", "mlp", "attn", "windowed_mlp", "windowed_attn");
    windows: {kind: window} (default 1 for the plain kinds, `default_window` for the windowed
    ones); kinds restoring the same state in the same window share one computation;
    subject_positions: list of position lists (default: from `methods.positions`);
    positions: {kind: one list of positions per prompt}: trace that kind only there (NaN
    elsewhere; e.g. the windowed traces at the last subject token and the last token only,
    which costs a fraction of every position). Returns {kind: TraceResult}."""
    model, cfg = lm.model, lm.model.cfg
    unknown = [k for k in kinds if k not in TRACE_KINDS]
    if unknown:
        raise UserError(f"trace kinds {unknown}: use {', '.join(TRACE_KINDS)}")
    windows = {**{k: 1 for k in KINDS}, **{k: default_window(cfg.n_layers) for k in WINDOWED},
               **(windows or {})}
    windows = {k: max(1, min(int(w), cfg.n_layers)) for k, w in windows.items()}
    if metric not in TRACE_METRICS:  # a misspelling must not switch the metric silently
        raise UserError(f"trace metric {metric!r}: use 'prob' or 'task'")
    if int(noise_samples) < 1 or not math.isfinite(noise_scale) or noise_scale < 0:
        raise UserError(f"noise_samples={noise_samples}, noise_scale={noise_scale}: use at "
                        "least 1 sample and a finite scale of at least 0")
    metric_fn = in_row_chunks(prepared.answer_probability if metric == "prob" else
                              prepared.metric, cfg.d_vocab)
    batch = prepared.clean_batch(lm.tokenizer)
    if subject_positions is None:
        subject_positions = [p.subject for p in task_positions(prepared, lm.tokenizer)]
    n_prompts, width = batch.tokens.shape
    std = embedding_std(model, batch, subject_positions)
    generator = torch.Generator().manual_seed(int(seed))
    runner = engine.Resumable(model)
    S = int(noise_samples)
    # each distinct (state, window) is restored once, whichever kinds name it
    restorations = list(dict.fromkeys((state_of(k), windows[k]) for k in kinds))
    names_needed = {hook_name(layer, state) for state, _ in restorations
                    for layer in range(cfg.n_layers)}
    # per restoration: None (every position) or the positions of each prompt it is traced at
    traced_at: dict = {}
    for k in kinds:
        r, only = (state_of(k), windows[k]), (positions or {}).get(k)
        if r in traced_at and (traced_at[r] is None or only is None):
            traced_at[r] = None
        elif r in traced_at:
            traced_at[r] = [sorted(set(a) | set(b)) for a, b in zip(traced_at[r], only)]
        else:
            traced_at[r] = None if only is None else [sorted(set(p)) for p in only]

    out = {r: torch.full((cfg.n_layers, width, n_prompts), math.nan) for r in restorations}
    clean_metric = torch.zeros(n_prompts)
    corrupt_metric = torch.zeros(n_prompts)
    lengths = batch.lengths
    groups, plan = [], []
    # States before the first subject token are the same in the clean and noised runs (causal
    # attention): restoring them is a no-op (indirect effect 0) and needs no forward. Grouping
    # by (length, first subject position) lets each group skip them.
    first_subject = torch.tensor([min(p) if p else int(n) for p, n in
                                  zip(subject_positions, lengths.tolist())])
    key = lengths * (width + 1) + first_subject
    for g_no, idx in enumerate(engine.groups_by(key)):
        n, skip = int(lengths[idx[0]]), int(first_subject[idx[0]])
        tokens = batch.tokens[idx, :n]
        noise = torch.zeros(S * len(idx), n, cfg.d_model)  # sample-major, as the reference rows
        for s in range(S):
            for g, i in enumerate(idx.tolist()):
                pos = [p for p in subject_positions[i] if p < n]
                noise[s * len(idx) + g, pos] = noise_scale * std * torch.randn(
                    len(pos), cfg.d_model, generator=generator)
        group = engine.prepare_group(runner, model, metric_fn, idx, tokens, tokens.repeat(S, 1),
                                     names_needed, reference_hooks=[(EMBED, _noise_hook(noise))])
        groups.append(group)
        clean_metric[idx] = group.source_metric
        corrupt_metric[idx] = group.reference_metric.view(S, len(idx)).mean(0)
        for r in restorations:
            if traced_at[r] is None:
                out[r][:, :skip, idx] = corrupt_metric[idx]
        # the restorations as data: each (state, window, layer) restores its window's states
        # at `pos`; all of them share the forwards
        for pos in range(skip, n):
            for state, window in restorations:
                wanted = traced_at[state, window]
                if wanted is not None and not any(pos in wanted[int(i)] for i in idx):
                    continue
                for layer in range(cfg.n_layers):
                    ws = window_layers(layer, window, cfg.n_layers)
                    copy = (min(ws), [(hook_name(w, state), None, pos) for w in ws])
                    plan.append(engine.Step(g_no, pos, copy, (state, window, layer)))

    for steps, values in engine.execute(runner, model, groups, plan, metric_fn,
                                        max_patches=max_patches, budget_bytes=budget_bytes,
                                        progress=progress, desc="causal trace"):
        index = groups[steps[0].group].index
        G = len(index) // S
        values = values.view(len(steps), S, G).mean(1)
        for step, row in zip(steps, values):
            state, window, layer = step.cell
            out[state, window][layer, step.past, index[:G]] = row
    for r, wanted in traced_at.items():  # a group's forwards cover its prompts' union
        if wanted is not None:
            keep = torch.zeros(width, n_prompts, dtype=torch.bool)
            for i, at in enumerate(wanted):
                keep[[p for p in at if p < width], i] = True
            out[r][:, ~keep] = math.nan
    return {kind: TraceResult(kind, windows[kind], out[state_of(kind), windows[kind]].clone(),
                              clean_metric, corrupt_metric, lengths, noise_scale, std, S,
                              int(seed)) for kind in kinds}


def average_indirect_effect(table: pd.DataFrame) -> pd.DataFrame:
    """AIE per (kind, layer, token class): mean over prompts of the indirect effect, averaged
    first within a prompt over its tokens of that class (ROME's middle-token averaging)."""
    per_prompt = (table.groupby(["kind", "layer", "token_class", "prompt_id"], observed=True)
                  ["indirect_effect"].mean().reset_index())
    return (per_prompt.groupby(["kind", "layer", "token_class"], observed=True)
            ["indirect_effect"].mean().reset_index()
            .rename(columns={"indirect_effect": "aie"}))


def peak_by_class(aie: pd.DataFrame) -> pd.DataFrame:
    """Peak AIE and its layer, per (kind, token class); MLP peaks over layers ≥ 1
    (`first_peak_layer`)."""
    eligible = aie[aie["layer"].to_numpy() >= aie["kind"].map(first_peak_layer).to_numpy()]
    idx = eligible.groupby(["kind", "token_class"])["aie"].idxmax().dropna()
    return aie.loc[idx].reset_index(drop=True).rename(columns={"aie": "peak_aie"})

"""Direct logit attribution (DLA): how much each component writes along the answer direction at
the last token, by layer (attention / MLP), by head, and by MLP neuron.

The final logits of a model are `(normalise(resid_final) ⊙ gain) @ W_U + b_U`, with
resid_final = embeddings + Σ_l attn_out_l + Σ_l mlp_out_l. Freezing the final norm's scale at
its value on resid_final (what TransformerLens's `cache.apply_ln_to_stack` does; with LayerNorm
each component is also centred), every component's DLA is `(component / scale) · direction`,
and the components plus the unembedding bias term sum to the metric. The direction carries the
final norm's gain (`models.readout`), so this is exact on the unprocessed bridge as well as in
compatibility mode (where the gain is folded into W_U): no folded copy of the weights needed.

Models that normalise each sublayer's output before adding it (Gemma 2/3: post-attention and
post-feedforward norms) have attention and MLP outputs that are linear in the heads and
neurons only with that norm's scale frozen too: head and neuron DLA multiply by its gain and
divide by its scale (hooks `blocks.L.ln1_post.hook_scale`, `ln2_post.hook_scale`).

Answer directions (`answer_direction`):
  cloze      W_U[:, answer] − W_U[:, counterfactual]; the metric logit_diff is linear in the
             logits, so the DLA sums to it exactly.
  yesno      `kind="log_odds"` (default): the metric s·(logsumexp_T − logsumexp_F) is nonlinear
             in the logits. The direction is its exact local gradient at the final logits, no
             backward pass needed: s·(Σ_{t∈T} softmax_T(t) W_U[:, t] − Σ_{f∈F} softmax_F(f)
             W_U[:, f]). For yes/no the DLA therefore sums to the first-order approximation of
             the log-odds at the final logits; the gap (`offset`, the difference of the
             within-set entropies) is reported with the sum check.
             `kind="logit_diff_sum"`: s·(Σ_T W_U[:, t] − Σ_F W_U[:, f]), exactly linear; the DLA
             then sums to the summed logit difference (the original study's first metric).

Models with final-logit soft-capping (Gemma-2: cfg.output_logits_soft_cap > 0) put a tanh
after the unembedding: the DLA sums to the metric of the logits before the cap
(`Decomposition.pre_cap_logits`, read from the unembedding's own output), which is what
directions are built from and what the sum check compares with; `soft_cap_note` says so.
Everything is read at each prompt's last real token with hooks that keep only that position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm import tqdm  # text bars: shown in the terminal log under papermill

from factcircuits.errors import UserError
from factcircuits.methods.evaluate import PreparedTask
from factcircuits.methods.hooks import FINAL_NORM_SCALE, PRE_CAP_LOGITS, hook_name, hook_names
from factcircuits.models import LoadedModel
from factcircuits.models.forward import capture_last
from factcircuits.models.readout import final_readout, post_norm
from factcircuits.results.parameter_declarations import BATCH_SIZE, choice, whole

DIRECTION_KINDS = ("auto", "logit_diff", "log_odds", "logit_diff_sum")
DIRECTION = choice("direction", "auto", "cloze: logit_diff; yes/no: log_odds (linearised) or "
                   "logit_diff_sum", DIRECTION_KINDS)
TOP_COMPONENTS = whole("top_components", 10, "heads and neurons listed by |DLA|", 1,
                       allowed="use a whole number of at least 1 (components listed)")


# --------------------------------------------------------------------------- directions
@dataclass
class AnswerDirection:
    kind: str  # "logit_diff" | "log_odds" | "logit_diff_sum"
    vectors: Float[Tensor, "n d_model"]  # in the normalised residual space (after the final norm)
    bias: Float[Tensor, " n"]  # unembedding-bias term along the direction
    target: Float[Tensor, " n"]  # the metric the direction stands for, at the final logits
    offset: Float[Tensor, " n"]  # target − (linear readout of the final logits); 0 when exact
    exact: bool  # True when the metric is linear in the logits

    @property
    def label(self) -> str:
        return {"logit_diff": "logit difference (answer − counterfactual)",
                "log_odds": "log-odds, linearised at the final logits",
                "logit_diff_sum": "summed logit difference (True set − False set)"}[self.kind]


def answer_direction(lm: LoadedModel, prepared: PreparedTask,
                     logits: Float[Tensor, "n_prompts vocab"], kind: str = "auto"
                     ) -> AnswerDirection:
    """The answer direction of each prompt of `prepared` given its pre-cap final logits
    (`Decomposition.pre_cap_logits`; the same as the final logits for models without
    soft-capping). See the module docstring for the three kinds. Only the answer tokens'
    columns of W_U are read, with the final norm's gain folded in."""
    if kind not in DIRECTION_KINDS:
        raise UserError(f"direction kind {kind!r}: use one of {', '.join(DIRECTION_KINDS)}")
    readout = final_readout(lm.model)
    logits = logits.float().cpu()
    if prepared.task == "cloze":
        if kind not in ("auto", "logit_diff"):
            raise UserError(f"direction kind {kind!r} is for yes/no; cloze uses 'logit_diff'")
        a, c = prepared.answer_ids.cpu(), prepared.cf_ids.cpu()
        vectors = (readout.columns(a) - readout.columns(c)).T
        target = prepared.metric(logits).float().cpu()
        bias = readout.bias_terms(a) - readout.bias_terms(c)
        return AnswerDirection("logit_diff", vectors, bias, target, torch.zeros(len(a)), True)
    sets = prepared.answer_sets
    t_ids, f_ids = torch.as_tensor(sets.true_ids), torch.as_tensor(sets.false_ids)
    signs = prepared.signs.float().cpu()
    if kind == "logit_diff_sum":
        grad_t = torch.ones(len(logits), len(t_ids))
        grad_f = torch.ones(len(logits), len(f_ids))
        target = signs * (logits[:, t_ids].sum(-1) - logits[:, f_ids].sum(-1))
        out_kind, exact = "logit_diff_sum", True
    elif kind in ("auto", "log_odds"):
        grad_t = logits[:, t_ids].softmax(-1)
        grad_f = logits[:, f_ids].softmax(-1)
        target = prepared.metric(logits).float().cpu()
        out_kind, exact = "log_odds", False
    else:
        raise UserError("direction kind 'logit_diff' is for cloze; yes/no uses 'log_odds' or "
                        "'logit_diff_sum'")
    cols_t, cols_f = readout.columns(t_ids), readout.columns(f_ids)
    vectors = signs[:, None] * (grad_t @ cols_t.T - grad_f @ cols_f.T)
    bias = signs * (grad_t @ readout.bias_terms(t_ids) - grad_f @ readout.bias_terms(f_ids))
    linear = signs * ((grad_t * logits[:, t_ids]).sum(-1) - (grad_f * logits[:, f_ids]).sum(-1))
    return AnswerDirection(out_kind, vectors, bias, target, target - linear, exact)


def soft_cap_note(lm: LoadedModel) -> str:
    """A sentence when the model soft-caps its final logits (the DLA then cannot sum), else ""."""
    cap = getattr(lm.model.cfg, "output_logits_soft_cap", -1.0) or -1.0
    if cap > 0:
        return (f"This model soft-caps its final logits (cap·tanh(logits/cap), cap = {cap:g}). "
                "The direct logit attributions below describe the logits before the cap: they "
                "sum to the metric computed from those, and the sum check compares with that "
                "pre-cap metric, not with the capped one.")
    return ""


# --------------------------------------------------------------------------- decomposition
@dataclass
class Decomposition:
    """The last-token residual stream of every prompt split into components."""
    embed: Float[Tensor, "n d_model"]  # blocks.0.hook_resid_pre
    attn: Float[Tensor, "n n_layers d_model"]  # hook_attn_out
    mlp: Float[Tensor, "n n_layers d_model"]  # hook_mlp_out
    scale: Float[Tensor, "n 1"]  # final norm scale
    logits: Float[Tensor, "n vocab"]  # final logits (what the model outputs)
    z: Float[Tensor, "n n_layers n_heads d_head"] | None = None  # hook_z (query heads)
    centre: bool = False  # LayerNorm-type final norm: centre components before scaling
    extra: dict = field(default_factory=dict)
    # logits before any final soft-cap (the DLA sums to these); None = `logits`
    pre_cap: Float[Tensor, "n vocab"] | None = None
    # Post-sublayer norms (Gemma 2/3), else None: scales [n, n_layers], gains [n_layers, d]
    attn_post_scale: Tensor | None = None
    mlp_post_scale: Tensor | None = None
    attn_post_gain: Tensor | None = None
    mlp_post_gain: Tensor | None = None

    @property
    def pre_cap_logits(self) -> Float[Tensor, "n vocab"]:
        return self.logits if self.pre_cap is None else self.pre_cap

    @property
    def n_layers(self) -> int:
        return self.attn.shape[1]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the frozen final norm to a stack whose first dim is the prompt."""
        if self.centre:
            x = x - x.mean(-1, keepdim=True)
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x / self.scale.reshape(shape)

    def accumulated(self) -> Float[Tensor, "n steps d_model"]:
        """[n, 2·n_layers + 1, d_model]: after the embeddings, then after each attention and
        each MLP sublayer (TransformerLens accumulated_resid, split at the mid points)."""
        steps = [self.embed]
        running = self.embed
        for layer in range(self.n_layers):
            running = running + self.attn[:, layer]
            steps.append(running)
            running = running + self.mlp[:, layer]
            steps.append(running)
        return torch.stack(steps, dim=1)


def decompose(lm: LoadedModel, prepared: PreparedTask, *, batch_size: int = BATCH_SIZE.default,
              heads: bool = True, progress: bool = False) -> Decomposition:
    """One batched pass over the clean prompts keeping the last-token components."""
    model = lm.model
    L = model.cfg.n_layers
    embed = hook_name(0, "resid_pre")
    kinds = ["attn_out", "mlp_out"] + (["z"] if heads else [])
    names = [embed, FINAL_NORM_SCALE] + [n for kind in kinds for n in hook_names(kind, range(L))]
    capped = final_readout(model).soft_cap is not None
    if capped:
        names.append(PRE_CAP_LOGITS)
    posts = {sub: [post_norm(model, ly, sub) for ly in range(L)] for sub in ("attn", "mlp")}
    has_posts = posts["attn"][0] is not None
    if has_posts:
        names += [found[1] for sub in posts for found in posts[sub]]
    values, logits = capture_last(model, prepared.clean_batch(lm.tokenizer), names, batch_size,
                                  progress, desc="decompose")

    def stack(kind):
        return torch.stack([values[name] for name in hook_names(kind, range(L))], 1)

    def post(sub):
        if not has_posts:
            return None, None
        scales = torch.stack([values[found[1]].reshape(-1) for found in posts[sub]], 1)
        return scales, torch.stack([found[0] for found in posts[sub]])

    (attn_scale, attn_gain), (mlp_scale, mlp_gain) = post("attn"), post("mlp")

    norm = str(getattr(model.cfg, "normalization_type", "RMS") or "RMS")
    return Decomposition(
        embed=values[embed], attn=stack("attn_out"), mlp=stack("mlp_out"),
        scale=values[FINAL_NORM_SCALE].reshape(-1, 1), logits=logits,
        z=stack("z") if heads else None,
        centre=norm.startswith("LN"),
        pre_cap=values[PRE_CAP_LOGITS] if capped else None,
        attn_post_scale=attn_scale, attn_post_gain=attn_gain,
        mlp_post_scale=mlp_scale, mlp_post_gain=mlp_gain,
    )


def _project(dec: Decomposition, x: torch.Tensor, direction: AnswerDirection) -> torch.Tensor:
    """x [n, ..., d_model] → [n, ...] projected on each prompt's direction after the norm."""
    v = direction.vectors
    return torch.einsum("n...d,nd->n...", dec.normalise(x), v)


def head_outputs(lm: LoadedModel, z: Float[Tensor, "n n_heads d_head"], layer: int
                 ) -> Float[Tensor, "n n_heads d_model"]:
    """Per-head outputs of `layer` from its hook_z (query heads; with grouped-query attention
    W_O is indexed by query head as well)."""
    W_O = lm.model.blocks[layer].attn.W_O.detach().float().cpu()  # [n_heads, d_head, d_model]
    return torch.einsum("nhd,hdm->nhm", z, W_O)


# --------------------------------------------------------------------------- DLA tables
def layer_dla(dec: Decomposition, direction: AnswerDirection) -> pd.DataFrame:
    """Tidy DLA per prompt × layer × component (attn / mlp), plus the embeddings (layer −1)."""
    attn = _project(dec, dec.attn, direction)  # [n, L]
    mlp = _project(dec, dec.mlp, direction)
    embed = _project(dec, dec.embed, direction)
    n, L = attn.shape
    rows = [{"prompt": i, "layer": -1, "component": "embed", "dla": float(embed[i])}
            for i in range(n)]
    for i in range(n):
        for ly in range(L):
            rows.append({"prompt": i, "layer": ly, "component": "attn", "dla": float(attn[i, ly])})
            rows.append({"prompt": i, "layer": ly, "component": "mlp", "dla": float(mlp[i, ly])})
    return pd.DataFrame(rows)


def head_dla(lm: LoadedModel, dec: Decomposition, direction: AnswerDirection,
             progress: bool = False) -> pd.DataFrame:
    """Tidy DLA per prompt × layer × head; `attn_bias` rows (head = -1) hold each layer's
    attention output not written by any head (b_O; zero for bias-free models). With a
    post-attention norm (Gemma 2/3) each head's output goes through it with its scale frozen."""
    if dec.z is None:
        raise UserError("head DLA needs the decomposition with heads=True")
    frames = []
    for ly in tqdm(range(dec.n_layers), desc="head DLA", disable=not progress, leave=False):
        out = head_outputs(lm, dec.z[:, ly], ly)  # [n, H, d]
        if dec.attn_post_scale is not None:
            out = out * dec.attn_post_gain[ly] / dec.attn_post_scale[:, ly, None, None]
        dla = _project(dec, out, direction)  # [n, H]
        rest = _project(dec, dec.attn[:, ly] - out.sum(1), direction)  # [n]
        n, H = dla.shape
        frame = pd.DataFrame({"prompt": torch.arange(n).repeat_interleave(H).numpy(),
                              "layer": ly, "head": torch.arange(H).repeat(n).numpy(),
                              "dla": dla.reshape(-1).numpy()})
        bias = pd.DataFrame({"prompt": range(n), "layer": ly, "head": -1, "dla": rest.numpy()})
        frames += [frame, bias]
    return pd.concat(frames, ignore_index=True)


@torch.no_grad()
def neuron_dla(lm: LoadedModel, prepared: PreparedTask, layer: int,
               direction: AnswerDirection, *, batch_size: int = BATCH_SIZE.default,
               progress: bool = False) -> pd.DataFrame:
    """DLA of every MLP neuron of `layer`, per prompt: post-activation × (W_out row ·
    direction) / final scale (and, with a post-feedforward norm as in Gemma 2/3, × its gain /
    its frozen scale). Tidy [prompt, layer, neuron, activation, dla]; the `neuron = -1` rows
    hold b_out's share (zero for bias-free models)."""
    model = lm.model
    post_found = post_norm(model, layer, "mlp")
    names = [hook_name(layer, "mlp_post"), FINAL_NORM_SCALE]
    if post_found is not None:
        names.append(post_found[1])
    values, _ = capture_last(model, prepared.clean_batch(lm.tokenizer), names,
                             batch_size, progress, desc=f"neurons L{layer}")
    post = values[hook_name(layer, "mlp_post")]  # [n, d_mlp]
    scale = values[FINAL_NORM_SCALE].reshape(-1, 1)
    W_out = model.blocks[layer].mlp.W_out.detach().float().cpu()  # [d_mlp, d_model]
    v = direction.vectors
    if post_found is not None:
        v = v * post_found[0]
        scale = scale * values[post_found[1]].reshape(-1, 1)
    norm = str(getattr(model.cfg, "normalization_type", "RMS") or "RMS")
    if norm.startswith("LN"):
        W_out = W_out - W_out.mean(-1, keepdim=True)
    readout = v @ W_out.T  # [n, d_mlp]
    dla = post * readout / scale
    n, m = dla.shape
    frame = pd.DataFrame({"prompt": torch.arange(n).repeat_interleave(m).numpy(), "layer": layer,
                          "neuron": torch.arange(m).repeat(n).numpy(),
                          "activation": post.reshape(-1).numpy(), "dla": dla.reshape(-1).numpy()})
    b_out = getattr(model.blocks[layer].mlp, "b_out", None)
    if b_out is not None:
        b = b_out.detach().float().cpu()
        if norm.startswith("LN"):
            b = b - b.mean()
        bias = (v @ b) / scale.flatten()
        frame = pd.concat([frame, pd.DataFrame({"prompt": range(n), "layer": layer,
                                                "neuron": -1, "activation": 1.0,
                                                "dla": bias.numpy()})], ignore_index=True)
    return frame


def sum_check(dec: Decomposition, direction: AnswerDirection) -> pd.DataFrame:
    """Per prompt: the metric, the sum of the components' DLA + unembedding-bias term, and
    their difference. For exact directions `error` must be ~0 (≤ 1e-3); for the linearised
    log-odds the gap between metric and first-order readout is `offset` and `error` checks
    components + bias + offset = metric."""
    parts = (_project(dec, dec.embed, direction) + _project(dec, dec.attn, direction).sum(1)
             + _project(dec, dec.mlp, direction).sum(1))
    total = parts + direction.bias
    return pd.DataFrame({
        "prompt": range(len(total)), "metric": direction.target.numpy(),
        "components_plus_bias": total.numpy(), "linearisation_offset": direction.offset.numpy(),
        "error": (direction.target - total - direction.offset).numpy(),
    })


# --------------------------------------------------------------------------- DLA by source
SOURCES = ("subject", "relation", "last", "other")  # "other": BOS and any format prefix


def source_codes(positions, width: int) -> Int[Tensor, "n width"]:
    """Index into SOURCES of every key position of every prompt (`positions`:
    `positions.task_positions`); padding counts as "other" (no query attends to it)."""
    codes = torch.full((len(positions), width), SOURCES.index("other"), dtype=torch.long)
    for row, pos in enumerate(positions):
        for role in ("relation", "subject"):
            codes[row, [i for i in getattr(pos, role) if i < width]] = SOURCES.index(role)
        codes[row, pos.last] = SOURCES.index("last")
    return codes


@torch.inference_mode()
def capture_head_inputs(model, batch, batch_size: int = BATCH_SIZE.default, progress: bool = False
                        ) -> tuple[Float[Tensor, "n L H pos"], Float[Tensor, "n L pos kv d"]]:
    """Every layer's attention pattern from each prompt's last token to every key
    (hook_pattern at the last query) and its values (hook_v; key/value heads with
    grouped-query attention), zero-padded to the batch's width (float32, CPU)."""
    from factcircuits.models.forward import final_logits

    L, width = model.cfg.n_layers, batch.tokens.shape[1]
    sub_batches: list[dict[str, list]] = []

    def hooks_for(part, last, mask):
        got: dict[str, list] = {"pattern": [None] * L, "v": [None] * L}
        sub_batches.append(got)

        def keep_pattern(layer):
            def hook(act, hook):  # [b, heads, query, key]
                rows = torch.arange(act.shape[0], device=act.device)
                got["pattern"][layer] = act[rows, :, last.to(act.device)].float().cpu()
            return hook

        def keep_v(layer):
            def hook(act, hook):  # [b, pos, kv_heads, d_head]
                got["v"][layer] = act.float().cpu()
            return hook
        return ([(hook_name(ly, "pattern"), keep_pattern(ly)) for ly in range(L)]
                + [(f"blocks.{ly}.attn.hook_v", keep_v(ly)) for ly in range(L)])

    final_logits(model, batch, batch_size, progress, hooks_for, desc="head sources")
    pad = torch.nn.functional.pad  # sub-batches are trimmed to their own width
    patterns = [pad(torch.stack(g["pattern"], 1), (0, width - g["pattern"][0].shape[-1]))
                for g in sub_batches]
    values = [pad(torch.stack(g["v"], 1), (0, 0, 0, 0, 0, width - g["v"][0].shape[1]))
              for g in sub_batches]
    return torch.cat(patterns), torch.cat(values)


def head_source_dla(lm: LoadedModel, prepared: PreparedTask, dec: Decomposition,
                    direction: AnswerDirection, *, batch_size: int = BATCH_SIZE.default,
                    progress: bool = False, inputs: tuple[Tensor, Tensor] | None = None
                    ) -> pd.DataFrame:
    """Each head's DLA split by the source position its last-token output reads (Chughtai et
    al. 2024): DLA_h = Σ_s A_h[last, s] · (v_s W_O^h) · u, with the conventions of `head_dla`
    (post-attention norm scale and final scale frozen, the same direction), summed over the
    positions of each of SOURCES. Tidy [prompt, layer, head, source, dla]; per prompt and
    head the sources add up to `head_dla`'s value (b_O stays in its `attn_bias` row).
    `inputs`: `capture_head_inputs`' patterns and values of the same prompts, when the caller
    has them already (else one forward pass captures them)."""
    from factcircuits.methods.positions import task_positions

    model = lm.model
    batch = prepared.clean_batch(lm.tokenizer)
    pattern, v = inputs if inputs is not None else capture_head_inputs(model, batch,
                                                                        batch_size, progress)
    codes = source_codes(task_positions(prepared, lm.tokenizer), pattern.shape[-1])
    one_hot = torch.nn.functional.one_hot(codes, len(SOURCES)).float()  # [n, pos, sources]
    n, L, H, _ = pattern.shape
    group = H // v.shape[3]  # query heads per key/value head (grouped-query attention)
    frames = []
    for ly in range(L):
        values = v[:, ly].repeat_interleave(group, dim=2)  # [n, pos, H, d_head]
        parts = pattern[:, ly, :, :, None] * values.permute(0, 2, 1, 3)  # [n, H, pos, d_head]
        W_O = model.blocks[ly].attn.W_O.detach().float().cpu()  # [H, d_head, d_model]
        out = torch.einsum("nhpd,hdm->nhpm", parts, W_O)
        if dec.attn_post_scale is not None:
            out = out * dec.attn_post_gain[ly] / dec.attn_post_scale[:, ly, None, None, None]
        dla = torch.einsum("nhp,npc->nhc", _project(dec, out, direction), one_hot)
        frames.append(pd.DataFrame({
            "prompt": torch.arange(n).repeat_interleave(H * len(SOURCES)).numpy(),
            "layer": ly, "head": torch.arange(H).repeat_interleave(len(SOURCES)).repeat(n).numpy(),
            "source": list(SOURCES) * (n * H), "dla": dla.reshape(-1).numpy()}))
    return pd.concat(frames, ignore_index=True)


def source_split(sources: pd.DataFrame, heads: pd.DataFrame) -> pd.DataFrame:
    """Mean DLA per source of each head in `heads` (layer, head rows, e.g. `top_heads`), with
    the head's mean DLA and each source's share of it; rows in the order of `heads`."""
    means = (sources.groupby(["layer", "head", "source"])["dla"].mean()
             .unstack("source").reindex(columns=list(SOURCES)))
    rows = []
    for layer, head in zip(heads["layer"], heads["head"]):
        part = means.loc[(int(layer), int(head))]
        total = float(part.sum())
        rows.append({"layer": int(layer), "head": int(head), "dla": total,
                     **{s: float(part[s]) for s in SOURCES},
                     **{f"{s}_share": float(part[s]) / total if total else float("nan")
                        for s in SOURCES}})
    return pd.DataFrame(rows)


def source_figure(split: pd.DataFrame, title: str = "Top heads' direct logit attribution by "
                  "the source position they read"):
    """Stacked bars: each head's mean DLA split into the sources it reads."""
    import plotly.graph_objects as go

    labels = [f"L{int(r.layer)}H{int(r.head)}" for r in split.itertuples()]
    colors = {"subject": "#d62728", "relation": "#1f77b4", "last": "#2ca02c",
              "other": "#7f7f7f"}
    fig = go.Figure([go.Bar(x=labels, y=split[s], name=s, marker_color=colors[s])
                     for s in SOURCES])
    fig.update_layout(barmode="relative", title=title, xaxis_title="head",
                      yaxis_title="mean DLA from that source")
    return fig


def summarise_layers(table: pd.DataFrame) -> pd.DataFrame:
    """Mean DLA over prompts per layer × component (from `layer_dla`)."""
    return (table.groupby(["layer", "component"], as_index=False)["dla"].mean()
            .sort_values(["layer", "component"]).reset_index(drop=True))


def top_heads(table: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """The k heads with the largest mean |DLA| over prompts (from `head_dla`)."""
    heads = table[table["head"] >= 0].groupby(["layer", "head"], as_index=False)["dla"].mean()
    heads["abs_dla"] = heads["dla"].abs()
    return heads.sort_values("abs_dla", ascending=False).head(k).reset_index(drop=True)


def top_neurons(table: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    neurons = table[table["neuron"] >= 0].groupby(["layer", "neuron"], as_index=False)[
        ["dla", "activation"]].mean()
    neurons["abs_dla"] = neurons["dla"].abs()
    return neurons.sort_values("abs_dla", ascending=False).head(k).reset_index(drop=True)


def top_components(layer_table: pd.DataFrame, head_table: pd.DataFrame | None = None,
                   k: int = 5) -> list[tuple]:
    """The k components with the largest mean |DLA|, as ("attn", l) / ("mlp", l) /
    ("head", l, h) tuples (heads only when a head table is given; then attention layers are
    represented by their heads)."""
    means = summarise_layers(layer_table)
    means = means[means["component"] != "embed"]
    items = [((row.component, int(row.layer)), row.dla) for row in means.itertuples()]
    if head_table is not None:
        heads = head_table[head_table["head"] >= 0].groupby(["layer", "head"])["dla"].mean()
        items += [(("head", int(ly), int(h)), v) for (ly, h), v in heads.items()]
    items.sort(key=lambda kv: -abs(kv[1]))
    return [c for c, _ in items[:k]]


@dataclass
class HeadAttribution:
    """Decomposition → answer direction → DLA by layer and by head: what the attribution,
    ablation and attention analyses all start from."""
    decomposition: Decomposition
    direction: AnswerDirection
    layers: pd.DataFrame  # layer_dla
    heads: pd.DataFrame  # head_dla


def attribute_heads(lm: LoadedModel, prepared: PreparedTask, *, kind: str = "auto",
                    batch_size: int = BATCH_SIZE.default, progress: bool = False
                    ) -> HeadAttribution:
    """Decompose the clean prompts' last token, build the answer direction of `kind` and the
    tidy DLA tables by layer and by head."""
    dec = decompose(lm, prepared, batch_size=batch_size, progress=progress)
    direction = answer_direction(lm, prepared, dec.pre_cap_logits, kind)
    return HeadAttribution(dec, direction, layer_dla(dec, direction),
                           head_dla(lm, dec, direction, progress=progress))


# --------------------------------------------------------------------------- figures
def layer_figure(table: pd.DataFrame, title: str = "Direct logit attribution by layer"):
    import plotly.express as px

    means = summarise_layers(table[table["component"] != "embed"])
    fig = px.bar(means, x="layer", y="dla", color="component", barmode="group", title=title,
                 labels={"dla": "mean DLA"})
    return fig


def head_heatmap(table: pd.DataFrame, title: str = "Direct logit attribution by head"):
    import plotly.express as px

    heads = table[table["head"] >= 0].groupby(["layer", "head"])["dla"].mean().unstack("head")
    lim = float(heads.abs().max().max()) or 1.0
    fig = px.imshow(heads, color_continuous_scale="RdBu", zmin=-lim, zmax=lim, aspect="auto",
                    labels={"x": "head", "y": "layer", "color": "mean DLA"}, title=title,
                    origin="lower")
    return fig

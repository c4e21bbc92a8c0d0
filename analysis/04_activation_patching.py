# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Activation patching: which states carry the fact?
#
# Each prompt is paired with a counterfactual prompt (the subject swapped for another subject
# of the same relation, with a different answer). We run the counterfactual ("corrupted")
# prompt and paste in one activation from the clean run: the residual stream entering a layer,
# an attention output or an MLP output at one position, or one attention head's output. The
# **normalized effect** (patched − corrupted)/(clean − corrupted) of the task metric says how
# much of the clean answer that one state restores: 0 = still the corrupted answer, 1 = fully
# the clean one [@zhang2023patching; @heimersheim2024patching]. Class averages normalize the
# mean metric, so a pair with a small clean−corrupted gap cannot dominate.
#
# That is **denoising**: it asks whether one state is *sufficient* to bring the answer back.
# **Noising** asks the converse, whether it is *necessary*: run the clean prompt and paste in
# one activation from the counterfactual run; the share of the gap lost, (clean − patched)/
# (clean − corrupted), is 1 when corrupting that state alone destroys the answer. And one
# counterfactual per prompt leaves open how much the maps depend on the partner, so the
# denoising maps are also computed with several counterfactual prompts per prompt.

# %% tags=["parameters"]
model = "default"  # 'default' (the embedded SmolLM2), 'tiny', a hub name or a local folder
dataset = ""  # empty: the default dataset of the task (paris-cloze / paris-yesno)
task = "cloze"  # cloze recall or yes/no verification
prompt_format = "raw"  # raw, chat (the tokenizer's chat template) or fewshot
answer_map = "yesno_default"  # yes/no: the words counted as yes and as no
device = "auto"  # auto, cpu, cuda, cuda:N or mps
dtype = ""  # empty: the device's default; float32, bfloat16 or float16
batch_size = 16  # prompts per forward pass
n_prompts = 0  # 0: every prompt
seed = 0  # noise draws, bootstrap resamples, samples and splits
known = "top1"  # top1: the answer is the top token; pairwise: answer's logit > counterfactual's
per_relation = 0  # > 0: at most this many known prompts per relation (seeded sample)
relation = ""  # one relation of the dataset (empty: every relation)
prepend_bos = "auto"  # BOS token: auto (as the model's tokenizer does), on or off
run_dir = "."
max_patches = "auto"  # patched copies stacked per forward ("auto": memory cap)
heads_by_position = False  # also patch every head at every position (n_heads × slower)
scan_top_k = 10  # attribution patching: cells per prompt it proposes for exact patching
n_counterfactuals = 3  # counterfactuals per prompt: same relation, other answer, equal length first

# %% tags=["remove-input"]
from IPython.display import Markdown, display

from factcircuits.run.session import start_analysis

session, prepared, note = start_analysis(globals())

# %%
import plotly.express as px

from factcircuits.chapters import activation_patching as chapter
from factcircuits.methods import atp_checks as AC
from factcircuits.methods import by_relation as R
from factcircuits.methods import counterfactual_spread as CS
from factcircuits.methods import necessity as NS
from factcircuits.methods import patching as P
from factcircuits.methods.positions import CLASS_TITLES
from factcircuits.methods.uncertainty import layer_with_range, with_interval
from factcircuits.results.store import Results
from factcircuits.results.summary import Options
from factcircuits.results.wording import class_labels
from factcircuits.run.display import diverging_limit

found = chapter.summarise(session.lm, prepared, options=Options.of(chapter.METHOD, globals()))
pairs, dropped, summary, atp, headline = (found.pairs, found.dropped, found.patching, found.atp,
                                          found.headline)
results = summary.results
display(Markdown(
    f"Analysed: {note}. Of these, **{len(pairs.prompts)}** have a counterfactual prompt of "
    f"the same token length and are patched; **{len(dropped)}** are left out, because "
    "patching compares the same positions in both runs and a different token count would "
    "shift every position after the subject."))
if len(dropped):
    display(dropped[["prompt", "corrupted_prompt", "reason"]].style.hide(axis="index"))
if results:
    display(Markdown(
        f"Mean {prepared.main_metric}: clean **{headline.clean_metric:.2f}**, corrupted "
        f"**{headline.corrupted_metric:.2f}** over {len(pairs.prompts)} pairs."))
    if summary.caveat:
        display(Markdown(f"**Caveat.** {summary.caveat}"))
else:
    display(Markdown("No prompt pair can be patched, so this notebook shows nothing further."))

# %% [markdown]
# ## Layer × token class
#
# Every pair's positions are labelled with ROME's token classes (subject tokens, the tokens
# after it, the last token); the heatmaps average the effect over pairs and over positions of
# a class.

# %%
for component in results:
    grid = summary.class_grid(component)
    named = class_labels(summary.positions, CLASS_TITLES, grid.columns)  # 'last token (n=4)'
    lim = diverging_limit(grid)  # symmetric around 0, covering every value (at least ±1)
    fig = px.imshow(grid.T, aspect="auto", color_continuous_scale="RdBu", zmin=-lim, zmax=lim,
                    labels={"x": "layer", "y": "token class", "color": "normalized"},
                    title=f"Patching the {P.COMPONENT_TITLES[component]}: normalized effect"
                          f"<br><sup>n: pairs with a token of that class, of "
                          f"{len(pairs.prompts)} patched</sup>")
    fig.update_yaxes(ticktext=[named.get(c, c) for c in grid.columns],
                     tickvals=list(grid.columns))
    fig.show()

# %% [markdown]
# ## Necessary or sufficient: noising beside denoising
#
# Left, the share of the gap that restoring one state restores (denoising, as above); right,
# the share that corrupting it in the clean run loses (noising). A state that scores high on
# both carries the answer on its own and nothing else does; high on the left only, it can
# carry the answer but another path can too; high on the right only, the answer needs it but
# it does not suffice.

# %%
if results:
    for component in results:
        stack, classes = found.both_ways(component)
        lim = diverging_limit(stack)
        fig = px.imshow(stack, facet_col=0, aspect="auto", color_continuous_scale="RdBu",
                        zmin=-lim, zmax=lim, labels={"x": "layer", "y": "token class",
                                                     "color": "share"},
                        title=f"{P.COMPONENT_TITLES[component]}: restored by denoising (left), "
                              "lost by noising (right)")
        for i, name in enumerate(["denoising: share restored", "noising: share lost"]):
            fig.layout.annotations[i].text = name
        fig.update_yaxes(ticktext=[CLASS_TITLES.get(c, c) for c in classes],
                         tickvals=list(range(len(classes))))
        fig.show()
    states = summary.states
    display(chapter.necessity_view(states).style.hide(axis="index"))
    noising_layer = layer_with_range(headline.noising_resid_pre_peak_layer,
                                     headline.noising_resid_pre_peak_layer_range)
    noising_peak = with_interval(headline.noising_resid_pre_peak,
                                 headline.noising_resid_pre_peak_ci)
    noising_head = with_interval(headline.noising_top_head_effect,
                                 headline.noising_top_head_effect_ci)
    display(Markdown(
        "At each located peak of denoising, the same cell noised: "
        + "; ".join(f"{P.COMPONENT_TITLES[r.component]} at the "
                    f"{CLASS_TITLES.get(r.token_class, r.token_class)}, layer {r.layer}: "
                    f"restores {r.restored:.2f} (95% CI {r.restored_low:.2f} to "
                    f"{r.restored_high:.2f}), its corruption loses {r.lost:.2f} (95% CI "
                    f"{r.lost_low:.2f} to {r.lost_high:.2f}): **{r.verdict}**"
                    for r in states.itertuples())
        + f". A state is called sufficient (necessary) when the 95% interval of the share "
        f"restored (lost) lies above {NS.BAR}. Noising's own peaks: the residual stream "
        f"loses most at the {CLASS_TITLES.get(headline.noising_resid_pre_peak_class, '')} "
        f"({noising_layer}, {noising_peak}); the strongest single head is "
        f"L{headline.noising_top_head_layer}H{headline.noising_top_head} ({noising_head} of the "
        "gap lost)."))

# %% [markdown]
# ## Several counterfactuals per prompt
#
# Each prompt is paired with up to `n_counterfactuals` counterfactual prompts: the dataset's
# own (draw 0) and other subjects of its relation with a different answer, equal token length
# first (seeded). Each draw is patched (denoising) on its own equal-length pairs, with the
# logit difference taken between the two prompts' answers; the lines are the draws, so their
# spread is how much the map depends on the counterfactual (and on which prompts have an
# equal-length partner in that draw).

# %%
spread = summary.spread
if results:
    fig = px.line(found.draws_line("mlp_out", "subject_last"), x="layer", y="normalized",
                  color="draw", markers=True,
                  title="MLP output at the last subject token, one line per counterfactual draw"
                        f"<br><sup>pairs per draw: {headline.counterfactual_draw_pairs}</sup>",
                  labels={"normalized": "share restored"})
    fig.show()
    display(found.peak_layers_by_draw)
    display(Markdown(" ".join(filter(None, [
        CS.sensitivity_sentence(spread, "mlp_out_subject_last",
                                "the MLP output at the last subject token (layers ≥ 1)"),
        CS.sensitivity_sentence(spread, "resid_pre", "the residual stream")]))
        or "Only one counterfactual draw has equal-length pairs, so nothing is compared."))

# %% [markdown]
# ## One example, position by position
#
# The same three patchings for the first pair, with its own tokens on the position axis.

# %%
if results:
    ex = 0
    display(Markdown(f"Clean: `{pairs.prompts[ex]!r}` → corrupted: "
                     f"`{pairs.corrupted_prompts[ex]!r}`"))
    for component in results:
        z, ex_labels = found.example_grid(component, ex)
        lim = diverging_limit(z)
        fig = px.imshow(z, aspect="auto", color_continuous_scale="RdBu", zmin=-lim, zmax=lim,
                        labels={"x": "layer", "y": "position", "color": "normalized"},
                        title=f"{P.COMPONENT_TITLES[component]}, example {ex}")
        fig.update_yaxes(ticktext=ex_labels, tickvals=list(range(len(z))))
        fig.show()

# %% [markdown]
# ## Attention heads
#
# Each head's output (all positions at once) pasted from the clean run.

# %%
if results:
    head_grid = found.head_grid
    lim = diverging_limit(head_grid)
    fig = px.imshow(head_grid, aspect="auto", color_continuous_scale="RdBu", zmin=-lim, zmax=lim,
                    labels={"x": "head", "y": "layer", "color": "normalized"},
                    title="Per-head patching (all positions): normalized effect")
    fig.show()
    display(summary.top_heads.style.hide(axis="index"))

# %% [markdown]
# ## Where the effect peaks

# %%
if results:
    display(summary.peaks.style.hide(axis="index"))
    handover = summary.handover
    display(Markdown(
        "In the residual stream the clean answer is carried by the subject tokens first and by "
        "the last token later; the last token's effect first reaches the subject tokens' at "
        + (f"layer **{handover}**." if handover is not None else "no layer.")))
    head_effect = with_interval(headline.top_head_effect, headline.top_head_effect_ci)
    display(Markdown(
        f"The residual stream carries the most at the "
        f"**{CLASS_TITLES[found.peak_class('resid_pre')]}** "
        f"({found.peak_text('resid_pre')}). MLP outputs peak at the "
        f"{CLASS_TITLES[found.peak_class('mlp_out')]} ({found.peak_text('mlp_out')}); attention "
        f"outputs at the {CLASS_TITLES[found.peak_class('attn_out')]} "
        f"({found.peak_text('attn_out')}). The strongest "
        f"single head is L{headline.top_head_layer}H{headline.top_head} ({head_effect}). "
        f"Intervals: 95% bootstrap over the {len(pairs.prompts)} pairs; layer ranges hold the "
        "peak in 95% of resamples."))

# %% [markdown]
# ## By relation
#
# Patching the MLP output at the last subject token, relation by relation: where the
# normalized effect peaks, with the range of layers holding the peak in 95% of resamples.

# %%
if summary.by_relation is not None:
    display(Markdown(R.relation_peaks_markdown(
        summary.by_relation, headline.mlp_out_subject_last_peak_layer, "Activation patching")))
    display(summary.by_relation.style.hide(axis="index").format(precision=3))
else:
    display(Markdown("The patched pairs come from one relation."))

# %% [markdown]
# ## A fast scan: attribution patching (AtP)
#
# Exact patching runs the model once per cell. **Attribution patching** [@nanda2023atp;
# @kramar2024atpstar] estimates every cell at once from one clean forward and one corrupted
# forward and
# backward: the effect of pasting the clean activation is approximated to first order as
# (clean − corrupted activation) · ∂metric/∂activation on the corrupted run. The same pass
# gives the residual stream, attention and MLP outputs at every (layer, position) and every
# head at every position. The linear estimate is known to fail where attention **saturates**:
# a patched state that moves a query or key can switch an attention pattern on or off, which
# the gradient at the corrupted run cannot see. **AtP\*** [@kramar2024atpstar] recomputes the
# attention pattern exactly where the patched state is first read and linearises only after
# it; here it is applied to the residual stream, attention and MLP outputs (head outputs keep
# plain AtP, and AtP\*'s second fix for cancelling paths, GradDrop, is not applied). Below the
# scan is checked against the exact grids above and its top proposals are patched exactly.

# %%
if atp:
    display(atp.agreement.style.hide(axis="index").format(precision=3))
    resid_atp, resid_star = atp.residual_atp, atp.residual_atp_star
    display(Markdown(
        f"The scan took **{headline.atp_seconds:.1f} s** for all four grids; the exact "
        f"patching above took **{headline.exact_patching_seconds:.1f} s**. Over the "
        f"{resid_atp.n_cells} residual-stream cells that patching can change, AtP's "
        f"rank correlation with exact patching is **{resid_atp.spearman:.2f}** "
        f"(per-prompt median {resid_atp.spearman_median:.2f}; "
        f"AtP\\* {resid_star.spearman:.2f}), and on average "
        f"**{resid_atp.recall_top5_in_top10:.0%}** of each prompt's five largest exact effects "
        f"are among AtP's ten largest estimates (AtP\\* "
        f"{resid_star.recall_top5_in_top10:.0%}); read that share "
        f"next to the ties: on average {resid_atp.exact_near_top5:.0f} residual cells per "
        "prompt have an exact effect within 10% of its fifth largest, so which five are the top "
        "is largely arbitrary there."))

# %% [markdown]
# ### Estimate against exact effect, cell by cell

# %%
if atp:
    AC.cells_figure(atp.cells).show()
    worst = atp.worst_layer
    atp_error, star_error = atp.mean_abs_error
    display(Markdown(
        "Effects here are fractions of the clean−corrupted gap, as in the heatmaps above. "
        f"AtP errs most on the residual stream at layer **{worst.layer}** (mean "
        f"|error| {worst.atp_abs_error:.2f} against a mean |exact effect| of "
        f"{worst.exact_abs:.2f}; AtP\\* {worst.atp_star_abs_error:.2f}). Across all "
        f"layers the mean |error| is {atp_error:.2f} for AtP and {star_error:.2f} for AtP\\*: "
        + (f"recomputing the first attention pattern that reads the patched state removes "
           f"{atp.star_error_removed:.0%} of the error, so part of it is that pattern "
           "saturating." if atp.saturation_explains_part else
           "recomputing the first attention pattern that reads the patched state changes it "
           f"by {atp.star_error_change:+.0%}, so the error lies further on (later "
           "attention layers, the MLPs, the final softmax), not in that pattern.")))

# %% [markdown]
# ### Heads × positions: the scan's proposals, patched exactly
#
# Patching every head at every position exactly costs n_heads times the residual grid, so
# the notebook patches only the cells the scan ranks highest for each prompt.

# %%
if atp:
    AC.proposals_figure(atp.proposals, found.gap, f"Top {scan_top_k} head × position cells per "
                        "prompt").show()
    best = found.best_proposal()
    display(Markdown(
        f"Of the {atp.n_proposals_checked} proposed head × position cells, "
        f"**{atp.proposals_same_sign:.0%}** have an exact effect of the estimate's sign, and "
        f"estimate and exact effect rank-correlate at {atp.proposals_spearman:.2f}. The "
        f"largest exact effect among them is L{best.layer}H{best.head} at position {best.pos} "
        f"of prompt {best.prompt_id} ({best.exact:.2f} of the clean−corrupted gap; estimated "
        f"{best.estimate:.2f})."))

# %% tags=["remove-cell"]
found.save(Results(run_dir, chapter.METHOD))

"""What a run's headline and result files say, read by the findings and their checks: the
notebooks' names, the published reference points, and the few readings several sentences
need (where restoring MLPs at the subject peaks, where subject knockout hurts most)."""

from __future__ import annotations

from factcircuits.report.evidence import RunEvidence, peak_row

TRACING, PATCHING = "05_causal_tracing", "04_activation_patching"
TASK, LENS, DLA, KNOCKOUT, ATTENTION = ("01_task_check", "02_logit_lens", "03_attribution",
                                        "06_ablation_knockout", "07_attention_patterns")



# Published reference points (typed once here, with their source; everything else is computed).
ORIGINAL_STUDY = {"model": "google/gemma-2b-it", "n_layers": 18, "mlp_share": 0.70,
                  "peak_layer": 13, "peak_sublayer": "mlp"}  # the study this project extends
ROME = {"model": "GPT-2 XL", "n_layers": 48, "mlp_aie": 0.066, "attn_aie": 0.016,
        "noise_samples": 10}  # Meng et al. 2022, causal tracing at the last subject token

# Patching layer 0's MLP at the subject restores the subject's token identity (the corrupted
# prompt has other subject tokens), not a stored fact: a peak there is named, not matched.
LAYER0_MLP = ("the layer-0 MLP acts as part of the token embedding, so this peak restores the "
              "subject's identity rather than a stored attribute")


def tracing_window(ev: RunEvidence, layer: int) -> tuple[int, int]:
    """First and last layer restored together around `layer` (ROME's window, clipped)."""
    window = int(ev.number(TRACING, "window") or 1)
    last_layer = (ev.n_layers or layer + window) - 1
    return max(0, layer - window // 2), min(last_layer, layer - (-window // 2) - 1)


def head_label(layer, head) -> str:
    return f"L{int(layer)}H{int(head)}"


# ------------------------------------------------------------------ the evidence, by question
def mlp_at_subject(ev: RunEvidence) -> dict:
    """Where restoring MLP outputs at the last subject token matters most, by method."""
    out = {}
    if ev.number(TRACING, "mlp_subject_last_peak_layer") is not None:
        out["tracing"] = (ev.number(TRACING, "mlp_subject_last_peak_layer"),
                          ev.number(TRACING, "mlp_subject_last_peak_aie"))
    if ev.number(PATCHING, "mlp_out_subject_last_peak_layer") is not None:
        out["patching"] = (int(ev.number(PATCHING, "mlp_out_subject_last_peak_layer")),
                           float(ev.number(PATCHING, "mlp_out_subject_last_peak")))
        return out
    row = peak_row(ev.table(PATCHING, "patching_by_class"), "normalized",
                   component="mlp_out", token_class="subject_last")
    if row is not None:  # runs recorded before the headline held it
        out["patching"] = (int(row["layer"]), float(row["normalized"]))
    return out


def subject_knockout(ev: RunEvidence) -> dict | None:
    table = ev.table(KNOCKOUT, "knockout_summary")
    if table is None or "relative_p_change" not in table.columns:
        return None
    part = table[table["role"] == "subject"].dropna(subset=["relative_p_change"])
    if part.empty:
        return None
    return part.loc[part["relative_p_change"].idxmin()].to_dict()

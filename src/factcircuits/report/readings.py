"""What several findings sentences read across methods: the published reference points and
where restoring MLPs at the subject peaks, by method."""

from __future__ import annotations

from factcircuits.chapters import activation_patching, causal_tracing
from factcircuits.results.run import Run

# Published reference points (typed once here, with their source; everything else is computed).
ORIGINAL_STUDY = {"model": "google/gemma-2b-it", "n_layers": 18, "mlp_share": 0.70,
                  "peak_layer": 13, "peak_sublayer": "mlp"}  # the study this project extends
ROME = {"model": "GPT-2 XL", "n_layers": 48, "mlp_aie": 0.066, "attn_aie": 0.016,
        "noise_samples": 10}  # Meng et al. 2022, causal tracing at the last subject token


def mlp_at_subject(run: Run) -> dict:
    """Where restoring MLP outputs at the last subject token matters most, by method:
    {'tracing': (layer, AIE), 'patching': (layer, normalized effect)}."""
    out = {}
    tr = run.headline(causal_tracing.METHOD)
    if tr.mlp_subject_last_peak_layer is not None:
        out["tracing"] = (tr.mlp_subject_last_peak_layer, tr.mlp_subject_last_peak_aie)
    pa = run.headline(activation_patching.METHOD)
    if pa.mlp_out_subject_last_peak_layer is not None:
        out["patching"] = (int(pa.mlp_out_subject_last_peak_layer),
                           float(pa.mlp_out_subject_last_peak))
    return out

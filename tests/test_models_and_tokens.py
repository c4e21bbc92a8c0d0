"""Model loading (offline), BOS handling, batching with padding, answer sets."""

from dataclasses import replace

import pytest
import torch

from factcircuits.data.answers import AnswerMap, answer_sets, load_answer_map
from factcircuits.errors import AnswerSetError, ModelUnavailableError
from factcircuits.models import embedded, load_model, packaged
from factcircuits.models.forward import final_logits
from factcircuits.models.tokens import encode, format_prompt

PROMPTS = ["The capital of France is", "Paris is located in the country of",
           "The Eiffel Tower is located in the city of", "Is Paris in Germany?"]


def test_tiny_model_loads_from_config_with_gqa_and_provenance(tiny_lm):
    p = tiny_lm.provenance
    assert p["source"] == "random" and p["n_layers"] == 3
    assert p["n_heads"] == 4 and p["n_key_value_heads"] == 2
    assert p["versions"]["torch"].startswith(torch.__version__.split("+")[0])


@pytest.mark.embedded
def test_embedded_model_loads_offline_with_verified_weights(embedded_lm):
    p = embedded_lm.provenance
    assert p["weights_sha256"] == embedded.GGUF_SHA256
    assert (p["n_layers"], p["n_heads"], p["n_key_value_heads"], p["d_model"]) == (30, 9, 3, 576)
    assert p["dla_grade"] is True and p["device"] == "cpu" and p["dtype"] == "float32"


def test_bos_matches_each_tokenizer_never_doubled(tiny_lm, embedded_lm):
    tiny = encode(tiny_lm.tokenizer, ["The capital of France is"]).tokens[0].tolist()
    assert tiny[0] == tiny_lm.tokenizer.bos_token_id and tiny[1] != tiny[0]
    assert tiny_lm.model.cfg.default_prepend_bos is True
    smol = encode(embedded_lm.tokenizer, ["The capital of France is"]).tokens[0].tolist()
    assert smol[0] != embedded_lm.tokenizer.bos_token_id  # SmolLM2's tokenizer adds none
    assert embedded_lm.model.cfg.default_prepend_bos is False


@pytest.mark.parametrize("which", ["tiny_lm", pytest.param("embedded_lm",
                                                            marks=pytest.mark.embedded)])
def test_batched_logits_equal_one_prompt_at_a_time(which, request):
    lm = request.getfixturevalue(which)
    batch = encode(lm.tokenizer, PROMPTS)
    assert len(set(batch.lengths.tolist())) > 1  # really different lengths, really padded
    together = final_logits(lm.model, batch, batch_size=len(PROMPTS))
    alone = torch.cat([final_logits(lm.model, encode(lm.tokenizer, [p])) for p in PROMPTS])
    assert (together - alone).abs().max().item() < 1e-4


def test_chat_format_adds_no_second_bos(embedded_lm):
    text = format_prompt("Is Paris the capital of France?\n", "chat", embedded_lm.tokenizer)
    assert text.startswith("<|im_start|>")
    ids = encode(embedded_lm.tokenizer, [text], "chat").tokens[0].tolist()
    start = embedded_lm.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids[0] == start and ids[1] != start


def test_answer_map_words_that_split_are_errors_naming_the_pieces(embedded_lm):
    amap = load_answer_map("yesno_default")
    with pytest.raises(AnswerSetError, match=r"'Absolutely' is 2 tokens \['Absol', 'utely'\]"):
        answer_sets(embedded_lm.tokenizer, amap)
    sets = answer_sets(embedded_lm.tokenizer, amap, drop_multi_token=True)
    assert "Absolutely" in sets.dropped and "Nope" in sets.dropped
    for word, token_id in zip(sets.true_tokens, sets.true_ids):
        assert embedded_lm.tokenizer.decode([token_id]) == word
    assert not set(sets.true_ids) & set(sets.false_ids)


def test_answer_set_rejects_a_token_on_both_sides(tiny_lm):
    with pytest.raises(AnswerSetError, match="both the true and the false set"):
        answer_sets(tiny_lm.tokenizer, AnswerMap("clash", ("Yes", "No"), ("No",)))


def test_unknown_hub_model_offline_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError, match="not available offline") as info:
        load_model("no-such-org/no-such-model-xyz", device="cpu")
    assert "\n" not in str(info.value)


def test_cached_checkpoint_is_reused_without_dequantizing(embedded_lm, monkeypatch):
    def forbidden(*_):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(packaged, "_dequantize_into", forbidden)
    assert (embedded.cached_checkpoint() / "model.safetensors").is_file()


def test_bad_checksum_refuses_and_writes_no_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FACTCIRCUITS_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(embedded, "SMOLLM2", replace(embedded.SMOLLM2, sha256="0" * 64))
    with pytest.raises(ModelUnavailableError, match="expected 0000"):
        embedded.cached_checkpoint()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # ~40 s: the hub client's own five retries with backoff, each 1 s here
def test_a_hub_that_never_answers_is_a_one_line_error_within_its_deadline(monkeypatch):
    """A server that accepts the connection and then says nothing (a stalled proxy). Before,
    transformers' revision lookup waited on it forever (huggingface_hub sends that request
    with no timeout); now every request stalls out after HF_HUB_DOWNLOAD_TIMEOUT and the load
    ends in one line naming the setting."""
    import socket
    import threading
    import time

    from huggingface_hub import constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    threading.Thread(target=lambda: [held.append(server.accept()) for _ in range(100)],
                     daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 1)
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 1)
    started = time.perf_counter()
    try:
        with pytest.raises(ModelUnavailableError, match="stopped answering") as info:
            load_model("no-such-org/stalled-model", device="cpu")
    finally:
        server.close()
    assert "\n" not in str(info.value) and "HF_HUB_DOWNLOAD_TIMEOUT" in str(info.value)
    assert time.perf_counter() - started < 60

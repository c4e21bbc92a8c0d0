"""A tiny random-weight Llama-style model for unit tests: built from a config and an in-memory
tokenizer, so it needs no file and no network. It has grouped-query attention (4 query heads,
2 KV heads) and a tokenizer that prepends BOS, so tests cover both of those code paths."""

from __future__ import annotations

from functools import lru_cache

import torch

# Enough text that every word of the shipped prompts and answer maps is a single token.
CORPUS = [
    "The capital of France is Paris", "The capital of Italy is Rome",
    "The capital of Germany is Berlin", "The capital of Spain is Madrid",
    "The Eiffel Tower is located in the city of Paris", "The Colosseum is in Rome",
    "Is Paris the capital of France?", "Is Paris in Germany?", "Is Rome in Italy?",
    "Paris is located in the country of France", "The Louvre is a museum in Paris",
    "The river that flows through Paris is the Seine", "The Seine flows through Paris",
    "The official language of France is French", "The currency of France is the Euro",
]
ANSWER_WORDS = ["Yes", "yes", "Sure", "Correct", "Certainly", "Absolutely", "Indeed", "True",
                "Yeah", " Yes", "Yep", "No", "no", "Nope", " No", " no", "Wrong", "NO", "False"]


@lru_cache(maxsize=1)
def tiny_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=["<bos>", "<eos>", "<pad>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    words = " ".join(w.strip() for w in ANSWER_WORDS)
    text = CORPUS * 20 + [f"{words} {words.lower()}"] * 50
    tok.train_from_iterator(text, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 0)]
    )
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )
    wrapped.add_tokens([w for w in ANSWER_WORDS if len(wrapped.tokenize(w)) != 1])
    # TransformerLens re-loads tokenizers by name unless they already add BOS; this one does.
    wrapped.init_kwargs.update(name_or_path="tiny-llama", add_bos_token=True)
    return wrapped


def tiny_hf_model(seed: int = 0, n_layers: int = 3, d_model: int = 64, vocab_size: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size or len(tiny_tokenizer()), hidden_size=d_model,
        intermediate_size=2 * d_model, num_hidden_layers=n_layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
        initializer_range=0.2,  # large enough that logits are far from uniform
        bos_token_id=0, eos_token_id=1, pad_token_id=2,
    )
    config.architectures = ["LlamaForCausalLM"]
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def tiny_model(seed: int = 0, device: str = "cpu", dtype=torch.float32, processing="compat",
               n_layers: int = 3):
    from factcircuits.models.bridge import LoadedModel, boot_bridge, describe

    hf_model = tiny_hf_model(seed=seed, n_layers=n_layers).to(dtype)
    tokenizer = tiny_tokenizer()
    bridge = boot_bridge("tiny-llama", hf_model, tokenizer, device, dtype, processing)
    provenance = {"spec": "tiny", "source": "random", "resolved_name": "tiny-llama",
                  "seed": seed, **describe(bridge, device, dtype, processing)}
    return LoadedModel(model=bridge, tokenizer=tokenizer, provenance=provenance)

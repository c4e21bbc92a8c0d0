"""Tiny random-weight models for unit tests, built from a config and an in-memory tokenizer, so
they need no file and no network. All have grouped-query attention (4 query heads, 2 KV heads)
and a tokenizer that prepends BOS.

Families (spec "tiny" = Llama; "tiny-gemma", "tiny-gemma2", "tiny-gemma3", "tiny-qwen2"):
  llama   plain pre-norm RMSNorm decoder
  qwen2   Qwen 2: biases on the query/key/value projections, per-layer `layer_types` (all
          global, as the released checkpoints)
  gemma   Gemma 1: embeddings scaled by sqrt(d_model) inside the model, (1 + w) RMSNorm, GELU
  gemma2  Gemma 2: + pre/post norms around attention and MLP, attention and final-logit
          soft-capping, alternating sliding-window (window 4, shorter than the test prompts)
          and global layers
  gemma3  Gemma 3: + QK-norm, sliding-window (4) and global layers, tied unembedding
"""

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


FAMILIES = ("llama", "gemma", "gemma2", "gemma3", "qwen2")
SLIDING_WINDOW = 4  # shorter than every test prompt: the sliding-window code paths really run
MAX_POSITIONS = 256  # the tiny models' context, as a real config states one


def _config(family: str, n_layers: int, d_model: int, vocab_size: int, n_kv_heads: int = 2):
    import transformers

    common = dict(
        vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model,
        num_hidden_layers=n_layers, num_attention_heads=4, num_key_value_heads=n_kv_heads,
        head_dim=d_model // 4, max_position_embeddings=MAX_POSITIONS,
        initializer_range=0.2,  # large enough that logits are far from uniform
        bos_token_id=0, eos_token_id=1, pad_token_id=2,
    )
    if family == "llama":
        return transformers.LlamaConfig(**common, tie_word_embeddings=False), \
            transformers.LlamaForCausalLM
    if family == "qwen2":
        return transformers.Qwen2Config(**common, tie_word_embeddings=False), \
            transformers.Qwen2ForCausalLM
    if family == "gemma":
        return transformers.GemmaConfig(**common), transformers.GemmaForCausalLM
    if family == "gemma2":
        # Soft-caps far from saturation would hide a wrong cap: 5 is reached by random logits.
        return transformers.Gemma2Config(
            **common, sliding_window=SLIDING_WINDOW, final_logit_softcapping=5.0,
            attn_logit_softcapping=5.0), transformers.Gemma2ForCausalLM
    if family == "gemma3":
        layer_types = ["sliding_attention" if (i + 1) % 3 else "full_attention"
                       for i in range(n_layers)]
        return transformers.Gemma3TextConfig(
            **common, sliding_window=SLIDING_WINDOW, layer_types=layer_types,
            tie_word_embeddings=True), transformers.Gemma3ForCausalLM
    raise ValueError(f"tiny model family {family!r}: use one of {', '.join(FAMILIES)}")


def tiny_hf_model(seed: int = 0, n_layers: int = 3, d_model: int = 64, vocab_size: int = 0,
                  family: str = "llama", n_kv_heads: int = 2):
    config, model_class = _config(family, n_layers, d_model, vocab_size or len(tiny_tokenizer()),
                                  n_kv_heads)
    config.architectures = [model_class.__name__]
    torch.manual_seed(seed)
    model = model_class(config).eval()
    _randomise_norms(model)
    return model


@torch.no_grad()
def _randomise_norms(model) -> None:
    """Freshly initialised norms have unit gain (Llama: w = 1; Gemma: 1 + w with w = 0), which
    would hide any code that forgets a norm's gain (folding, frozen-scale attributions); biases
    start at zero likewise."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if "norm" in type(module).__name__.lower() and isinstance(weight, torch.nn.Parameter):
            weight.add_(0.3 * torch.randn_like(weight))
        # Zero-initialised biases (Qwen 2's q/k/v) would hide code that drops them.
        bias = getattr(module, "bias", None)
        if isinstance(module, torch.nn.Linear) and isinstance(bias, torch.nn.Parameter):
            bias.add_(0.2 * torch.randn_like(bias))


def tiny_model(seed: int = 0, device: str = "cpu", dtype=torch.float32, processing="none",
               n_layers: int | None = None, family: str = "llama", n_kv_heads: int = 2):
    """A tiny random model as a LoadedModel; `n_kv_heads` = 4 (the query heads) gives plain
    multi-head attention, which TransformerLens's edge tools accept."""
    from factcircuits.models.bridge import LoadedModel, boot_bridge, describe

    n_layers = n_layers or (3 if family == "llama" else 4)
    hf_model = tiny_hf_model(seed=seed, n_layers=n_layers, family=family,
                             n_kv_heads=n_kv_heads).to(dtype)
    tokenizer = tiny_tokenizer()
    name = f"tiny-{family}"
    bridge = boot_bridge(name, hf_model, tokenizer, device, dtype, processing)
    spec = "tiny" if family == "llama" else name
    provenance = {"spec": spec, "source": "random", "resolved_name": name,
                  "seed": seed, **describe(bridge, device, dtype, processing)}
    return LoadedModel(model=bridge, tokenizer=tokenizer, provenance=provenance)

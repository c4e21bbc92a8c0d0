"""Model stage: a spec (embedded default, tiny, local folder, hub name) → a TransformerBridge
with its tokenizer and provenance; tokenization and the batched forward pass."""

from factcircuits.models.bridge import LoadedModel
from factcircuits.models.loading import DEFAULT_MODEL, check_available, load_model

__all__ = ["DEFAULT_MODEL", "LoadedModel", "check_available", "load_model"]

"""Data stage: dataset schema and validation, answer-token sets, derivation from relation
files, generation through an OpenAI-compatible API."""

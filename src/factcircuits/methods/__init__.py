"""Analysis methods: logit lens, attribution, patching, causal tracing, ablation, knockout,
attention patterns, token positions. One module each; import the module you need."""

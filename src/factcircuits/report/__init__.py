"""Report stage: generated Quarto pages, the comparison across runs, `quarto render` or the
Quarto-free preview."""

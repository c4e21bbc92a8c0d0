"""Circuits by edge attribution patching (EAP, EAP-IG) with exact faithfulness: `graph` (nodes
and edges), `forward` (one residual per reader input), `scores`, `split` (which pairs choose
the circuits and which judge them), `faithfulness` (circuits, random baseline circuits, exact
evaluation, CPR/CMD), `single_edges` (exact single-edge patching, the scores' check),
`headline` (notebook 08's registry headline, with bootstrap intervals), `summary` (what
notebook 08 narrates), `figures`."""

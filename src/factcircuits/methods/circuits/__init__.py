"""Circuits by edge attribution patching (EAP, EAP-IG) with exact faithfulness: `graph` (nodes
and edges), `forward` (one residual per reader input), `scores`, `faithfulness` (circuits,
exact evaluation, CPR/CMD), `summary` (what notebook 08 narrates), `figures`."""

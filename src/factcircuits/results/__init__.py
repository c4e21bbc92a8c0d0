"""Typed results between the notebooks and the write-up.

A method's results are declared once, in its registry entry (`registry.Method`, one module per
method in `factcircuits.chapters`): the tables, graphs and arrays it saves (`kinds`) and its
headline as a dataclass (`headlines`). Notebooks save through `store`; the write-up reads a run
once, as a typed `run.Run`.
"""

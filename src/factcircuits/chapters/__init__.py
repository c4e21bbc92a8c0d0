"""One module per method: its registry entry (`METHOD`), its headline, the summary its notebook
narrates, and the findings sentences it contributes. `factcircuits.results.registry` finds
every module here; adding a module adds a method (docs/ADDING_A_METHOD.md)."""

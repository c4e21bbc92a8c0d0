"""Quarto pre-render: write report/_generated/ (version stamp, run sections) from the runs
present."""

from factcircuits.report.pages import main

main()

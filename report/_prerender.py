"""Quarto pre-render: write report/_generated/book.yml (title page version, one book part per
run, render list) into the project being rendered (QUARTO_PROJECT_DIR)."""

from factcircuits.report.pages import main

main()

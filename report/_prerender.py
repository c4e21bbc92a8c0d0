"""Quarto pre-render: write report/_generated/book.yml (title page version, one book part per
run, render list) and the pages' markdown into the project being rendered
(QUARTO_PROJECT_DIR), unless `factcircuits render` has just written them."""

from factcircuits.report.book_copies import prerender

prerender()

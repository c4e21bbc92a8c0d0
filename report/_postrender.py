"""Quarto post-render: plotly.js once per site, no assets from a CDN, so the site opens
offline (see factcircuits.report.offline); then report/_generated/book.yml without run
chapters, so that `quarto render` after a run folder was deleted by hand never looks for it
(factcircuits.report.pages.neutral_book)."""

from factcircuits.report.offline import main
from factcircuits.report.pages import neutral_book

main()
neutral_book()

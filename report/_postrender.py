"""Quarto post-render: plotly.js once per site, no assets from a CDN, so the site opens
offline (see factcircuits.report.offline)."""

from factcircuits.report.offline import main

main()

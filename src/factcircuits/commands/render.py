"""`factcircuits render`: the write-up with Quarto, or a preview HTML without it."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "render", help="render the write-up (Quarto; a preview HTML without it)")
    parser.add_argument("--to", choices=("html", "pdf", "all"), default="html")
    parser.add_argument("--runs-dir", type=Path, help="default: report/runs/")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from factcircuits.report.render import render
    from factcircuits.run.folders import project_relative

    for path in render(to=args.to, runs_root=args.runs_dir):
        print(project_relative(path))
    return 0

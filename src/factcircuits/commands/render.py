"""`factcircuits render`: the write-up with Quarto, or a preview HTML without it."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "render", help="render the write-up (Quarto; a preview HTML without it)")
    parser.add_argument("--to", choices=("html", "pdf", "all"), default="html",
                        help="html: the site; pdf: the PDF, added to the site as it is; all: "
                             "both, rendered at once (default: html)")
    parser.add_argument("--runs-dir", help="default: report/runs/")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    import sys

    from factcircuits.errors import UserError
    from factcircuits.report.render import render
    from factcircuits.run import folders

    runs_root = folders.given_runs_dir(args.runs_dir, must_exist=True)
    if runs_root is not None and runs_root.exists() and not runs_root.is_dir():
        raise UserError(f"--runs-dir {runs_root} is a file, not a folder; pass the folder "
                        "that holds the runs")
    from factcircuits.report.evidence import scan_evidence

    # every kind of damage (run.json, headlines, notebooks), as the write-up itself finds it
    for name, why in scan_evidence(runs_root or folders.default_runs_root())[1]:
        print(f"note: skipping damaged run {name}: {why}; rerun it or delete the folder",
              file=sys.stderr)
    for path in render(to=args.to, runs_root=runs_root):
        print(folders.project_relative(path))
    return 0

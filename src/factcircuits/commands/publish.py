"""`factcircuits publish`: every rendered version as one static site (a folder, or a git
remote's gh-pages branch for GitHub Pages)."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "publish", help="publish every rendered version as one static site (folder or "
                        "GitHub Pages)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--to", type=Path, metavar="FOLDER",
                       help="write the site into FOLDER (replaced whole), e.g. for a static "
                            "host")
    where.add_argument("--gh-pages", metavar="REMOTE",
                       help="push the site to REMOTE's gh-pages branch (a remote name such as "
                            "origin, a URL or a path)")
    parser.add_argument("--versions-dir", type=Path,
                        help="where rendered versions are kept (default: report/versions/)")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    import sys

    from factcircuits.report import publish
    from factcircuits.report.versions import VERSIONS, scan_versions
    from factcircuits.run.folders import project_root

    root = Path(project_root())
    store = args.versions_dir or root / VERSIONS
    for name, why in scan_versions(store)[1]:  # said, not silently dropped
        print(f"note: version {name} left out: {why}", file=sys.stderr)
    if args.to is not None:
        records = publish.publish_folder(store, args.to)
        where = f"{args.to.resolve()}/latest/index.html"
    else:
        records, commit = publish.publish_gh_pages(store, args.gh_pages, root)
        where = (f"{publish.redact(publish.remote_url(args.gh_pages, root))} gh-pages "
                 f"({commit})")
    print(f"published {len(records)} version(s), latest {records[-1]['id']}: {where}")
    return 0

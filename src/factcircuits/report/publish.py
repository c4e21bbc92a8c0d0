"""`factcircuits publish`: every recorded version as one static site, to a folder or to a git
remote's `gh-pages` branch (GitHub Pages).

Layout of the published site:
    index.html              → redirects to latest/
    latest/                 the newest version (its site and PDF)
    versions/index.html     every version: date, code, runs, what changed, PDF
    versions/<id>/          each version as it was rendered, with a banner naming the latest
    _shared/plotly/         plotly.js, once for all versions
Quarto's own `quarto publish gh-pages` pushes one render's output as the whole branch, which
cannot hold earlier versions; the branch is built here and pushed with plain git instead.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from factcircuits.errors import UserError
from factcircuits.report.versions import SITE, changelog, load_versions

MARK = ".factcircuits-site"  # marks a folder as a published site (safe to replace)
SHARED = Path("_shared") / "plotly"
_PLOTLY_SRC = re.compile(r'src="([^"]*site_libs/plotly/(plotly-[^"/]+\.min\.js))"')
_BODY = re.compile(r"<body\b[^>]*>", re.I)
_CSS = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:auto;padding:1em 2em;"
        "color:#222}.version{border-top:1px solid #ccc;padding:.5em 0}.latest{color:#2a7}"
        "code{background:#f3f3f3;padding:0 .2em}")


def _rel(target: Path, page: Path) -> str:
    return os.path.relpath(target, page.parent).replace(os.sep, "/")


def _banner(page: Path, out: Path, record: dict[str, Any], latest: dict[str, Any]) -> str:
    versions = _rel(out / "versions" / "index.html", page)
    style = ("style='padding:.4em 1em;font:14px system-ui,sans-serif;border-bottom:1px solid "
             "#ccc;background:{}'")
    if record["id"] == latest["id"]:
        return (f"<div class='factcircuits-version' {style.format('#eef6ee')}>Version "
                f"{html.escape(record['id'])} ({record['date'][:10]}), the latest · "
                f"<a href='{versions}'>all versions and what changed</a></div>")
    return (f"<div class='factcircuits-version' {style.format('#fff3cd')}><strong>An earlier "
            f"version</strong>: {html.escape(record['id'])} ({record['date'][:10]}). "
            f"<a href='{_rel(out / 'latest' / 'index.html', page)}'>Read the latest version "
            f"({html.escape(latest['id'])})</a> · <a href='{versions}'>all versions and what "
            "changed</a></div>")


def _place_version(record: dict[str, Any], dest: Path, out: Path,
                   latest: dict[str, Any]) -> None:
    """Copy one version's site to `dest`: banner on every page, plotly.js shared."""
    shutil.copytree(Path(record["folder"]) / SITE, dest)
    for lib in sorted((dest / "site_libs" / "plotly").glob("plotly-*.min.js")):
        shared = out / SHARED / lib.name  # the name holds a digest of the content
        shared.parent.mkdir(parents=True, exist_ok=True)
        if not shared.exists():
            shutil.copy2(lib, shared)
        lib.unlink()
    for page in dest.rglob("*.html"):
        text = page.read_text(encoding="utf-8", errors="surrogateescape")
        shared = {m.group(1): _rel(out / SHARED / m.group(2), page)
                  for m in _PLOTLY_SRC.finditer(text)}
        for old, new in shared.items():
            text = text.replace(f'src="{old}"', f'src="{new}"')
        body = _BODY.search(text)
        if body:
            text = text[:body.end()] + _banner(page, out, record, latest) + text[body.end():]
        page.write_text(text, encoding="utf-8", errors="surrogateescape")


def versions_page(records: list[dict[str, Any]]) -> str:
    """The versions page (newest first), with each version's changelog against the one
    before it."""
    from factcircuits.report.render import markdown_html

    esc = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             "<title>factcircuits write-up: versions</title>", f"<style>{_CSS}</style>",
             "</head><body><h1>Versions of the write-up</h1>",
             "<p>Newest first. Each version is the write-up as rendered from the runs listed; "
             "what changed is computed from the runs' parameters and headline numbers. "
             "<a href='../latest/index.html'>Read the latest version</a>.</p>"]
    previous: dict[str, Any] | None = None
    blocks = []
    for i, record in enumerate(records):
        vid = esc(record["id"])
        runs = "".join(f"<li>{esc(r['title'])} (<code>{esc(r['run_id'])}</code>)</li>"
                       for r in record.get("runs") or []) or "<li>no runs</li>"
        pdf = (f" · <a href='{vid}/{esc(record['pdf'])}'>PDF</a>" if record.get("pdf") else "")
        latest = " <span class='latest'>(latest)</span>" if i == len(records) - 1 else ""
        changes = markdown_html("".join(f"- {line}\n" for line in changelog(previous, record)))
        blocks.append(
            f"<section class='version' id='{vid}'><h2>{vid}{latest}</h2>"
            f"<p>{esc(record['date'])} · factcircuits {esc(str(record.get('package')))}, "
            f"commit <code>{esc(str(record.get('commit')))}</code> · "
            f"<a href='{vid}/index.html'>site</a>{pdf}</p>"
            f"<h3>Runs</h3><ul>{runs}</ul><h3>What changed</h3>{changes}</section>")
        previous = record
    return "\n".join(parts + blocks[::-1] + ["</body></html>"])


# What `assemble` writes at the top of the site: on a gh-pages branch only these are replaced.
OWNED = ("versions", "latest", "index.html", ".nojekyll", MARK)


def assemble(store: Path, out: Path) -> list[dict[str, Any]]:
    """Write the published site for every version in `store` into the new folder `out`."""
    records = load_versions(store)
    if not records:
        raise UserError(f"no rendered versions in {store}: run `factcircuits render` (or "
                        "`factcircuits run --render`) first, then publish")
    latest = records[-1]
    out.mkdir(parents=True)
    for record in records:
        _place_version(record, out / "versions" / record["id"], out, latest)
    _place_version(latest, out / "latest", out, latest)
    (out / "versions" / "index.html").write_text(versions_page(records), encoding="utf-8")
    (out / "index.html").write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<meta http-equiv='refresh' content='0; url=latest/index.html'>"
        "<title>factcircuits write-up</title></head><body>"
        "<a href='latest/index.html'>The latest version</a> · "
        "<a href='versions/index.html'>all versions</a></body></html>", encoding="utf-8")
    (out / ".nojekyll").write_text("")  # GitHub Pages: serve site_libs/ and _shared/ as is
    (out / MARK).write_text(latest["id"] + "\n")
    return records


def publish_folder(store: Path, target: Path) -> list[dict[str, Any]]:
    """Publish into `target`, replaced whole: built beside it, then swapped in."""
    target = target.resolve()
    if target.exists() and (not target.is_dir() or (any(target.iterdir())
                                                    and not (target / MARK).exists())):
        raise UserError(f"--to {target}: exists and is not a site published by factcircuits; "
                        "choose a new or empty folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        records = assemble(store, Path(tmp) / "site")
        if target.exists():
            os.replace(target, Path(tmp) / "old")
        os.replace(Path(tmp) / "site", target)
    return records


# ------------------------------------------------------------------------------- gh-pages
def redact(text: str) -> str:
    """Credentials in URLs (https://user:token@host) never reach the output."""
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)


def _git(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")  # never wait for a password
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise UserError(f"git {args[0]} failed: {redact(git_reason(proc))}")
    return proc


def git_reason(proc: subprocess.CompletedProcess) -> str:
    """git's reason in one line: the remote's or git's own error line when it gave one (the
    last line of a refused push is only 'failed to push some refs')."""
    lines = [line.strip() for line in (proc.stderr or proc.stdout or "").splitlines()
             if line.strip()]
    for prefix in ("remote: error:", "fatal:", "error:"):
        found = [line for line in lines if line.startswith(prefix)
                 and "failed to push some refs" not in line]
        if found:
            return found[0]
    return lines[-1] if lines else f"exit {proc.returncode}"


def remote_url(remote: str, checkout: Path) -> str:
    """A remote name of this checkout (origin) to its URL; a URL or path as given."""
    if "/" in remote or ":" in remote or Path(remote).exists():
        return str(Path(remote).resolve()) if Path(remote).exists() else remote
    proc = _git("remote", "get-url", remote, cwd=checkout, check=False)
    if proc.returncode != 0:
        raise UserError(f"--gh-pages {remote}: no git remote of that name in {checkout}; "
                        "give a remote name, a URL or a path to a repository")
    return proc.stdout.strip()


def publish_gh_pages(store: Path, remote: str, checkout: Path,
                     branch: str = "gh-pages") -> tuple[list[dict[str, Any]], str]:
    """Commit the published site on top of the remote's `branch` (or as its first commit)
    and push it. Returns the versions and the commit pushed (or 'unchanged')."""
    url = remote_url(remote, checkout)
    with tempfile.TemporaryDirectory(prefix="factcircuits-publish-") as tmp:
        work = Path(tmp) / "work"
        records = assemble(store, Path(tmp) / "site")
        _git("init", "-q", str(work), cwd=Path(tmp))
        has_branch = _git("ls-remote", "--exit-code", "--heads", url, branch, cwd=work,
                          check=False)
        if has_branch.returncode == 0:
            _git("fetch", "-q", "--depth=1", url, branch, cwd=work)
            _git("checkout", "-q", "-B", branch, "FETCH_HEAD", cwd=work)
            # only what publish writes is replaced: CNAME, a README or anything else the
            # branch holds stays
            _git("rm", "-rq", "--ignore-unmatch", "--", *OWNED, cwd=work)
        elif has_branch.returncode == 2:  # reachable, no such branch yet
            _git("checkout", "-q", "--orphan", branch, cwd=work)
        else:
            raise UserError(f"--gh-pages: cannot read the remote {redact(url)}: "
                            f"{redact(has_branch.stderr.strip()) or 'no answer'}")
        for item in (Path(tmp) / "site").iterdir():
            os.replace(item, work / item.name)
        _git("add", "-A", ".", cwd=work)
        if not _git("status", "--porcelain", cwd=work).stdout.strip():
            return records, "unchanged"
        # the user's git identity when there is one, else a neutral one (CI, fresh machines)
        has_identity = _git("config", "user.email", cwd=work, check=False).stdout.strip()
        identity = [] if has_identity else ["-c", "user.name=factcircuits",
                                            "-c", "user.email=publish@factcircuits.invalid"]
        _git(*identity, "commit", "-q", "-m",
             f"Publish the write-up, latest {records[-1]['id']}", cwd=work)
        _git("push", "-q", url, f"HEAD:refs/heads/{branch}", cwd=work)
        return records, _git("rev-parse", "--short", "HEAD", cwd=work).stdout.strip()

"""Each render is a version: package version, git commit and the set of runs it shows.

`record_version` keeps a copy of the rendered site (and the PDF) in
`report/versions/<id>/` with `version.json`: when, which code, and per run its parameters
and headline numbers — what `changelog` compares to say what changed between two versions.
A render of the same package, commit and runs replaces that version (its id is the same).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from factcircuits.results.run import Run

VERSIONS = Path("report") / "versions"
SITE = "site"
# Headline intervals in a version record: `<key>_ci_low` and `<key>_ci_high` (from the
# headlines' `<key>_ci` = [low, high], bootstrap over prompts).
CI_LOW, CI_HIGH = "_ci_low", "_ci_high"


def version_id(package: str, commit: str, run_ids: list[str]) -> str:
    runs = hashlib.sha256("\n".join(sorted(run_ids)).encode()).hexdigest()[:6]
    return f"v{package}-{commit}-{runs}"


def interval_numbers(headline: dict[str, dict]) -> dict[str, float]:
    """The headline intervals (`<key>_ci` = [low, high]) as `<notebook>.<key>_ci_low/_high`."""
    out = {}
    for notebook, numbers in sorted((headline or {}).items()):
        for key, value in numbers.items():
            if key.endswith("_ci") and isinstance(value, list) and len(value) == 2 and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                out[f"{notebook}.{key[:-3]}{CI_LOW}"] = float(value[0])
                out[f"{notebook}.{key[:-3]}{CI_HIGH}"] = float(value[1])
    return out


def run_snapshot(ev: Run) -> dict[str, Any]:
    from factcircuits.report.compare import run_numbers

    stored = {nb: h.to_json() for nb, h in ev.headlines.items()}
    return {"run_id": ev.run_id, "title": ev.title, "model": ev.model, "dataset": ev.dataset,
            "task": ev.task, "parameters": ev.parameters,
            "numbers": {**run_numbers(ev), **interval_numbers(stored)}}


def record_version(site: Path, root: Path, info: dict[str, Any], runs: list[Run],
                   kind: str) -> Path:
    """Copy the rendered `site` folder into report/versions/<id>/site/ with version.json;
    built beside and moved into place, so a version is whole or absent. Returns its folder."""
    vid = version_id(info["package"], info["commit"], [ev.run_id for ev in runs])
    store = root / VERSIONS
    store.mkdir(parents=True, exist_ok=True)
    tmp = store / f".{vid}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(site, tmp / SITE)
    pdfs = sorted(p.relative_to(tmp / SITE).as_posix() for p in (tmp / SITE).rglob("*.pdf"))
    record = {"id": vid, "package": info["package"], "commit": info["commit"],
              "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "kind": kind, "pdf": pdfs[0] if pdfs else None,
              "runs": [run_snapshot(ev) for ev in runs]}
    (tmp / "version.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    target = store / vid
    old = store / f".{vid}.{os.getpid()}.old"
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


VERSION_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # a folder name, never a path


def version_problem(record: Any) -> str | None:
    """What is wrong with a version.json's shape, or None: its id names a folder of the
    published site, so it must be a plain name (no separator, no '..')."""
    if not isinstance(record, dict):
        return "version.json is not a JSON object"
    vid = record.get("id")
    if not isinstance(vid, str) or not VERSION_ID.match(vid):
        return f"version.json: id {vid!r} is not a plain folder name"
    for key, kind in (("date", str), ("package", str), ("commit", str), ("runs", list)):
        if key in record and not isinstance(record[key], kind):
            return f"version.json: {key!r} is a {type(record[key]).__name__}, expected " \
                   f"{kind.__name__}"
    if not all(isinstance(r, dict) for r in record.get("runs") or []):
        return "version.json: 'runs' holds an entry that is not an object"
    pdf = record.get("pdf")
    if pdf is not None and (not isinstance(pdf, str) or ".." in Path(pdf).parts
                            or Path(pdf).is_absolute()):
        return f"version.json: pdf {pdf!r} is not a path inside the version"
    return None


def scan_versions(store: Path) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """(versions, damaged): every recorded version, oldest first, each with `folder` (its
    path); and (folder name, what is wrong) for each version that cannot be published."""
    found, damaged = [], []
    for path in sorted(Path(store).glob("*/version.json")):
        if path.parent.name.startswith("."):
            continue  # one being written
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            damaged.append((path.parent.name, f"version.json unreadable "
                                              f"({str(exc).splitlines()[0][:80]})"))
            continue
        problem = version_problem(record) or (
            None if (path.parent / SITE).is_dir() else f"no {SITE}/ folder")
        if problem:
            damaged.append((path.parent.name, problem))
            continue
        found.append({**record, "folder": path.parent})
    return sorted(found, key=lambda r: (r.get("date") or "", r["id"])), damaged


def load_versions(store: Path) -> list[dict[str, Any]]:
    """Every publishable version, oldest first (see `scan_versions` for the others)."""
    return scan_versions(store)[0]


# ------------------------------------------------------------------------------ changelog
def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def moved_numbers(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Headline numbers that changed: beyond the old interval when both versions have one,
    else any change beyond float rounding."""
    lines = []
    for key in sorted(set(old) | set(new)):
        if key.endswith((CI_LOW, CI_HIGH)):
            continue
        a, b = old.get(key), new.get(key)
        if a is None or b is None:
            if a != b:
                lines.append(f"`{key}` {'new' if a is None else 'gone'}"
                             f"{'' if b is None else f' ({_fmt(b)})'}")
            continue
        if math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
            continue
        lo, hi = old.get(key + CI_LOW), old.get(key + CI_HIGH)
        if lo is not None and hi is not None:
            if lo <= b <= hi:
                continue  # within the old interval: not a change a reviewer should act on
            lines.append(f"`{key}` {_fmt(a)} → {_fmt(b)} (outside [{_fmt(lo)}, {_fmt(hi)}])")
        else:
            lines.append(f"`{key}` {_fmt(a)} → {_fmt(b)}")
    return lines


def changed_parameters(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    return [f"{k}={_fmt(old.get(k))} → {_fmt(new.get(k))}"
            for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def changelog(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """What changed from version `old` to `new`, as markdown list items. Runs are matched by
    run id, then a removed and an added run of the same model, dataset and task are one run
    whose parameters changed."""
    if old is None:
        return ["First version."]
    out = []
    if old.get("commit") != new.get("commit") or old.get("package") != new.get("package"):
        out.append(f"Code: factcircuits {old.get('package')} `{old.get('commit')}` → "
                   f"{new.get('package')} `{new.get('commit')}`.")
    before = {r["run_id"]: r for r in old.get("runs") or []}
    after = {r["run_id"]: r for r in new.get("runs") or []}
    pairs = [(before[r], after[r]) for r in after if r in before]
    added = [after[r] for r in after if r not in before]
    removed = [before[r] for r in before if r not in after]
    for run in list(added):
        key = (run["model"], run["dataset"], run["task"])
        twin = next((r for r in removed if (r["model"], r["dataset"], r["task"]) == key), None)
        if twin is not None:
            removed.remove(twin)
            added.remove(run)
            pairs.append((twin, run))
    for run in added:
        # beside a run of the same model, dataset and task: say which parameters differ
        twin = next((r for r in after.values() if r is not run and r["run_id"] in before
                     and (r["model"], r["dataset"], r["task"])
                     == (run["model"], run["dataset"], run["task"])), None)
        params = twin and changed_parameters(twin.get("parameters") or {},
                                             run.get("parameters") or {})
        like = f": like `{twin['run_id']}` but " + ", ".join(params) if params else ""
        out.append(f"Run added: {run['title']} (`{run['run_id']}`){like}.")
    for run in removed:
        out.append(f"Run removed: {run['title']} (`{run['run_id']}`).")
    for a, b in pairs:
        params = changed_parameters(a.get("parameters") or {}, b.get("parameters") or {})
        numbers = moved_numbers(a.get("numbers") or {}, b.get("numbers") or {})
        what = b["title"] + ("" if a["run_id"] == b["run_id"]
                             else f" (`{a['run_id']}` → `{b['run_id']}`)")
        if params:
            out.append(f"Parameters changed in {what}: " + ", ".join(params) + ".")
        if numbers:
            out.append(f"Headline numbers moved in {what}: " + "; ".join(numbers) + ".")
    return out or ["No change in runs, parameters or headline numbers."]

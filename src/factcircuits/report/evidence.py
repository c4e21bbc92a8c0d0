"""Which runs the write-up can show: every accepted run read once as a `results.run.Run`, and
the runs left out with what is wrong with their files. One damaged run never stops the
write-up of the others; an absent file is no damage (pages show what a run has)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from factcircuits.results.run import Run


def load_runs(runs_root: Path | str) -> list[Run]:
    """Every accepted run under `runs_root` whose files can be read (staging and failed
    attempts are not runs; damaged runs are left out: see `scan_evidence`)."""
    return scan_evidence(runs_root)[0]


def scan_evidence(runs_root: Path | str) -> tuple[list[Run], list[tuple[str, str]]]:
    """(runs, damaged): the runs the write-up can show, and (run folder name, what is wrong)
    for those it cannot."""
    from factcircuits.report.findings import run_findings
    from factcircuits.run.folders import scan_runs

    root = Path(runs_root)
    if not root.is_dir():
        return [], []
    records, unreadable = scan_runs(root)
    runs, damaged = [], [(folder.name, why) for folder, why in unreadable]
    for record in records:
        folder = Path(record["run_dir"])
        problem = files_problem(folder, record)
        if problem is None:
            run = Run.load(folder)
            try:
                run_findings(run)  # what every page computes from it
                runs.append(run)
                continue
            except Exception as exc:  # noqa: BLE001 -- any reader's failure leaves this run out
                missing = run.not_computed()
                problem = (f"headline value(s) not computed: {', '.join(missing[:4])}" if missing
                           else f"its findings cannot be computed ({type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:80] if str(exc) else ''})")
        damaged.append((folder.name, problem))
    return runs, sorted(damaged)


def files_problem(folder: Path, record: dict[str, Any]) -> str | None:
    """What is wrong with a run's record or its executed notebooks, or None."""
    if not isinstance(record.get("headline", {}), dict) or not all(
            isinstance(v, dict) for v in (record.get("headline") or {}).values()):
        return "run.json: a headline is not a JSON object"
    paths = [folder / f"{nb.get('name')}.ipynb" for nb in record.get("notebooks") or []
             if isinstance(nb, dict)]
    for path in paths:
        name = path.relative_to(folder).as_posix()
        try:
            data = path.read_bytes()
            if not data:
                return f"{name} is empty (0 bytes)"
            value = json.loads(data)
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            return f"{name} is unreadable ({str(exc).splitlines()[0][:80]})"
        if not isinstance(value, dict):
            return f"{name} is not a JSON object"
    return None


def damaged_markdown(damaged: list[tuple[str, str]]) -> str:
    """The runs left out of the write-up, each with what is wrong (empty when none)."""
    if not damaged:
        return ""
    lines = [f"**{len(damaged)} run(s) left out** because their files cannot be read; rerun "
             "them or delete their folders:", ""]
    return "\n".join(lines + [f"- `{name}`: {why}" for name, why in damaged]) + "\n"

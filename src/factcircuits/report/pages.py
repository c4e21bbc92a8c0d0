"""Generated parts of the Quarto write-up, written before each render (Quarto pre-render).

`report/_generated/version.qmd`  the version block (package, commit, render date, run ids)
`report/_generated/runs.qmd`     one section per run: parameters, headline, notebook links
Files starting with '_' are not rendered on their own; pages `{{< include >}}` them.
Run: `python -m factcircuits.report.pages` (done by `_quarto.yml`'s pre-render).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from factcircuits import __version__
from factcircuits.run.provenance import git_commit


def version_info(root: Path, run_ids: list[str]) -> dict[str, Any]:
    git = git_commit(root)
    commit = (git["commit"] or "nogit")[:7] + ("-dirty" if git["dirty"] else "")
    return {"package": __version__, "commit": commit, "date": dt.date.today().isoformat(),
            "runs": run_ids, "version": f"{__version__}+{commit}"}


def version_markdown(info: dict[str, Any]) -> str:
    runs = ", ".join(f"`{r}`" for r in info["runs"]) or "none yet"
    return (f"**Version** {info['version']} · factcircuits {info['package']} · commit "
            f"`{info['commit']}` · rendered {info['date']}  \n**Runs:** {runs}\n")


def runs_markdown(runs: list[dict[str, Any]], runs_rel: str) -> str:
    if not runs:
        return ("No runs yet. Run `factcircuits run` (or `factcircuits run --render`) and "
                "render again.\n")
    parts = []
    for run in runs:
        rid, params = run["run_id"], run.get("parameters", {})
        info = run.get("model") or {}
        model = info.get("model_title") or info.get("resolved_name") or params.get("model")
        licence = (f" (licence: [{info['licence']}]({info['licence_url']}))"
                   if info.get("licence") and info.get("licence_url") else "")
        parts.append(f"## {rid} {{#sec-run-{rid.replace('_', '-').replace('.', '-')}}}\n")
        parts.append(f"Model **{model}**{licence} on dataset **{params.get('dataset')}** "
                     f"(task {params.get('task')}, finished {run.get('finished')}).\n")
        links = [f"[{nb['name']}]({runs_rel}/{rid}/{nb['name']}.ipynb)"
                 for nb in run.get("notebooks", [])]
        parts.append("Notebooks: " + " · ".join(links) + "\n")
        rows = [(f"{nb}", k, v) for nb, nums in sorted((run.get("headline") or {}).items())
                for k, v in sorted(nums.items())]
        if rows:
            parts.append("| notebook | number | value |\n|---|---|---|")
            parts += [f"| {nb} | {k} | {v:.4g} |" if isinstance(v, float) else
                      f"| {nb} | {k} | {v} |" for nb, k, v in rows]
            parts.append("")
        parts.append("<details><summary>Parameters</summary>\n\n```json\n"
                     + json.dumps(params, indent=2) + "\n```\n\n</details>\n")
    return "\n".join(parts)


def write_generated(root: Path, runs_root: Path | None = None) -> Path:
    from factcircuits.run.folders import list_runs

    runs_root = Path(runs_root or root / "report" / "runs")
    runs = list_runs(runs_root)
    out = root / "report" / "_generated"
    out.mkdir(parents=True, exist_ok=True)
    info = version_info(root, [r["run_id"] for r in runs])
    (out / "version.qmd").write_text(version_markdown(info))
    (out / "version.json").write_text(json.dumps(info, indent=2) + "\n")
    # Links are relative to report/ (the including pages live there).
    (out / "runs.qmd").write_text(runs_markdown(runs, "runs"))
    return out


def main() -> None:
    from factcircuits.run.folders import project_root

    write_generated(project_root())


if __name__ == "__main__":
    main()

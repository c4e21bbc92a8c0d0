"""`factcircuits run`: execute the analysis notebooks for one model × dataset."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from factcircuits.errors import UserError
from factcircuits.run.parameters import CommandLineText, as_command_line
from factcircuits.run.threads import add_threads_argument


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """['n_prompts=8', 'device=cpu'] -> {'n_prompts': '8', 'device': 'cpu'}, each value a
    `CommandLineText` typed later by the parameter's declared type."""
    out: dict[str, Any] = {}
    raw: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"-p {item!r}: expected key=value, e.g. -p n_prompts=8")
        key = key.strip()
        if key in out:  # the later one would silently win; the user meant one of them
            raise UserError(f"-p {key} is given twice (-p {raw[key]} and -p {item}); give "
                            "each parameter once")
        raw[key] = item
        out[key] = CommandLineText(value.strip())
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice (plain YAML keeps the last one silently)."""


def _mapping_without_repeats(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise UserError(f"--params: {key!r} is given twice (line {key_node.start_mark.line + 1}"
                            "); give each parameter once")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                 _mapping_without_repeats)


def load_params_file(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--params {path}: no such file")
    try:
        data = yaml.load(file.read_text(), Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"--params {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"--params {path}: expected a mapping of parameter: value")
    return data


def overrides_from_args(args) -> dict[str, Any]:
    """`--params` and `-p` (a name in both is refused), and the flags `--task`, `--device`,
    `--model`, `--dataset`, each refused when a `-p` or `--params` value disagrees."""
    from_file, from_p = load_params_file(args.params), parse_assignments(args.param)
    both = sorted(set(from_file) & set(from_p))
    if both:
        raise UserError(f"{both[0]} is set both in --params {args.params} and by -p; set it once")
    overrides = from_file | from_p
    for key in ("task", "device", "model", "dataset"):
        flag = getattr(args, key, None)
        if not flag:
            continue
        if key in overrides and str(overrides[key]) != str(flag):
            raise UserError(f"--{key} {flag} and -p {key}={overrides[key]} disagree; give "
                            f"{key} once")
        if key in ("task", "device"):
            overrides[key] = flag
        else:  # passed to plan_run by name
            overrides.pop(key, None)
    return overrides


PARAMETERS_HELP = "parameters (-p NAME=VALUE)"  # the epilog `ParametersHelpFormatter` writes


def parameters_help() -> str:
    """Every declared parameter with its default and meaning: the core ones, then each
    method's own under its notebook (read from the declarations, so it cannot drift)."""
    from factcircuits.results.parameter_declarations import CORE
    from factcircuits.results.registry import methods

    groups = [("every notebook", CORE)] + [(m.notebook, m.parameters) for m in methods()
                                           if m.parameters]
    lines = [f"{PARAMETERS_HELP}, each with its default:"]
    for owner, declared in groups:
        lines.append(f"  {owner}:")
        lines += [f"    {p.name}={as_command_line(p.default) or '(empty)'}  {p.meaning}"
                  for p in declared]
    return "\n".join(lines)


class ParametersHelpFormatter(argparse.HelpFormatter):
    """Writes the parameters epilog when help is asked for (the registry is loaded then, not
    on every command) and keeps its lines as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text == PARAMETERS_HELP:
            return "\n".join(indent + line for line in parameters_help().splitlines())
        return super()._fill_text(text, width, indent)


def add_run_arguments(parser) -> None:
    """The run options shared by `run` and `sweep`; their help ends with every parameter."""
    parser.formatter_class = ParametersHelpFormatter
    parser.epilog = PARAMETERS_HELP
    parser.add_argument("--task", help="yesno or cloze (notebook default otherwise)")
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                        help="set a notebook parameter (repeatable; listed below); the value "
                        "takes the parameter's declared type (whole number, number, "
                        "true/false, text)")
    parser.add_argument("--params", metavar="FILE", help="YAML file of parameters")
    parser.add_argument("--notebooks", metavar="01,02", help="run only these notebooks")
    parser.add_argument("--device", help="cpu, cuda, mps or auto")
    parser.add_argument("--notebooks-dir", type=Path, help="folder of NN_*.py notebooks "
                        "(default: analysis/, or $FACTCIRCUITS_NOTEBOOKS)")
    parser.add_argument("--runs-dir", help="where run folders go "
                        "(default: report/runs/, or $FACTCIRCUITS_RUNS)")
    add_threads_argument(parser)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run", help="execute the analysis notebooks for one model and dataset",
        description="Execute the analysis notebooks with papermill into report/runs/<run-id>/. "
                    "The last line printed is the run folder (a JSON object with --json).")
    parser.add_argument("--model", help="model spec (default: the embedded SmolLM2)")
    parser.add_argument("--dataset", help="dataset name or path (default: the default dataset)")
    add_run_arguments(parser)
    parser.add_argument("--json", action="store_true", help="last line: JSON with run_dir, "
                        "status, headline")
    parser.add_argument("--render", action="store_true",
                        help="render the write-up afterwards (the one-command main job)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (the notebooks' own included)")
    add_check_arguments(parser)
    parser.set_defaults(handler=handle)


def add_check_arguments(parser) -> None:
    """Options of the checks made before a run (they refuse inputs; they change no result)."""
    parser.add_argument("--max-prompt-tokens", type=int, default=None, metavar="N",
                        help="refuse prompts longer than N tokens (default 256, or "
                             "$FACTCIRCUITS_MAX_PROMPT_TOKENS)")
    parser.add_argument("--single-token-answers", action="store_true",
                        help="refuse cloze answers of several tokens instead of scoring their "
                             "first token")


def selected_notebooks(value: str | None) -> list[str] | None:
    """--notebooks '01,02' -> ['01', '02']; absent -> None (all); given but empty -> error."""
    if value is None:
        return None
    names = [s.strip() for s in value.split(",") if s.strip()]
    if not names:
        raise UserError(f"--notebooks {value!r}: name at least one notebook, e.g. --notebooks "
                        "01,02 (leave the option out to run all)")
    return names


def handle(args) -> int:
    from factcircuits.run import folders, pipeline
    from factcircuits.run.threads import resolve_threads

    args.runs_dir = folders.given_runs_dir(args.runs_dir)
    select = selected_notebooks(args.notebooks)
    plan = pipeline.plan_run(args.model, args.dataset, overrides_from_args(args),
                             notebooks_dir=args.notebooks_dir, select=select,
                             runs_root=args.runs_dir, max_prompt_tokens=args.max_prompt_tokens,
                             single_token_answers=args.single_token_answers,
                             threads=resolve_threads(args.threads))
    if args.render:
        from factcircuits.report.render import check_renderable

        check_renderable(plan.runs_root)
    for note in plan.notes:
        print(f"note: {note}", file=sys.stderr)
    try:
        result = pipeline.execute_run(plan, progress=not args.no_progress)
    except pipeline.RunFailed as exc:
        if args.json:
            print(json.dumps({"run_id": plan.run_id, "run_dir": None, "status": "failed",
                              "reason": str(exc), "headline": {}}))
        raise
    run_dir = folders.project_relative(result.run_dir)
    if args.render:
        from factcircuits.report.render import render

        # said first: a render that fails must not hide where the finished run is
        print(f"run {result.status}: {run_dir}; rendering the write-up", file=sys.stderr)
        render(to="all", runs_root=plan.runs_root)  # site and PDF (preview: HTML only)
    if args.json:
        print(json.dumps({"run_id": result.run_id, "run_dir": run_dir, "status": result.status,
                          "headline": result.headline}))
    else:
        print(run_dir)
    return 0

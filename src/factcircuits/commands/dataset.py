"""`factcircuits dataset generate|from-relations|filter|validate`."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import warnings
from pathlib import Path

import pandas as pd

from factcircuits.data import datasets
from factcircuits.errors import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser("dataset", help="build, filter and check fact datasets")
    sub = parser.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")

    gen = sub.add_parser("generate", help="generate a dataset with the OpenAI API")
    gen.add_argument("--topic", required=True, help='what the facts are about, e.g. "Paris"')
    gen.add_argument("--n", type=int, required=True, help="number of rows")
    gen.add_argument("--task", choices=["yesno", "cloze"], default="yesno")
    gen.add_argument("--model", default=None, help="OpenAI model (default gpt-4o-2024-08-06)")
    gen.add_argument("--balance", type=float, default=0.5, help="fraction of True rows")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--concurrency", type=int, default=4)
    gen.add_argument("--batch-size", type=int, default=10, help="items asked per request")
    gen.add_argument("--max-attempts", type=int, default=5, help="tries per request")
    gen.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    gen.add_argument("--deadline", type=float, default=900.0,
                     help="seconds for the whole generation, retries included")
    gen.add_argument("--out", required=True, help="output .csv or .jsonl")
    gen.add_argument("--force", action="store_true", help="replace --out if it exists")
    gen.set_defaults(handler=cmd_generate)

    rel = sub.add_parser("from-relations", help="derive cloze/yes-no sets from relation files")
    rel.add_argument("--relations", required=True,
                     help="folder of relation JSON files (or one holding factual/)")
    rel.add_argument("--relation", action="append", default=None, metavar="NAME",
                     help="relation file stem; repeat; default: a set small models know")
    rel.add_argument("--task", choices=["cloze", "yesno", "both"], default="cloze")
    rel.add_argument("--n-per-relation", type=int, default=30)
    rel.add_argument("--seed", type=int, default=0)
    rel.add_argument("--out", required=True,
                     help="output .csv/.jsonl; with --task both, <stem>_cloze and <stem>_yesno")
    rel.add_argument("--force", action="store_true", help="replace outputs that exist")
    rel.set_defaults(handler=cmd_from_relations)

    flt = sub.add_parser("filter", help="keep the rows a model answers correctly")
    flt.add_argument("--model", default="default", help="model spec (default: embedded)")
    flt.add_argument("--dataset", required=True, help="shipped name or path")
    flt.add_argument("--min-margin", type=float, default=0.0,
                     help="keep rows whose main metric (positive = right) exceeds this")
    flt.add_argument("--prompt-format", default="raw", choices=["raw", "chat", "fewshot"])
    flt.add_argument("--answer-map", default=None, help="yes/no answer map (default: shipped)")
    flt.add_argument("--batch-size", type=int, default=16)
    flt.add_argument("--out", required=True, help="kept rows; dropped go to <stem>.dropped.csv")
    flt.add_argument("--force", action="store_true", help="replace outputs that exist")
    flt.set_defaults(handler=cmd_filter)

    val = sub.add_parser("validate", help="check a dataset file and list every problem")
    val.add_argument("path", help="shipped name or path")
    val.add_argument("--model", default=None,
                     help="also check with this model's tokenizer: prompt lengths, answers of "
                          "several tokens (loads the tokenizer only)")
    val.add_argument("--prompt-format", default="raw", choices=["raw", "chat", "fewshot"])
    from factcircuits.commands.run import add_check_arguments

    add_check_arguments(val)
    val.set_defaults(handler=cmd_validate)


# ---------------------------------------------------------------- outputs
OUTPUT_SUFFIXES = (".csv", ".jsonl", ".ndjson")


def check_outputs(out: Path, siblings: list[Path], force: bool, inputs: list[Path] = ()) -> None:
    """Before any work (a paid API call, a model load): the output's format follows its suffix,
    no output is an input, and nothing is replaced without --force."""
    if out.is_dir():
        raise UserError(f"--out {out}: a folder; name the output file .csv or .jsonl")
    if out.suffix.lower() not in OUTPUT_SUFFIXES:
        raise UserError(f"--out {out}: suffix {out.suffix!r} is not a dataset format; use "
                        f"{' or '.join(OUTPUT_SUFFIXES)} (the format follows the suffix)")
    given = {Path(p).resolve() for p in inputs}
    for path in [out, *siblings]:
        if path.resolve() in given:
            raise UserError(f"--out {out}: {path} is also an input; write somewhere else")
    existing = [p for p in [out, *siblings] if p.exists()]
    if existing and not force:
        raise UserError(f"--out {out}: {existing[0]} exists; pass --force to replace it")


# ---------------------------------------------------------------- generate

def cmd_generate(args) -> int:
    from factcircuits.data.generate import DEFAULT_MODEL, GenerateConfig, generate_dataset

    out = Path(args.out)
    check_outputs(out, [out.with_name(out.stem + ".meta.json")], args.force)
    cfg = GenerateConfig(topic=args.topic, n=args.n, task=args.task,
                         model=args.model or DEFAULT_MODEL, balance=args.balance, seed=args.seed,
                         concurrency=args.concurrency, batch_size=args.batch_size,
                         max_attempts=args.max_attempts, timeout=args.timeout,
                         deadline=args.deadline)
    frame, meta = generate_dataset(cfg, args.out)
    usage = meta["usage"]
    cost = meta["cost_estimate_usd"]
    cost_text = f"${cost:.4f}" if cost is not None else "unknown"
    print(f"wrote {args.out}: {len(frame)} rows ({int(frame['label'].sum())} true); "
          f"{usage['requests']} requests, {usage['retries']} retries, "
          f"{usage['prompt_tokens']}+{usage['completion_tokens']} tokens, "
          f"cost ≈ {cost_text}")
    return 0


# ---------------------------------------------------------------- from-relations

def relations_folder(path: str) -> Path:
    folder = Path(path)
    if folder.is_dir() and not any(folder.glob("*.json")) and (folder / "factual").is_dir():
        return folder / "factual"
    return folder


def cmd_from_relations(args) -> int:
    from factcircuits.data.derive import DEFAULT_RELATIONS, derive

    folder = relations_folder(args.relations)
    out = Path(args.out)
    tasks = ["cloze", "yesno"] if args.task == "both" else [args.task]
    names = args.relation or list(DEFAULT_RELATIONS)
    paths = [out.with_name(f"{out.stem}_{t}{out.suffix}") if len(tasks) > 1 else out
             for t in tasks]
    check_outputs(paths[0], [q for p in paths for q in (p, p.with_name(p.stem + ".meta.json"))
                             if q != paths[0]], args.force)
    written = []
    for task in tasks:
        rows = derive(folder, names, task, args.n_per_relation, args.seed)
        path = out.with_name(f"{out.stem}_{task}{out.suffix}") if len(tasks) > 1 else out
        datasets.write_dataset(rows, path)
        meta = {"source": args.relations, "relations": names, "task": task, "seed": args.seed,
                "n_per_relation": args.n_per_relation, "rows": len(rows),
                "source_sha256": {n: hashlib.sha256((folder / f"{n}.json").read_bytes())
                                  .hexdigest() for n in names}}
        datasets.atomic_write_bytes(path.with_name(path.stem + ".meta.json"),
                                    (json.dumps(meta, indent=2) + "\n").encode())
        written.append((path, rows))
    _copy_license(folder, out.parent)
    for path, rows in written:
        counts = rows.groupby("relation").size()
        print(f"wrote {path}: {len(rows)} rows over {len(counts)} relations "
              f"({int(rows['label'].sum())} true)")
    return 0


def _copy_license(folder: Path, dest: Path) -> None:
    """The relation data is MIT-licensed: keep its LICENSE next to anything derived from it."""
    for candidate in (folder / "LICENSE", folder.parent / "LICENSE"):
        if candidate.is_file():
            if not (dest / "LICENSE").exists():
                shutil.copyfile(candidate, dest / "LICENSE")
            return
    print(f"note: no LICENSE found beside {folder}; keep the source's licence with the output",
          file=sys.stderr)


# ---------------------------------------------------------------- filter

def split_by_margin(rows: pd.DataFrame, metric: pd.Series, min_margin: float):
    """(kept, dropped): kept rows have metric > min_margin; dropped rows carry their metric
    and the reason (a NaN metric means the model could not score the row)."""
    metric = metric.reindex(rows.index).astype(float)
    keep = metric > min_margin
    dropped = rows[~keep].copy()
    dropped["metric"] = metric[~keep]
    dropped["reason"] = [f"metric <= {min_margin}" if pd.notna(m) else "not scorable"
                         for m in dropped["metric"]]
    return rows[keep].copy(), dropped


def summary(kept: pd.DataFrame, dropped: pd.DataFrame) -> pd.DataFrame:
    both = pd.concat([kept.assign(kept=True), dropped.assign(kept=False)])
    table = (both.assign(relation=both["relation"].replace("", "(none)"))
             .groupby(["relation", "label"])["kept"].agg(kept="sum", total="size"))
    table["dropped"] = table["total"] - table["kept"]
    table["kept_frac"] = (table["kept"] / table["total"]).round(3)
    return table.reset_index()[["relation", "label", "kept", "dropped", "total", "kept_frac"]]


def cmd_filter(args) -> int:
    if args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be at least 1")
    ds = datasets.load_dataset(args.dataset)
    out = Path(args.out)
    check_outputs(out, [out.with_name(out.stem + ".dropped.csv"),
                        out.with_name(out.stem + ".meta.json")], args.force, [ds.path])
    try:
        from factcircuits.methods.evaluate import score_dataset
        from factcircuits.models import load_model
    except ImportError as exc:
        raise UserError(f"model scoring is not available ({exc}); install the full package") \
            from exc
    lm = load_model(args.model)
    # score_dataset may leave out unscorable rows; a row number column maps scores back.
    tagged = datasets.FactDataset(ds.name, ds.path, ds.sha256, ds.task,
                                  ds.rows.assign(_row=range(len(ds.rows))))
    scores = score_dataset(lm, tagged, prompt_format=args.prompt_format,
                           answer_map=args.answer_map, batch_size=args.batch_size)
    if "metric" not in scores or "_row" not in scores:
        raise UserError("scoring returned no per-row 'metric'; cannot filter")
    metric = pd.Series(scores["metric"].to_numpy(), index=ds.rows.index[scores["_row"]])
    kept, dropped = split_by_margin(ds.rows, metric, args.min_margin)
    dropped_path = out.with_name(out.stem + ".dropped.csv")
    meta = {"source": ds.name, "source_path": str(ds.path), "source_sha256": ds.sha256,
            "model": getattr(lm, "provenance", {"spec": args.model}),
            "min_margin": args.min_margin, "prompt_format": args.prompt_format,
            "metric": "task main metric, label-signed (cloze: logit(answer) − "
                      "logit(counterfactual); yes/no: log-odds), positive = right",
            "kept": len(kept), "dropped": len(dropped)}
    datasets.atomic_write_bytes(dropped_path, _dropped_csv(dropped))
    datasets.atomic_write_bytes(out.with_name(out.stem + ".meta.json"),
                                (json.dumps(meta, indent=2, default=str) + "\n").encode())
    datasets.write_dataset(kept, out)
    print(summary(kept, dropped).to_string(index=False))
    print(f"kept {len(kept)} of {len(ds.rows)} rows (metric > {args.min_margin}) → {out}; "
          f"dropped → {dropped_path}")
    return 0


def _dropped_csv(dropped: pd.DataFrame) -> bytes:
    frame = dropped.reindex(columns=[*datasets.COLUMNS, "metric", "reason"], fill_value="")
    frame["label"] = frame["label"].map(lambda b: "True" if bool(b) else "False")
    return frame.to_csv(index=False, lineterminator="\n").encode("utf-8")


# ---------------------------------------------------------------- validate

def cmd_validate(args) -> int:
    try:
        _, path = datasets.resolve(args.path)
    except UserError as exc:
        print(exc, file=sys.stderr)
        return 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        problems, ds = datasets.check_file(path)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if problems:
        if len(problems) > 1:
            print(f"{path}: {len(problems)} problem(s)", file=sys.stderr)
        for p in problems:
            print(p, file=sys.stderr)
        return 2
    notes = datasets.notes(ds.rows)
    if args.model:
        from factcircuits.models.context import model_context
        from factcircuits.models.loading import check_available, load_tokenizer
        from factcircuits.run import preflight

        check_available(args.model)
        tokenizer = load_tokenizer(args.model)
        checked = preflight.check_with_tokenizer(
            tokenizer, ds, {"prompt_format": args.prompt_format},
            limit=preflight.max_prompt_tokens(args.max_prompt_tokens),
            single_token_answers=args.single_token_answers,
            context=model_context(args.model, tokenizer))
        notes = [n for n in notes if "multi-word" not in n] + checked.notes
        notes.append(f"with {args.model}'s tokenizer: longest prompt "
                     f"{checked.facts['longest_prompt_tokens']} tokens "
                     f"(limit {checked.facts['max_prompt_tokens']})")
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    rels = sorted(set(ds.rows["relation"]) - {""})
    print(f"{path}: ok; task {ds.task}, {len(ds)} rows, {int(ds.rows['label'].sum())} true, "
          f"{len(rels)} relation(s){': ' + ', '.join(rels[:12]) if rels else ''}"
          f"{f' (+{len(rels) - 12} more)' if len(rels) > 12 else ''}")
    return 0

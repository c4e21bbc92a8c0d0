"""Citations for the Quarto-free preview.

Quarto resolves pandoc citations (`[@meng2022rome]`, `[@a; @b]`, in-text `@meng2022rome`)
against `report/references.bib` and renders a References section. The preview (nbconvert and
markdown-it) knows no citations, so it would show the raw keys: `cite_text` writes them as
author–year text instead ("(Meng et al. 2022)", "Meng et al. (2022)"), and
`references_markdown` lists the works cited. A minimal reader of our own BibTeX file, not a
general one: `@type{key, field = {value}, …}` with braced or quoted values and the few TeX
accents the file uses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

BIB_FILE = Path("report") / "references.bib"
# A bracketed citation group holds at least one @key; keys as pandoc reads them.
_KEY = r"[A-Za-z0-9_][\w:.#$%&\-+?<>~/]*"
_GROUP = re.compile(r"\[([^\[\]]*?-?@" + _KEY + r"[^\[\]]*)\]")
_IN_TEXT = re.compile(r"(?<![\w@.\-])@(" + _KEY + r")")
_ACCENTS = {"'": "\u0301", "`": "\u0300", "^": "\u0302", '"': "\u0308", "~": "\u0303",
            "c": "\u0327", "v": "\u030c", "=": "\u0304"}


@dataclass(frozen=True)
class Work:
    key: str
    authors: tuple[str, ...]  # surnames (or a group author's whole name)
    year: str
    title: str
    where: str  # journal, venue or how published
    url: str

    @property
    def label(self) -> str:
        """'Meng et al.', 'Zhang & Nanda', 'nostalgebraist'."""
        names = self.authors or ("Anonymous",)
        if len(names) == 1:
            return names[0]
        if len(names) == 2:
            return f"{names[0]} & {names[1]}"
        return f"{names[0]} et al."


def detex(text: str) -> str:
    """TeX accents and braces to plain Unicode: "M{\\'e}loux" -> 'Méloux'."""
    import unicodedata

    def accent(match: re.Match) -> str:
        return unicodedata.normalize("NFC", match.group(2) + _ACCENTS[match.group(1)])

    text = text.replace("\\textbackslash ", "\\").replace("\\&", "&")
    text = re.sub(r"\\([c'`^\"~v=])\s*\{?([A-Za-z])\}?", accent, text)
    return re.sub(r"\s+", " ", text.replace("{", "").replace("}", "")).strip()


def _fields(body: str) -> dict[str, str]:
    """`name = {value}` / `name = "value"` / `name = 2024` pairs of one entry (nested braces)."""
    fields, i = {}, 0
    while True:
        match = re.compile(r"\s*,?\s*([A-Za-z_]+)\s*=\s*").match(body, i)
        if not match:
            return fields
        name, i = match.group(1).lower(), match.end()
        if i < len(body) and body[i] in "{\"":
            close, depth, j = "}" if body[i] == "{" else '"', 0, i
            while j < len(body):
                if body[j] == "{":
                    depth += 1
                elif body[j] == "}":
                    depth -= 1
                if (close == "}" and depth == 0) or (close == '"' and j > i and body[j] == '"'
                                                      and depth == 0):
                    break
                j += 1
            fields[name], i = body[i + 1:j], j + 1
        else:
            value = re.compile(r"[^,\s]+").match(body, i)
            fields[name], i = (value.group(0), value.end()) if value else ("", i)


def _surname(author: str) -> str:
    author = author.strip()
    if author.startswith("{") and author.endswith("}"):  # a group author, kept whole
        return detex(author)
    if author == "others":
        return ""
    return detex(author.split(",")[0] if "," in author else author.split()[-1])


def read_bib(path: Path) -> dict[str, Work]:
    """The works of a BibTeX file, by key (empty when the file is missing)."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    works = {}
    for start in re.finditer(r"@(\w+)\s*\{\s*([^,\s]+)\s*,", text):
        depth, j = 1, start.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        fields = _fields(text[start.end():j - 1])
        raw_authors = re.split(r"\s+and\s+", fields.get("author", ""))
        authors = [_surname(a) for a in raw_authors if a.strip()]
        if raw_authors and raw_authors[-1].strip() == "others":  # "A and others": et al.
            authors += ["others"] * max(1, 3 - len([a for a in authors if a]))
        key = start.group(2)
        works[key] = Work(key, tuple(a for a in authors if a), detex(fields.get("year", "")),
                          detex(fields.get("title", "")),
                          detex(fields.get("journal") or fields.get("booktitle")
                                or fields.get("howpublished")
                                or (f"arXiv:{fields['eprint']}" if fields.get("eprint")
                                    else "")),
                          fields.get("url", "").strip())
    return works


def cite_text(text: str, works: dict[str, Work], cited: list[str] | None = None) -> str:
    """Pandoc citations in markdown as author–year text: '[@a; @b]' -> '(A 2022; B & C
    2023)', '[see @a, p. 3]' -> '(see A 2022, p. 3)', in-text '@a' -> 'A (2022)'. Keys not in
    `works` and text that is not a citation (an e-mail address, code) are left alone. Keys
    met are appended to `cited` (in order, once)."""
    def note(key: str) -> None:
        if cited is not None and key not in cited:
            cited.append(key)

    def group(match: re.Match) -> str:
        parts = match.group(1).split(";")
        keys = [re.search(r"-?@(" + _KEY + ")", p) for p in parts]
        if not all(k and k.group(1) in works for k in keys):
            return match.group(0)
        out = []
        for part, key in zip(parts, keys):
            work = works[key.group(1)]
            note(work.key)
            author = "" if key.group(0).startswith("-") else work.label + " "
            out.append((part[:key.start()] + author + work.year + part[key.end():]).strip())
        return "(" + "; ".join(out) + ")"

    def in_text(match: re.Match) -> str:
        work = works.get(match.group(1))
        if work is None:
            return match.group(0)
        note(work.key)
        return f"{work.label} ({work.year})"

    return _IN_TEXT.sub(in_text, _GROUP.sub(group, text))


def references_markdown(keys: list[str], works: dict[str, Work]) -> str:
    """The works cited, one list item each, sorted by author and year."""
    import unicodedata

    def plain(text: str) -> str:  # 'Méloux' sorts as 'meloux'
        return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode().lower()

    items = sorted((works[k] for k in keys if k in works),
                   key=lambda w: (plain(w.label), w.year))
    lines = []
    for w in items:
        named = [a for a in w.authors if a != "others"]
        authors = (", ".join(named) + (" et al." if len(named) < len(w.authors) else "")
                   if named else "Anonymous")
        title = w.title if w.title.endswith(("?", "!", ".")) else w.title + "."
        where = f" *{w.where}*." if w.where else ""
        link = f" <{w.url}>" if w.url else ""
        lines.append(f"- {authors} ({w.year}). {title}{where}{link}")
    return "\n".join(lines) + ("\n" if lines else "")

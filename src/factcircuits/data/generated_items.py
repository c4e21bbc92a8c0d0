"""Generated items → dataset rows: normalisation into the schema, and exact and near
duplicate removal (near pairs with different truth values are kept as minimal pairs)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from factcircuits.data.counterfactuals import length_note


@dataclass
class Tally:
    invalid: int = 0
    duplicates: int = 0
    near_duplicates: int = 0
    extra: int = 0
    dropped_examples: list[str] = field(default_factory=list)


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def normalize_item(task: str, item: dict) -> dict | None:
    """A schema row from one model item, or None if the item is unusable."""
    subject = one_line(item.get("subject", ""))
    swap = one_line(item.get("corrupted_subject", ""))
    if task == "yesno":
        question = one_line(item.get("question", "")).rstrip(" ?.")
        if not question or not isinstance(item.get("answer"), bool):
            return None
        prompt = question + "?\n"  # the study's format: question mark then newline
        row = {"task": "yesno", "prompt": prompt, "label": item["answer"], "answer": "",
               "counterfactual": ""}
    else:
        prompt = one_line(item.get("prompt", "")).rstrip(" _.…")
        answer = one_line(item.get("answer", "")).strip(" .")
        counterfactual = one_line(item.get("counterfactual", "")).strip(" .")
        if not (prompt and answer and counterfactual):
            return None
        if answer.casefold() == counterfactual.casefold():
            return None
        row = {"task": "cloze", "prompt": prompt, "label": True, "answer": " " + answer,
               "counterfactual": " " + counterfactual}
    row.update({"subject": "", "relation": "", "corrupted_prompt": "", "corrupted_subject": "",
                "clue": "", "corruption_note": ""})
    if subject and subject in prompt:
        row["subject"] = subject
        if swap and swap.casefold() != subject.casefold():
            row["corrupted_subject"] = swap
            row["corrupted_prompt"] = prompt.replace(subject, swap, 1)
            row["corruption_note"] = (f"subject swapped: {subject}→{swap} (proposed by the "
                                      "generating model; unchecked); "
                                      + length_note(subject, swap))
    if not row["corrupted_prompt"]:
        row["corruption_note"] = "not filled: the generated item gave no usable subject swap"
    return row


def _key(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


def _group(row: dict) -> tuple:
    return (row["label"], _key(row["answer"]))


def _entities(text: str) -> set[str]:
    """Capitalized or numeric words after the first: a cheap proxy for the named entities."""
    words = re.sub(r"[^\w\s]", " ", text).split()[1:]
    return {w for w in words if w[0].isupper() or any(ch.isdigit() for ch in w)}


def is_near_duplicate(a: str, b: str, ratio: float) -> bool:
    """Same words reordered, or nearly the same text about the same entities (so "Is Paris
    in Spain?" and "Is Paris in Italy?" stay two facts)."""
    ka, kb = _key(a), _key(b)
    if sorted(ka.split()) == sorted(kb.split()):
        return True
    if _entities(a) != _entities(b):
        return False
    return difflib.SequenceMatcher(None, ka, kb).ratio() >= ratio


def add_unique(kept: list[dict], new: list[dict], ratio: float, tally: Tally) -> None:
    """Append rows of `new` that are neither exact nor near duplicates of kept rows with the
    same label/answer (near pairs with different truth values are useful minimal pairs)."""
    for row in new:
        same = [k for k in kept if _group(k) == _group(row)]
        if any(_key(k["prompt"]) == _key(row["prompt"]) for k in same):
            tally.duplicates += 1
        elif any(is_near_duplicate(k["prompt"], row["prompt"], ratio) for k in same):
            tally.near_duplicates += 1
        else:
            kept.append(row)
            continue
        if len(tally.dropped_examples) < 20:
            tally.dropped_examples.append(row["prompt"].strip())

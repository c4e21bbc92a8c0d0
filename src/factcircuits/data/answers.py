"""Answer maps (words that mean True / False) turned into token-id sets for one tokenizer.

Each word must be exactly one token: a metric over a word's first piece would silently measure
something else (e.g. Qwen and SmolLM2 split "Nope" into "No" + "pe", and "No" is already in
the False set). Split words are an error naming the word and its pieces, unless the caller asks
to drop them, in which case the drop is reported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from factcircuits.errors import AnswerSetError, UserError

DEFAULT_ANSWER_MAP = "yesno_default"


@dataclass(frozen=True)
class AnswerMap:
    name: str
    true_words: tuple[str, ...]
    false_words: tuple[str, ...]


@dataclass
class AnswerSets:
    true_ids: list[int]
    false_ids: list[int]
    true_tokens: list[str]
    false_tokens: list[str]
    dropped: dict[str, list[str]] = field(default_factory=dict)  # word -> its pieces


def load_answer_map(name_or_path: str = DEFAULT_ANSWER_MAP) -> AnswerMap:
    """A shipped answer map by name, or a JSON file `{"true": [words], "false": [words]}`."""
    from factcircuits.data.datasets import data_dir

    path = Path(name_or_path).expanduser()
    if path.is_dir():
        raise UserError(f"answer_map={name_or_path!r} is a folder; pass its JSON file")
    if not path.is_file():
        path = data_dir() / "answer_maps" / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in (data_dir() / "answer_maps").glob("*.json"))
        raise UserError(f"answer_map={name_or_path!r} not found: use a JSON file path or one of "
                        f"{', '.join(known)}")
    shape = 'write {"true": ["Yes", ...], "false": ["No", ...]}'
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"answer map {path.name}: not valid JSON ({exc}); {shape}") from None
    if not isinstance(raw, dict):
        raise UserError(f"answer map {path.name}: a JSON {type(raw).__name__}, not an object; "
                        f"{shape}")
    sides = {}
    for side in ("true", "false"):
        words = raw.get(side)
        if words is None:
            raise UserError(f"answer map {path.name}: no {side!r} list; {shape}")
        if isinstance(words, str):
            # A string is iterable: read as a list it would become one answer per character.
            raise UserError(f"answer map {path.name}: {side!r} is the string {words!r}, not a "
                            f"list; write \"{side}\": [{json.dumps(words)}]")
        if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
            raise UserError(f"answer map {path.name}: {side!r} must be a list of non-empty "
                            f"strings, got {json.dumps(words)[:80]}; {shape}")
        if not words:
            raise UserError(f"answer map {path.name}: {side!r} is empty; both 'true' and "
                            "'false' need at least one word")
        sides[side] = tuple(words)
    return AnswerMap(path.stem, sides["true"], sides["false"])


def token_pieces(tokenizer, word: str) -> list[str]:
    ids = tokenizer.encode(word, add_special_tokens=False)
    return [tokenizer.decode([i]) for i in ids]


def answer_sets(tokenizer, answer_map: AnswerMap, drop_multi_token: bool = False) -> AnswerSets:
    def ids_for(words: tuple[str, ...], side: str):
        ids, tokens, dropped = [], [], {}
        for word in words:
            encoded = tokenizer.encode(word, add_special_tokens=False)
            if len(encoded) == 1:
                if encoded[0] not in ids:
                    ids.append(encoded[0])
                    tokens.append(word)
                continue
            pieces = token_pieces(tokenizer, word)
            if not drop_multi_token:
                raise AnswerSetError(
                    f"answer map {answer_map.name!r} ({side}): {word!r} is {len(pieces)} tokens "
                    f"{pieces} for this tokenizer; remove it or pass drop_multi_token=True"
                )
            dropped[word] = pieces
        if not ids:
            raise AnswerSetError(f"answer map {answer_map.name!r}: no {side} word is a single "
                                 "token for this tokenizer")
        return ids, tokens, dropped

    true_ids, true_tokens, dropped_true = ids_for(answer_map.true_words, "true")
    false_ids, false_tokens, dropped_false = ids_for(answer_map.false_words, "false")
    shared = set(true_ids) & set(false_ids)
    if shared:
        raise AnswerSetError(f"answer map {answer_map.name!r}: token ids {sorted(shared)} are in "
                             "both the true and the false set")
    return AnswerSets(true_ids, false_ids, true_tokens, false_tokens,
                      {**dropped_true, **dropped_false})


def first_token_id(tokenizer, word: str) -> tuple[int, bool]:
    """Cloze objects: the first token stands for the word (ROME convention); also says whether
    the word was a single token."""
    ids = tokenizer.encode(word, add_special_tokens=False)
    if not ids:
        raise UserError(f"answer {word!r} encodes to no token")
    return ids[0], len(ids) == 1

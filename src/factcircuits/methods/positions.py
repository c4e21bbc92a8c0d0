"""Token positions of a prompt: subject tokens, relation tokens, the last token.

The subject is located by its character span in the (formatted) prompt and mapped to tokens
through the tokenizer's offsets, with exactly the tokenization `factcircuits.models.tokens.encode`
uses (BOS as the tokenizer adds it; no special tokens added for chat prompts). The span is the
last occurrence of the subject (case-sensitive first, then case-insensitive), so few-shot and
chat prefixes that mention the subject earlier do not capture it.

Classes (ROME's token classes, plus Geva et al.'s relation positions):
  prefix            tokens before the question (BOS, few-shot or chat prefix, words before the
                    subject)
  subject_first, subject_middle, subject_last
                    the subject's tokens (a one-token subject is `subject_last`)
  first_subsequent  the first token after the subject (when it is not the last token)
  further           the other tokens after the subject, before the last token
  last              the last token, where the next token is predicted
Relation positions (Geva et al. 2023): the question's tokens that are neither subject tokens
nor the last token (before or after the subject; special tokens and format prefixes excluded).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from factcircuits.errors import UserError

SUBJECT_CLASSES = ("subject_first", "subject_middle", "subject_last")
TOKEN_CLASSES = ("prefix", *SUBJECT_CLASSES, "first_subsequent", "further", "last")
CLASS_TITLES = {"prefix": "before the subject", "subject_first": "first subject token",
                "subject_middle": "middle subject tokens", "subject_last": "last subject token",
                "first_subsequent": "first subsequent token", "further": "further tokens",
                "last": "last token"}


def subject_char_span(prompt: str, subject: str) -> tuple[int, int]:
    """Character span [start, end) of the last occurrence of `subject` in `prompt`."""
    subject = subject.strip()
    if not subject:
        raise UserError(f"empty subject for prompt {prompt!r}")
    start = prompt.rfind(subject)
    if start < 0:
        start = prompt.lower().rfind(subject.lower())
    if start < 0:
        raise UserError(f"subject {subject!r} does not occur in prompt {prompt!r}")
    return start, start + len(subject)


def _encode_with_offsets(tokenizer, prompt: str, fmt: str):
    enc = tokenizer(prompt, add_special_tokens=fmt != "chat", return_offsets_mapping=True)
    return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]


def _span_tokens(offsets, start: int, end: int) -> list[int]:
    """Tokens whose characters overlap [start, end) (empty offsets = special tokens: never)."""
    return [i for i, (a, b) in enumerate(offsets) if b > a and a < end and b > start]


def subject_token_positions(tokenizer, prompt: str, subject: str, fmt: str = "raw") -> list[int]:
    """Positions (in the `encode` tokenization of `prompt`) of the tokens that overlap the
    subject's characters. `prompt` is the formatted prompt, as in `PreparedTask.prompts`."""
    _, offsets = _encode_with_offsets(tokenizer, prompt, fmt)
    start, end = subject_char_span(prompt, subject)
    positions = _span_tokens(offsets, start, end)
    if not positions:
        raise UserError(f"subject {subject!r} maps to no token of {prompt!r}")
    return positions


@dataclass
class PromptPositions:
    tokens: list[str]  # decoded tokens
    subject: list[int]  # subject token positions
    relation: list[int]  # question tokens that are neither subject nor last
    last: int  # last token position
    classes: list[str]  # one of TOKEN_CLASSES per position

    def of_class(self, name: str) -> list[int]:
        return [i for i, c in enumerate(self.classes) if c == name]


def prompt_positions(tokenizer, prompt: str, subject: str, fmt: str = "raw",
                     question: str | None = None) -> PromptPositions:
    """All positions of `prompt` by role. `question` is the unformatted prompt (dataset row's
    `prompt`); relation tokens are taken inside its last occurrence in `prompt` (default: the
    whole prompt, special tokens excluded)."""
    ids, offsets = _encode_with_offsets(tokenizer, prompt, fmt)
    start, end = subject_char_span(prompt, subject)
    subject_pos = _span_tokens(offsets, start, end)
    if not subject_pos:
        raise UserError(f"subject {subject!r} maps to no token of {prompt!r}")
    last = len(ids) - 1
    q_start, q_end = 0, len(prompt)
    if question and question.strip():
        found = prompt.rfind(question.strip())
        if found >= 0 and found <= start:
            q_start, q_end = found, found + len(question.strip())
    in_question = set(_span_tokens(offsets, q_start, q_end))
    relation = [i for i in sorted(in_question) if i not in subject_pos and i != last]

    classes = ["prefix"] * len(ids)
    first, final = subject_pos[0], subject_pos[-1]
    for i in subject_pos:
        classes[i] = "subject_middle"
    classes[first] = "subject_first"
    classes[final] = "subject_last"
    for i in range(final + 1, last):
        classes[i] = "first_subsequent" if i == final + 1 else "further"
    classes[last] = "last"
    tokens = [tokenizer.decode([t]) for t in ids]
    return PromptPositions(tokens, subject_pos, relation, last, classes)


def task_positions(prepared, tokenizer) -> list[PromptPositions]:
    """`PromptPositions` of every clean prompt of a PreparedTask."""
    return [prompt_positions(tokenizer, p, s, prepared.prompt_format, q)
            for p, s, q in zip(prepared.prompts, prepared.rows["subject"], prepared.rows["prompt"])]


def position_mask(positions: list[PromptPositions], role: str, width: int) -> torch.Tensor:
    """Boolean mask [n_prompts, width]: True at the positions of `role` ("subject",
    "relation", "last", or a token class name) of each prompt."""
    mask = torch.zeros(len(positions), width, dtype=torch.bool)
    for row, pos in enumerate(positions):
        if role == "subject":
            idx = pos.subject
        elif role == "relation":
            idx = pos.relation
        elif role == "last":
            idx = [pos.last]
        elif role in TOKEN_CLASSES:
            idx = pos.of_class(role)
        else:
            raise UserError(f"unknown position role {role!r}: use subject, relation, last or one "
                            f"of {', '.join(TOKEN_CLASSES)}")
        idx = [i for i in idx if i < width]
        mask[row, idx] = True
    return mask

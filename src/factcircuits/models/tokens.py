"""Prompt formatting and tokenization.

All prompts go through `encode`: right padding (so real tokens keep their positions, cf.
TransformerLens issue 1609 where left padding changed logits), BOS exactly as the model's own
tokenizer adds it (no double BOS, cf. TL issue 1418), and the index of each prompt's last
real token, where the next-token prediction is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from factcircuits.errors import UserError

PROMPT_FORMATS = ("raw", "chat", "fewshot")

FEWSHOT_PREFIX = {
    "yesno": "Is Tokyo the capital of Japan?\nYes\nIs Berlin in Spain?\nNo\n"
             "Is the Nile a river in Africa?\nYes\nIs Canberra in Brazil?\nNo\n",
    "cloze": "The capital of Japan is Tokyo.\nThe Nile is a river in Africa.\n"
             "The currency of the United States is the dollar.\n",
}


def format_prompt(text: str, fmt: str, tokenizer, task: str = "yesno") -> str:
    if fmt == "raw":
        return text
    if fmt == "fewshot":
        return FEWSHOT_PREFIX[task] + text
    if fmt == "chat":
        if not getattr(tokenizer, "chat_template", None):
            raise UserError("prompt_format='chat' but this tokenizer has no chat template: "
                            "use prompt_format='raw' or 'fewshot'")
        messages = [{"role": "user", "content": text.strip()}]
        chat = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        # Cloze completes the assistant's turn rather than answering a question.
        return chat + text if task == "cloze" else chat
    raise UserError(f"prompt_format={fmt!r}: use one of {', '.join(PROMPT_FORMATS)}")


@dataclass
class Batch:
    tokens: torch.Tensor  # [batch, pos] right-padded
    attention_mask: torch.Tensor  # [batch, pos] 1 for real tokens
    last_index: torch.Tensor  # [batch] position of the last real token

    @property
    def lengths(self) -> torch.Tensor:
        return self.last_index + 1

    def to(self, device) -> Batch:
        return Batch(self.tokens.to(device), self.attention_mask.to(device),
                     self.last_index.to(device))


def encode(tokenizer, prompts: list[str], fmt: str = "raw") -> Batch:
    if not prompts:
        raise UserError("no prompts to encode")
    # A chat template writes its own special tokens; adding BOS again would double it.
    encoded = tokenizer(list(prompts), add_special_tokens=fmt != "chat", padding=True,
                        padding_side="right", return_tensors="pt")
    mask = encoded["attention_mask"]
    return Batch(encoded["input_ids"], mask, mask.sum(dim=1) - 1)



"""Prompt formatting and tokenization.

All prompts go through `encode`: right padding (so real tokens keep their positions, cf.
TransformerLens issue 1609 where left padding changed logits), BOS exactly as the model's own
tokenizer adds it (no double BOS, cf. TL issue 1418), and the index of each prompt's last
real token, where the next-token prediction is read.

The beginning-of-sequence token is a choice per model (`prepend_bos`): "auto" does what the
model's tokenizer does (SmolLM2's adds none, Llama's and Gemma's do), "on" prepends the
tokenizer's BOS, "off" leaves it out. `with_bos_choice` makes a tokenizer that does the
choice, so every tokenization (encoding, positions, lengths checked before a run) follows it;
a chat template's own BOS text counts, so a prompt starts with exactly one BOS under "on"
and none under "off" (`format_prompt`). Why it matters: the first position is where models
park attention they do not need (an attention sink); without BOS a subject at the start of a
prompt sits there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from factcircuits.errors import UserError
from factcircuits.results.parameter_declarations import PREPEND_BOS

PROMPT_FORMATS = ("raw", "chat", "fewshot")
BOS_CHOICES = ("auto", "on", "off")

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
        chat = _chat_bos(chat, tokenizer)
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




# --------------------------------------------------------------------------- BOS per model
def adds_bos(tokenizer) -> bool:
    """Whether `tokenizer` starts an encoded text with its BOS token."""
    ids = tokenizer("a")["input_ids"]
    return tokenizer.bos_token_id is not None and bool(ids) and ids[0] == tokenizer.bos_token_id


def bos_choice(tokenizer) -> str:
    """The BOS choice a tokenizer was made with (`with_bos_choice`): "auto" unless set."""
    return getattr(tokenizer, "factcircuits_bos", "auto")


def with_bos_choice(tokenizer, choice: str = PREPEND_BOS.default):
    """`tokenizer` itself for "auto"; otherwise a copy whose encodings start with its BOS
    ("on") or without it ("off"), by replacing its post-processor. Refused in one line when
    the tokenizer has no BOS token ("on") or adds special tokens other than a leading BOS
    (the replacement would drop them)."""
    import copy

    from tokenizers import processors

    if choice not in BOS_CHOICES:
        raise UserError(f"prepend_bos={choice!r}: use one of {', '.join(BOS_CHOICES)}")
    if choice == "auto":
        return tokenizer
    bos, bos_id = tokenizer.bos_token, tokenizer.bos_token_id
    if choice == "on" and bos_id is None:
        raise UserError("prepend_bos='on' but this tokenizer has no BOS token: use 'auto' or "
                        "'off'")
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    special = tokenizer("a")["input_ids"]
    if special not in (plain, [bos_id, *plain]):
        raise UserError(f"prepend_bos={choice!r}: this tokenizer adds special tokens other than "
                        "a leading BOS, which the choice would drop: use 'auto'")
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise UserError(f"prepend_bos={choice!r} needs a fast tokenizer: use 'auto'")
    out = copy.deepcopy(tokenizer)
    out._tokenizer.post_processor = (
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                      special_tokens=[(bos, bos_id)]) if choice == "on" else
        processors.TemplateProcessing(single="$A", pair="$A $B", special_tokens=[]))
    out.factcircuits_bos = choice
    return out


def _chat_bos(chat: str, tokenizer) -> str:
    """A chat-formatted prompt (encoded without added special tokens) with the BOS choice
    applied to its text: "on" exactly one BOS in front, "off" none, "auto" the template's."""
    choice, bos = bos_choice(tokenizer), tokenizer.bos_token
    if choice == "auto" or not bos:
        return chat
    while chat.startswith(bos):
        chat = chat[len(bos):]
    return bos + chat if choice == "on" else chat

"""Generate fact datasets with OpenAI's chat API (as the original study did with gpt-4o), made
repeatable: structured output with a JSON schema, bounded concurrency, retries with exponential
backoff on 429/5xx/timeouts/malformed JSON, normalization, duplicate and near-duplicate removal,
True/False balance topped up by asking again, a metadata sidecar, and atomic writes.

The key comes from OPENAI_API_KEY only; OPENAI_BASE_URL points the client at any compatible
server (the tests use a local one).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from factcircuits import __version__
from factcircuits.data.datasets import (
    COLUMNS,
    atomic_write_bytes,
    dataset_bytes,
    from_frame,
)
from factcircuits.data.generated_items import Tally, add_unique, normalize_item, one_line
from factcircuits.errors import UserError

DEFAULT_MODEL = "gpt-4o-2024-08-06"  # first gpt-4o snapshot with JSON-schema structured output

# USD per million tokens (input, output), list prices; matched by longest model-name prefix.
PRICES_PER_MTOK = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}

SYSTEM_PROMPT = (
    "You write short, unambiguous factual test items used to probe what a small language "
    "model knows. Use only well-known facts. False statements must be clearly false, not "
    "debatable. Every item must mention its subject verbatim."
)

_ITEM_FIELDS = {
    "yesno": {
        "question": {"type": "string", "description": "a yes/no question ending with '?'"},
        "answer": {"type": "boolean", "description": "true if the correct answer is yes"},
        "subject": {"type": "string", "description": "the entity asked about, verbatim"},
        "corrupted_subject": {
            "type": "string",
            "description": "a same-kind entity that flips the answer when substituted",
        },
    },
    "cloze": {
        "prompt": {"type": "string", "description": "sentence prefix; next word is the answer"},
        "answer": {"type": "string", "description": "the correct next word(s)"},
        "counterfactual": {"type": "string", "description": "a wrong answer of the same kind"},
        "subject": {"type": "string", "description": "the entity in the prompt, verbatim"},
        "corrupted_subject": {
            "type": "string",
            "description": "a same-kind entity whose correct answer is the counterfactual",
        },
    },
}


def response_schema(task: str) -> dict:
    """OpenAI `response_format` for strict JSON-schema structured output."""
    item = {"type": "object", "properties": _ITEM_FIELDS[task],
            "required": list(_ITEM_FIELDS[task]), "additionalProperties": False}
    schema = {"type": "object", "properties": {"items": {"type": "array", "items": item}},
              "required": ["items"], "additionalProperties": False}
    return {"type": "json_schema",
            "json_schema": {"name": f"{task}_items", "strict": True, "schema": schema}}


def request_text(task: str, topic: str, n_true: int, n_false: int, avoid: list[str]) -> str:
    if task == "yesno":
        ask = (f"Write {n_true + n_false} yes/no questions about {topic}: {n_true} whose "
               f"correct answer is yes (answer=true) and {n_false} whose correct answer is no "
               "(answer=false). Each question ends with a question mark.")
    else:
        ask = (f"Write {n_true} cloze prompts about {topic}: a sentence prefix whose next "
               "word is a single well-known fact (e.g. prompt 'The capital of France is', "
               "answer 'Paris', counterfactual 'Rome', subject 'France', corrupted_subject "
               "'Italy').")
    if avoid:
        ask += " Do not repeat or paraphrase these existing items:\n" + "\n".join(
            f"- {a.strip()}" for a in avoid)
    return ask


@dataclass
class GenerateConfig:
    topic: str
    n: int
    task: str = "yesno"
    model: str = DEFAULT_MODEL
    balance: float = 0.5  # fraction of True questions (yes/no only)
    seed: int = 0
    batch_size: int = 10  # items asked per request
    concurrency: int = 4
    max_attempts: int = 5  # per request, first try included
    backoff: float = 1.0  # seconds before the first retry; doubles each retry
    max_backoff: float = 30.0
    timeout: float = 60.0  # per request, seconds
    deadline: float = 900.0  # the whole generation, retries included, seconds
    max_rounds: int = 4  # first round plus top-ups
    temperature: float = 0.7
    near_dup_ratio: float = 0.9  # difflib ratio at which two same-label items are duplicates

    def check(self) -> None:
        if self.task not in ("yesno", "cloze"):
            raise UserError(f"--task {self.task!r}: use yesno or cloze")
        if self.n < 1:
            raise UserError(f"--n {self.n}: ask for at least one item")
        if not 0.0 <= self.balance <= 1.0:
            raise UserError(f"--balance {self.balance}: use a fraction between 0 and 1")
        if not self.topic.strip():
            raise UserError("--topic is empty; say what the facts should be about")
        for flag, value in (("--batch-size", self.batch_size), ("--concurrency", self.concurrency),
                            ("--max-attempts", self.max_attempts),
                            ("max_rounds", self.max_rounds)):
            if value < 1:
                raise UserError(f"{flag} {value}: must be at least 1")
        for flag, value in (("--timeout", self.timeout), ("--deadline", self.deadline)):
            if not value > 0:
                raise UserError(f"{flag} {value}: must be more than 0 seconds")


@dataclass
class Usage:
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    malformed: int = 0


class MalformedResponse(Exception):
    """The server answered 200 but the content is not the JSON we asked for."""


# ---------------------------------------------------------------- calling the API

def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    msg = one_line(getattr(exc, "message", None) or str(exc) or type(exc).__name__)[:200]
    return f"HTTP {status}: {msg}" if status else f"{type(exc).__name__}: {msg}"


def parse_items(content: str | None) -> list[dict]:
    if not content:
        raise MalformedResponse("empty message content (refusal?)")
    try:
        data = json.loads(content)
    except json.JSONDecodeError as exc:
        raise MalformedResponse(f"not JSON ({exc})") from None
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise MalformedResponse("JSON without an 'items' list of objects")
    return items


class Generator:
    def __init__(self, cfg: GenerateConfig, client):
        self.cfg = cfg
        self.client = client
        self.usage = Usage()
        self.tally = Tally()
        self.semaphore = asyncio.Semaphore(max(1, cfg.concurrency))
        self.jitter = random.Random(cfg.seed)
        self.request_index = 0

    async def ask(self, n_true: int, n_false: int, avoid: list[str]) -> list[dict]:
        """One request (with retries) → normalized rows."""
        import openai

        cfg = self.cfg
        seed = cfg.seed + self.request_index  # distinct per request, else batches repeat
        self.request_index += 1
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user",
                     "content": request_text(cfg.task, cfg.topic, n_true, n_false, avoid)}]
        last: BaseException | None = None
        for attempt in range(1, cfg.max_attempts + 1):
            try:
                async with self.semaphore:
                    self.usage.requests += 1
                    resp = await self.client.chat.completions.create(
                        model=cfg.model, messages=messages, seed=seed,
                        temperature=cfg.temperature, response_format=response_schema(cfg.task),
                    )
                if not hasattr(resp, "choices"):  # e.g. a proxy's HTML login page, status 200
                    raise UserError(f"{self.client.base_url} answered with something other "
                                    f"than the API's JSON ({one_line(str(resp))[:60]!r}); "
                                    "check OPENAI_BASE_URL")
                if resp.usage is not None:
                    self.usage.prompt_tokens += resp.usage.prompt_tokens or 0
                    self.usage.completion_tokens += resp.usage.completion_tokens or 0
                items = parse_items(resp.choices[0].message.content if resp.choices else None)
                rows = [normalize_item(cfg.task, i) for i in items]
                self.tally.invalid += sum(r is None for r in rows)
                return [r for r in rows if r is not None]
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise UserError(f"OpenAI refused the API key ({_describe(exc)}); check "
                                "OPENAI_API_KEY") from None
            except openai.RateLimitError as exc:
                if getattr(exc, "code", None) == "insufficient_quota":
                    raise UserError(f"OpenAI quota exhausted ({_describe(exc)}); check "
                                    "billing") from None
                last = exc
            except (openai.BadRequestError, openai.NotFoundError,
                    openai.UnprocessableEntityError) as exc:
                raise UserError(f"OpenAI rejected the request ({_describe(exc)}); check "
                                f"--model {cfg.model!r} supports JSON-schema output") from None
            except (openai.InternalServerError, openai.APITimeoutError,
                    openai.APIConnectionError) as exc:
                last = exc
            except openai.APIStatusError as exc:
                if exc.status_code < 500 and exc.status_code not in (408, 409):
                    raise UserError(f"OpenAI request failed ({_describe(exc)})") from None
                last = exc
            except MalformedResponse as exc:
                self.usage.malformed += 1
                last = exc
            if attempt < cfg.max_attempts:
                self.usage.retries += 1
                delay = min(cfg.max_backoff, cfg.backoff * 2 ** (attempt - 1))
                delay *= 0.5 + 0.5 * self.jitter.random()
                # said as it happens: a silent wait looks like a hang
                print(f"dataset generate: request failed ({_describe(last)}); retry "
                      f"{attempt + 1} of {cfg.max_attempts} in {delay:.0f} s", file=sys.stderr)
                await asyncio.sleep(delay)
        raise UserError(f"gave up after {cfg.max_attempts} attempts ({_describe(last)}); "
                        "try again later or lower --concurrency")

    def chunks(self, n_true: int, n_false: int) -> list[tuple[int, int]]:
        """Split a request for n_true/n_false items into batches, each balanced alike."""
        out, total = [], n_true + n_false
        done_t = done_f = 0
        for start in range(0, total, self.cfg.batch_size):
            size = min(self.cfg.batch_size, total - start)
            t = round(n_true * (start + size) / total) - done_t
            out.append((t, size - t))
            done_t, done_f = done_t + t, done_f + size - t
        return out

    async def run(self) -> list[dict]:
        cfg = self.cfg
        if cfg.task == "yesno":
            target = {True: round(cfg.n * cfg.balance), False: cfg.n - round(cfg.n * cfg.balance)}
        else:
            target = {True: cfg.n, False: 0}
        kept: list[dict] = []
        for _ in range(cfg.max_rounds):
            have = {lab: sum(r["label"] == lab for r in kept) for lab in (True, False)}
            need_t, need_f = (max(0, target[lab] - have[lab]) for lab in (True, False))
            if need_t == 0 and need_f == 0:
                break
            avoid = [r["prompt"] for r in kept][-50:]  # cap the prompt size
            batches = await asyncio.gather(*(self.ask(t, f, avoid)
                                             for t, f in self.chunks(need_t, need_f)))
            for rows in batches:  # request order, so the result is independent of timing
                add_unique(kept, rows, cfg.near_dup_ratio, self.tally)
        selected = {lab: [r for r in kept if r["label"] == lab][: target[lab]]
                    for lab in (True, False)}
        short = {lab: target[lab] - len(selected[lab]) for lab in (True, False)}
        if any(short.values()):
            raise UserError(
                f"after {cfg.max_rounds} rounds still missing {short[True]} true and "
                f"{short[False]} false items about {cfg.topic!r}; broaden --topic or lower --n"
            )
        chosen = {id(r) for lab in selected.values() for r in lab}
        self.tally.extra = len(kept) - len(chosen)
        return [r for r in kept if id(r) in chosen]  # keep generation order, labels mixed


# ---------------------------------------------------------------- entry point

def estimate_cost(model: str, usage: Usage) -> float | None:
    matches = [p for p in PRICES_PER_MTOK if model.startswith(p)]
    if not matches:
        return None
    price_in, price_out = PRICES_PER_MTOK[max(matches, key=len)]
    return round((usage.prompt_tokens * price_in + usage.completion_tokens * price_out) / 1e6, 6)


def sidecar_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.stem + ".meta.json")


def make_client(cfg: GenerateConfig):
    from openai import AsyncOpenAI

    key = os.environ.get("OPENAI_API_KEY", "").strip()
    if not key:
        raise UserError("OPENAI_API_KEY is not set; export it in the environment (the key is "
                        "read from the environment only)")
    base_url = os.environ.get("OPENAI_BASE_URL") or None
    # Retries are ours (backoff we control and count), so the client's own are off.
    return AsyncOpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=cfg.timeout)


async def _generate(cfg: GenerateConfig) -> tuple[list[dict], dict]:
    client = make_client(cfg)
    started = time.time()
    try:
        gen = Generator(cfg, client)
        try:
            rows = await asyncio.wait_for(gen.run(), cfg.deadline)
        except TimeoutError:
            raise UserError(f"no dataset within --deadline {cfg.deadline:g} s "
                            f"({gen.usage.requests} requests, {gen.usage.retries} retries); "
                            f"check that {client.base_url} answers, or raise --deadline") from None
    finally:
        await client.close()
    meta = {
        "factcircuits_version": __version__,
        "created_unix": round(started),
        "elapsed_s": round(time.time() - started, 3),
        "model": cfg.model,
        "base_url": str(client.base_url),
        "system_prompt": SYSTEM_PROMPT,
        "request_template": request_text(cfg.task, cfg.topic, 0, 0, []).replace(" 0 ", " N "),
        "response_format": response_schema(cfg.task),
        "config": asdict(cfg),
        "usage": asdict(gen.usage),
        "cost_estimate_usd": estimate_cost(cfg.model, gen.usage),
        "cost_note": "list prices per million tokens in factcircuits.data.generate.PRICES_PER_MTOK",
        "cleaning": asdict(gen.tally),
        "rows": len(rows),
        "true_rows": sum(r["label"] for r in rows),
    }
    return rows, meta


OUT_SUFFIXES = (".csv", ".jsonl", ".ndjson")


def check_output(out: Path) -> None:
    """Before any API call (they cost money): `out` and its sidecar can be written."""
    if out.suffix.lower() not in OUT_SUFFIXES:
        what = "a folder" if out.is_dir() else f"suffix {out.suffix or '(none)'!r}"
        raise UserError(f"--out {out}: {what}; name the output file .csv or .jsonl, e.g. "
                        f"--out {out / 'facts.csv' if out.is_dir() else out.with_suffix('.csv')}")
    for path in (out, sidecar_path(out)):
        if path.is_dir():
            raise UserError(f"--out {out}: {path} is a folder; choose another file name")
    existing = out.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: {existing} is not writable; choose another folder")


def generate_dataset(cfg: GenerateConfig, out: str | Path) -> tuple[pd.DataFrame, dict]:
    """Generate, validate and write `out` (CSV/JSONL) plus `<stem>.meta.json`. On any error
    nothing is written and an existing `out` is left as it was."""
    cfg.check()
    out = Path(out)
    check_output(out)
    rows, meta = asyncio.run(_generate(cfg))
    frame = from_frame(pd.DataFrame(rows, columns=COLUMNS), name=str(out)).rows
    data = dataset_bytes(frame, out)
    meta["output"] = out.name
    meta["sha256"] = hashlib.sha256(data).hexdigest()
    # Sidecar first, data last: the data file changes only once everything has succeeded;
    # if writing it fails, the previous sidecar comes back (no orphan describing no data).
    side = sidecar_path(out)
    previous = side.read_bytes() if side.is_file() else None
    atomic_write_bytes(side, (json.dumps(meta, indent=2, default=str) + "\n").encode("utf-8"))
    try:
        atomic_write_bytes(out, data)
    except BaseException:
        if previous is None:
            side.unlink(missing_ok=True)
        else:
            atomic_write_bytes(side, previous)
        raise
    return frame, meta

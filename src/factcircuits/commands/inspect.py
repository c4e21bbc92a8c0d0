"""`factcircuits inspect`: top-k next tokens for one prompt, optionally with the cloze metrics."""

from __future__ import annotations

import json

from factcircuits.data.answers import first_token_id
from factcircuits.methods.metrics import cloze_metrics
from factcircuits.methods.topk import top_k_table
from factcircuits.models.forward import final_logits
from factcircuits.models.tokens import PROMPT_FORMATS, encode, format_prompt


def register(subparsers) -> None:
    parser = subparsers.add_parser("inspect", help="top-k next tokens for a prompt")
    parser.add_argument("--model", default="default", help="model spec (default: embedded)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--answer", help="correct answer, e.g. ' Paris' (leading space matters)")
    parser.add_argument("--counterfactual", help="counterfactual answer, e.g. ' Rome'")
    parser.add_argument("--format", default="raw", choices=PROMPT_FORMATS, dest="prompt_format")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(handler=run)


def run(args) -> int:
    from factcircuits.errors import UserError
    from factcircuits.models import load_model

    if not args.prompt.strip():
        raise UserError(f"--prompt {args.prompt!r} is empty; give the text whose next token to "
                        "show, e.g. --prompt 'The capital of France is'")
    for flag, value in (("--answer", args.answer), ("--counterfactual", args.counterfactual)):
        if value is not None and not value.strip():
            raise UserError(f"{flag} {value!r} is empty; give a word with its leading space, "
                            "e.g. ' Paris', or leave the option out")
    if args.k < 1:
        raise UserError(f"--k {args.k}: must be at least 1")
    from factcircuits.data.datasets import spacing_problem
    from factcircuits.data.text import invisible_problem

    for flag, value in (("--prompt", args.prompt), ("--answer", args.answer),
                        ("--counterfactual", args.counterfactual)):
        found = invisible_problem(value) if value else None
        if found:
            raise UserError(f"{flag}: {found}")
        found = spacing_problem(args.prompt, value) if value and flag != "--prompt" else None
        if found:  # the same rule as a dataset's rows (`dataset validate`, `run`)
            raise UserError(f"{flag}: {found}")
    if bool(args.answer) != bool(args.counterfactual) and args.counterfactual:
        raise UserError("--counterfactual needs --answer too")
    from factcircuits.models.context import model_context
    from factcircuits.models.loading import check_available, load_tokenizer
    from factcircuits.run.preflight import check_prompt_fits

    check_available(args.model)  # then the prompt against the model's context, before weights
    tokenizer = load_tokenizer(args.model)
    if args.k > len(tokenizer):
        raise UserError(f"--k {args.k}: the model's vocabulary has {len(tokenizer):,} tokens; "
                        "use at most that many")
    check_prompt_fits(tokenizer, format_prompt(args.prompt, args.prompt_format, tokenizer,
                                               task="cloze"),
                      args.prompt_format, model_context(args.model, tokenizer), "--prompt")
    lm = load_model(args.model, device=args.device, dtype=args.dtype)
    text = format_prompt(args.prompt, args.prompt_format, lm.tokenizer, task="cloze")
    logits = final_logits(lm.model, encode(lm.tokenizer, [text], args.prompt_format))
    table = top_k_table(logits, lm.tokenizer, args.k)
    result = {
        "model": lm.provenance["resolved_name"], "prompt": args.prompt,
        "top_tokens": table[["token", "logit", "prob"]].to_dict(orient="records"),
    }
    if args.answer:
        answer_id, single = first_token_id(lm.tokenizer, args.answer)
        cf_id = first_token_id(lm.tokenizer, args.counterfactual)[0] if args.counterfactual \
            else answer_id
        row = cloze_metrics(logits, [answer_id], [cf_id]).iloc[0]
        result.update(p_answer=float(row["p_answer"]), answer_rank=int(row["rank"]),
                      answer_single_token=single)
        if args.counterfactual:
            result.update(logit_diff=float(row["logit_diff"]),
                          p_counterfactual=float(row["p_counterfactual"]))
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['model']} · {args.prompt!r}")
    print(table[["rank", "token", "logit", "prob"]].to_string(index=False))
    for key in ("logit_diff", "p_answer", "answer_rank"):
        if key in result:
            print(f"{key}: {result[key]:.4g}")
    return 0

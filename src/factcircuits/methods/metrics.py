"""Metrics on next-token logits, per prompt, with the sign set by the label (positive = the
model leans to the right answer).

Yes/no (answer sets T and F from an answer map; s = +1 if the statement is true, −1 if false):
  logit_diff_sum  s · (Σ_{t∈T} logit_t − Σ_{f∈F} logit_f)   the original study's first metric;
                   biased by the set sizes (11 true vs 8 false words).
  prob_mass_diff  s · (P(T) − P(F))                          bounded in [−1, 1]; saturates.
  log_odds        s · (logsumexp_T logit − logsumexp_F logit) = s · log P(T)/P(F); not biased
                   by set sizes, and a difference of log-sum-exps, so it moves almost linearly
                   with the residual stream near the decision: the one used for attribution.
Cloze (correct object c, counterfactual object c'):
  logit_diff      logit_c − logit_c'   p_answer  P(c)   rank  1 + #tokens with a larger logit
"""

from __future__ import annotations

import pandas as pd
import torch

YESNO_METRICS = ("log_odds", "prob_mass_diff", "logit_diff_sum")
CLOZE_METRICS = ("logit_diff", "p_answer", "rank")
MAIN_METRIC = {"yesno": "log_odds", "cloze": "logit_diff"}


def label_signs(labels) -> torch.Tensor:
    return torch.tensor([1.0 if bool(x) else -1.0 for x in labels])


def log_odds(logits: torch.Tensor, true_ids, false_ids) -> torch.Tensor:
    """Unsigned log P(T)/P(F) for logits [..., vocab] → [...]."""
    logits = logits.float()
    return logits[..., true_ids].logsumexp(-1) - logits[..., false_ids].logsumexp(-1)


def logit_diff(logits: torch.Tensor, answer_ids, cf_ids) -> torch.Tensor:
    """logit[answer] − logit[counterfactual] per prompt, for logits [batch, vocab]."""
    rows = torch.arange(len(logits), device=logits.device)
    answer_ids = torch.as_tensor(answer_ids, device=logits.device)
    cf_ids = torch.as_tensor(cf_ids, device=logits.device)
    return logits[rows, answer_ids].float() - logits[rows, cf_ids].float()


def yesno_metrics(logits: torch.Tensor, true_ids, false_ids, labels) -> pd.DataFrame:
    """logits [batch, vocab] at the answer position → one row per prompt."""
    logits = logits.float()
    signs = label_signs(labels).to(logits.device)
    probs = logits.softmax(-1)
    p_true, p_false = probs[:, true_ids].sum(-1), probs[:, false_ids].sum(-1)
    raw_log_odds = log_odds(logits, true_ids, false_ids)
    summed = logits[:, true_ids].sum(-1) - logits[:, false_ids].sum(-1)
    predicted_true = raw_log_odds > 0
    return pd.DataFrame({
        "log_odds": (signs * raw_log_odds).cpu().numpy(),
        "prob_mass_diff": (signs * (p_true - p_false)).cpu().numpy(),
        "logit_diff_sum": (signs * summed).cpu().numpy(),
        "p_true_set": p_true.cpu().numpy(),
        "p_false_set": p_false.cpu().numpy(),
        "predicted": predicted_true.cpu().numpy(),
        "correct": (predicted_true == (signs > 0)).cpu().numpy(),
    })


def cloze_metrics(logits: torch.Tensor, answer_ids, cf_ids) -> pd.DataFrame:
    logits = logits.float()
    answer_ids, cf_ids = torch.as_tensor(answer_ids), torch.as_tensor(cf_ids)
    rows = torch.arange(len(logits))
    answer_logit = logits[rows, answer_ids]
    probs = logits.softmax(-1)
    rank = (logits > answer_logit[:, None]).sum(-1) + 1
    return pd.DataFrame({
        "logit_diff": logit_diff(logits, answer_ids, cf_ids).cpu().numpy(),
        "p_answer": probs[rows, answer_ids].cpu().numpy(),
        "p_counterfactual": probs[rows, cf_ids].cpu().numpy(),
        "rank": rank.cpu().numpy(),
        "correct": (rank == 1).cpu().numpy(),
    })


def summarize(per_prompt: pd.DataFrame, task: str) -> dict[str, float]:
    """Means of every metric of the task, plus accuracy and the count."""
    names = YESNO_METRICS if task == "yesno" else CLOZE_METRICS
    summary = {f"mean_{n}": float(per_prompt[n].mean()) for n in names}
    summary["accuracy"] = float(per_prompt["correct"].mean())
    summary["n_prompts"] = int(len(per_prompt))
    return summary

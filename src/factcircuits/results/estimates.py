"""What a method locates, as a value: an `Estimate` of one quantity of a shared vocabulary.

    Estimate(MLP_AT_SUBJECT, "causal tracing", site="mlp", token_class="subject_last",
             layer=5, layer_range=(4, 6), value=0.28, interval=(0.2, 0.35), unit="AIE", n=13)

Two methods that estimate the same quantity are compared (`report.sureness.checks`), a
published value of it is an Estimate too (`PUBLISHED`), the circuit's cross-check asks which
singled-out components (`why` set) are in the circuit, and the front page draws them
(`report.glance`). A method's registry entry lists the quantities it estimates
(`Method.quantities`) and returns its Estimates of a run (`Method.estimates`); `Run.estimates()`
gathers every method's. NaN or inf are not computed: they read back as None (`from_json`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

# ------------------------------------------------------------------ the shared vocabulary
# A located quantity: compared across methods by the layers holding its resampled peak.
MLP_AT_SUBJECT = "MLP peak at the last subject token"
ATTENTION_AT_LAST = "attention peak at the last token"
ANSWER_HEAD = "the head that moves the answer"
SUBJECT_READ = "where attention reads the subject"
RELATION_READ = "where attention reads the relation"
# values compared with earlier studies, not located layers
ATTENTION_AT_SUBJECT = "attention peak at the last subject token"
MLP_SHARE = "MLPs' share of the direct effect on the answer"
LOCATED = (MLP_AT_SUBJECT, ATTENTION_AT_LAST, ANSWER_HEAD, SUBJECT_READ, RELATION_READ)
QUANTITIES = (*LOCATED, ATTENTION_AT_SUBJECT, MLP_SHARE)
HEAD_QUANTITIES = (ANSWER_HEAD,)  # agree by the head's identity, not by layers

SITE_LABELS = {"mlp": "MLP {layer}", "attn": "attention L{layer}", "head": "L{layer}H{head}"}


def _pair(value: Any) -> tuple | None:
    if value is None or isinstance(value, str) or len(value) != 2:
        return None
    return tuple(value)


@dataclass(frozen=True)
class Estimate:
    quantity: str  # one of QUANTITIES, or the method's own name for a quantity no other has
    method: str  # who estimated it, as sentences name it: "causal tracing", "ROME"
    site: str | None = None  # what was intervened on: "mlp", "attn", "head", "hidden", …
    token_class: str | None = None  # where (methods.positions' classes), if at one position
    layer: int | None = None  # the peak layer (a window's centre)
    layer_range: tuple[int, int] | None = None  # layers holding the peak in 95% of resamples
    head: int | None = None  # the head's index in its layer (site "head")
    value: float | None = None  # the size of the effect at the peak
    interval: tuple[float, float] | None = None  # its 95% interval
    unit: str = ""  # what `value` measures: "AIE", "fraction of the gap", "DLA", …
    n: int | None = None  # prompts (or pairs) it rests on
    window: tuple[int, int] | None = None  # first and last layer acted on together
    why: str = ""  # set when the method singles the component out (the circuit cross-check)
    how: str = ""  # the method's variant, when sentences name it: "head patching"
    model: str | None = None  # a published estimate's model
    n_layers: int | None = None  # a published estimate's model depth

    def __post_init__(self) -> None:
        for name in ("layer_range", "interval", "window"):
            object.__setattr__(self, name, _pair(getattr(self, name)))

    @property
    def component(self) -> str | None:
        """'MLP 5', 'attention L7', 'L3H2': the located component (None: a layer of the
        residual stream or no layer)."""
        label = SITE_LABELS.get(self.site or "")
        if label is None or self.layer is None or (self.site == "head" and self.head is None):
            return None
        return label.format(layer=int(self.layer), head=self.head)

    @property
    def by(self) -> str:
        """The estimator's name in a sentence: the variant when there is one."""
        return self.how or self.method

    @property
    def peak_range(self) -> tuple[int, int] | None:
        """The layers holding the peak; a head's or a single given layer is exact."""
        if self.layer_range is not None:
            return self.layer_range
        if self.site == "head" and self.layer is not None:
            return (int(self.layer), int(self.layer))
        return None

    def to_json(self) -> dict[str, Any]:
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or value == "":
                continue
            if isinstance(value, float) and not math.isfinite(value):
                value = {"not_computed": "not finite"}
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Estimate:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (None if isinstance(v, dict) else v) for k, v in data.items()
                      if k in names})


def of(estimates: list[Estimate], quantity: str, method: str | None = None) -> list[Estimate]:
    """The estimates of one quantity (by one method)."""
    return [e for e in estimates
            if e.quantity == quantity and (method is None or e.method == method)]


def first(estimates: list[Estimate], quantity: str, method: str | None = None
          ) -> Estimate | None:
    found = of(estimates, quantity, method)
    return found[0] if found else None


# ------------------------------------------------------------------ published values
ORIGINAL = "the original study"
ROME = "ROME"
ROME_NOISE_SAMPLES = 10  # Meng et al. 2022 noised each subject 10 times
PUBLISHED = (
    # the study this project extends: direct effects by logit lens on gemma-2b-it
    Estimate(MLP_SHARE, ORIGINAL, site="mlp", layer=13, value=0.70, unit="fraction",
             model="google/gemma-2b-it", n_layers=18),
    # Meng et al. 2022, causal tracing at the last subject token of GPT-2 XL
    Estimate(MLP_AT_SUBJECT, ROME, site="mlp", token_class="subject_last", value=0.066,
             unit="AIE", model="GPT-2 XL", n_layers=48),
    Estimate(ATTENTION_AT_SUBJECT, ROME, site="attn", token_class="subject_last", value=0.016,
             unit="AIE", model="GPT-2 XL", n_layers=48),
)


def published(quantity: str, study: str) -> Estimate:
    return next(e for e in PUBLISHED if e.quantity == quantity and e.method == study)

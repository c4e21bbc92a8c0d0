"""Deterministic derivation of cloze and yes/no fact sets from relation files of the
evandez/relations form (Hernandez et al., ICLR 2024): each JSON file has `name`,
`prompt_templates` (cloze, "{}" = subject) and `samples` [{subject, object}].

Every choice goes through a `random.Random` seeded by (seed, relation), so the same seed gives
the same rows (and, written by `datasets.write_dataset`, the same bytes) whatever other
relations are selected.

Counterfactual design: the corrupted subject is another subject of the same relation whose
objects are disjoint from this subject's, and the cloze counterfactual object is the corrupted
subject's object. So logit(answer) − logit(counterfactual) is positive on the clean prompt and
should be negative on the corrupted one — the setting activation patching wants. Yes/no
corrupted questions flip the truth value the same way.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from factcircuits.data.counterfactuals import length_note, pick_partner
from factcircuits.data.datasets import COLUMNS
from factcircuits.errors import UserError

# Relations a small model plausibly knows; the default selection for the shipped sets.
DEFAULT_RELATIONS = (
    "country_capital_city", "country_language", "country_currency", "country_largest_city",
    "city_in_country", "landmark_in_country", "company_hq", "food_from_country",
    "person_plays_pro_sport", "product_by_company",
)

# Yes/no question per relation; the trailing "\n" matters for instruct models (GUIDE §2).
QUESTION_TEMPLATES = {
    "city_in_country": "Is {subject} in {object}?\n",
    "company_ceo": "Is {object} the CEO of {subject}?\n",
    "company_hq": "Is {subject} headquartered in {object}?\n",
    "country_capital_city": "Is {object} the capital of {subject}?\n",
    "country_currency": "Is the {object} the official currency of {subject}?\n",
    "country_language": "Is {object} the main language spoken in {subject}?\n",
    "country_largest_city": "Is {object} the largest city in {subject}?\n",
    "food_from_country": "Does {subject} originate from {object}?\n",
    "landmark_in_country": "Is {subject} in {object}?\n",
    "landmark_on_continent": "Is {subject} in {object}?\n",
    "person_band_lead_singer": "Is {subject} the lead singer of {object}?\n",
    "person_father": "Is {object} the father of {subject}?\n",
    "person_mother": "Is {object} the mother of {subject}?\n",
    "person_native_language": "Is {object} the native language of {subject}?\n",
    "person_occupation": "Does {subject} work as a {object}?\n",
    "person_plays_instrument": "Does {subject} play the {object}?\n",
    "person_plays_position_in_sport": "Does {subject} play as a {object}?\n",
    "person_plays_pro_sport": "Does {subject} play {object} professionally?\n",
    "person_university": "Did {subject} attend {object}?\n",
    "pokemon_evolutions": "Does {subject} evolve into {object}?\n",
    "presidents_birth_year": "Was {subject} born in {object}?\n",
    "presidents_election_year": "Was {subject} elected president in {object}?\n",
    "product_by_company": "Was {subject} made by {object}?\n",
    "star_constellation": "Is {subject} in the constellation {object}?\n",
    "superhero_archnemesis": "Is {object} the archnemesis of {subject}?\n",
    "superhero_person": "Is {object} the secret identity of {subject}?\n",
}


@dataclass
class Relation:
    name: str  # file stem, e.g. "country_capital_city"
    template: str  # first cloze template, "{}" = subject
    facts: dict[str, list[str]]  # subject → its objects, in file order

    @property
    def objects(self) -> list[str]:
        return sorted({o for objs in self.facts.values() for o in objs})


def load_relation(path: str | Path) -> Relation:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        template = data["prompt_templates"][0]
        samples = data["samples"]
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise UserError(f"{path}: not a relation file ({exc}); expected prompt_templates "
                        "and samples") from None
    if template.count("{}") != 1:
        raise UserError(f"{path}: first prompt template {template!r} needs exactly one '{{}}'")
    facts: dict[str, list[str]] = defaultdict(list)
    for s in samples:
        subj, obj = s["subject"].strip(), s["object"].strip()
        if subj and obj and obj not in facts[subj]:
            facts[subj].append(obj)
    return Relation(path.stem, template, dict(facts))


def available_relations(directory: str | Path) -> list[str]:
    return sorted(p.stem for p in Path(directory).glob("*.json"))


def _rng(seed: int, relation: str) -> random.Random:
    return random.Random(f"{seed}:{relation}")  # str seeds are hashed deterministically


def _partners(rel: Relation, subject: str) -> list[str]:
    """Other subjects whose objects share nothing with this subject's (so the answer differs)."""
    mine = set(rel.facts[subject])
    return sorted(s for s, objs in rel.facts.items() if s != subject and not mine & set(objs))


def _row(**fields) -> dict:
    return {c: fields.get(c, "") for c in COLUMNS}


def cloze_rows(rel: Relation, n: int, rng: random.Random) -> list[dict]:
    subjects = [s for s in sorted(rel.facts) if _partners(rel, s)]
    rng.shuffle(subjects)
    rows = []
    for subject in subjects[:n]:
        partner = pick_partner(subject, _partners(rel, subject), rng)
        answer = rel.facts[subject][0]
        counterfactual = rel.facts[partner][0]
        rows.append(_row(
            task="cloze", prompt=rel.template.format(subject), label=True,
            answer=" " + answer, counterfactual=" " + counterfactual, subject=subject,
            relation=rel.name, corrupted_prompt=rel.template.format(partner),
            corrupted_subject=partner,
            corruption_note=f"subject swapped: {subject}→{partner} (same relation, answer "
                            f"{counterfactual!r} = counterfactual); "
                            + length_note(subject, partner),
        ))
    return rows


def yesno_rows(rel: Relation, n: int, rng: random.Random) -> list[dict]:
    """n//2 true and n//2 false questions (fewer if the relation is small), on distinct
    subjects. False = the subject paired with an object of another subject. The corrupted
    question swaps the subject so that its truth value flips."""
    template = QUESTION_TEMPLATES.get(rel.name)
    if template is None:
        raise UserError(f"no yes/no question template for relation {rel.name!r}; add one to "
                        "factcircuits.data.derive.QUESTION_TEMPLATES or use --task cloze")
    subjects = [s for s in sorted(rel.facts) if _partners(rel, s)]
    rng.shuffle(subjects)
    half = min(n, len(subjects)) // 2
    rows = []
    for k, subject in enumerate(subjects[: 2 * half]):
        truthful = k % 2 == 0  # alternate so truth does not follow position
        if truthful:
            obj = rel.facts[subject][0]
            swap = pick_partner(subject, _partners(rel, subject), rng)  # makes it false
        else:
            swap = pick_partner(subject, _partners(rel, subject), rng)
            obj = rel.facts[swap][0]  # wrong for subject, right for swap: flips to true
        rows.append(_row(
            task="yesno", prompt=template.format(subject=subject, object=obj), label=truthful,
            subject=subject, relation=rel.name,
            corrupted_prompt=template.format(subject=swap, object=obj), corrupted_subject=swap,
            clue=f"object: {obj}",
            corruption_note=f"subject swapped: {subject}→{swap} (corrupted question is "
                            f"{not truthful}); " + length_note(subject, swap),
        ))
    return rows


def derive(relations_dir: str | Path, relations: list[str] | None = None, task: str = "cloze",
           n_per_relation: int = 30, seed: int = 0) -> pd.DataFrame:
    """Rows for one task ("cloze" or "yesno") over the chosen relations (default:
    DEFAULT_RELATIONS), at most n_per_relation per relation, deterministic for the seed."""
    directory = Path(relations_dir)
    if not directory.is_dir():
        raise UserError(f"relations folder {directory} not found; pass --relations DIR with "
                        "the relation JSON files")
    have = available_relations(directory)
    names = list(relations or DEFAULT_RELATIONS)
    unknown = [r for r in names if r not in have]
    if unknown:
        raise UserError(f"relation(s) {', '.join(unknown)} not in {directory}; available: "
                        f"{', '.join(have)}")
    build = {"cloze": cloze_rows, "yesno": yesno_rows}[task]
    rows = []
    for name in names:
        rel = load_relation(directory / f"{name}.json")
        rows += build(rel, n_per_relation, _rng(seed, f"{task}:{name}"))
    return pd.DataFrame(rows, columns=COLUMNS)

"""The model card's statements about the data: its limitations, generated from the data the model was
trained and tested on (sources, labels, held-out sources, patient identifiers, copies, ages)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from cxr.decision import POSITIVE_CLASS
from training.data import UNSEEN, Sample, has_patient_id
from training.unseen import NORMAL

# A class counts as confounded with its source when one source gives more than this share of its films.
CONFOUNDED_SHARE = 0.5


def _share(counter: Counter[str]) -> str:
    total = sum(counter.values())
    return ", ".join(f"{source} {count} ({count / total:.0%})" for source, count in counter.most_common())


def _listed(counter: Counter[str]) -> str:
    return ", ".join(f"{source} {count}" for source, count in counter.most_common()) or "none"


def limitations(
    samples: Sequence[Sample],
    split: dict[str, list[int]],
    negatives: Sequence[str],
    copies: int,
    crossval: bool,
) -> list[str]:
    """One sentence or paragraph per limitation the data shows."""
    used = [samples[i] for name, indices in split.items() if name != UNSEEN for i in indices]
    unseen = [samples[i] for i in split.get(UNSEEN, [])]
    trained_as = {s.file: NORMAL if s.label in negatives else s.label for s in samples}
    notes = ["Research use only; not a medical device and not a diagnosis."]

    by_class: dict[str, Counter[str]] = {}
    for sample in used:
        by_class.setdefault(trained_as[sample.file], Counter())[sample.source] += 1
    confounded = {
        label: sources
        for label, sources in sorted(by_class.items())
        if sources.most_common(1)[0][1] / sum(sources.values()) > CONFOUNDED_SHARE
    }
    if confounded and len({s.source for s in used}) > 1:
        notes.append(
            "Sources are confounded with labels; the model may learn the source instead of the finding. "
            + " ".join(f"The films trained as {label} come from {_share(by)}." for label, by in confounded.items())
        )
    if unseen:
        labels = Counter(s.label for s in unseen)
        held = sorted({s.source for s in unseen})
        notes.append(
            f"The figures for the held-out sources ({', '.join(held)}; model card 'unseen') estimate a hospital "
            f"the model never saw; they rest on {len(unseen)} films: "
            + ", ".join(
                f"{count} {label} ({_listed(Counter(s.source for s in unseen if s.label == label))})"
                for label, count in sorted(labels.items())
            )
            + ". Few films of a class make its figure uncertain by several points."
        )
    elif crossval:
        notes.append(
            "No source was held out of this model: its validation and test films come from the sources it was "
            "trained on, and overstate what a new hospital gets. The leave-source-out cross-validation estimate "
            "(card 'crossval') is the figure for a hospital the model never saw."
        )
    else:
        notes.append(
            "No source was held out: the validation and test films come from the sources the model was trained on, "
            "so its figures overstate what a hospital it never saw would get."
        )
    if negatives:
        trained = Counter(s.label for s in used if s.label in negatives)
        notes.append(
            f"'{NORMAL}' means 'no {POSITIVE_CLASS} call': it was trained on {NORMAL} films and on films with "
            f"other findings ({_listed(trained)}). It is not a statement that the film is {NORMAL}."
        )
    with_ids = Counter(s.source for s in used + unseen if has_patient_id(s))
    without = Counter(s.source for s in used + unseen if not has_patient_id(s))
    without_only = sorted(set(without) - set(with_ids))
    if without:
        notes.append(
            f"Patient identifiers exist for {len(used + unseen) - sum(without.values())} films "
            f"(sources: {', '.join(sorted(with_ids)) or 'none'}); the {sum(without.values())} others "
            f"({_listed(without)}) may place films of one patient in two splits, which flatters the test figures"
            + (f"; {', '.join(without_only)} give none at all." if without_only else ".")
        )
    if copies:
        notes.append(
            f"{copies} pair(s) of copies of one film (the same file, or the same radiograph re-encoded by another "
            "collection) were found and kept in one split (model card data.copies_of_one_film)."
        )
    paediatric = Counter(s.source for s in used + unseen if s.paediatric)
    notes.append(
        "Frontal (PA/AP) chest radiographs only; lateral views, CT and other body parts are out of scope and are "
        "refused by the out-of-distribution gate where it detects them. "
        + (
            f"{sum(paediatric.values())} films are marked paediatric in the data ({_listed(paediatric)}); "
            "other sources do not record age for every film, so the share of children is not known."
            if paediatric
            else "The data marks no film as paediatric; where it does not record age, children may be among the films."
        )
    )
    return notes

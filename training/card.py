"""The model card: what was trained, how, on which data, with which figures; and its limitations,
generated from the data the model was trained and tested on (sources, labels, held-out sources,
patient identifiers, copies, ages)."""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cxr.bundle import CARD_FILE
from cxr.decision import POSITIVE_CLASS
from cxr.gate_statistics import GATE_FILE, GateLimits
from cxr.lungs import crop_parameters
from cxr.preprocess import PARAMETERS
from training.data import UNSEEN, Sample, counts, has_patient_id
from training.decision_rule import DecisionRule, describe_threshold
from training.precision import training_policy
from training.provenance import git_state
from training.unseen import NORMAL

# Arguments that say where things were, not how the model was trained: left out of the card's "training".
NOT_TRAINING = (
    "data",
    "out",
    "cache",
    "no_cache",
    "init_from",
    "lung_localiser",
    "resume",
    "stop_after_epochs",
    "operating_point",
)
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


def model_card(
    args: argparse.Namespace,
    command: str,
    version: str,
    classes: list[str],
    negatives: list[str],
    samples: Sequence[Sample],
    split: dict[str, list[int]],
    left_out_by_class: dict[str, int],
    copies: Sequence[tuple[int, int, str]],
    model,
    fit_stats: dict,
    point: DecisionRule,
    gate: GateLimits,
    features: dict[str, np.ndarray],
    scores: dict,
    started: float,
) -> dict:
    """The card written beside the model; `scores` maps each scored split to its `SplitScores`, `features`
    every split to its 64-d features."""
    from training.cnn import BLOCK_DROPOUT, FEATURE_LAYER, gradcam_layer

    holdout = [h.strip() for h in args.holdout_sources.split(",") if h.strip()]
    left_out = len(samples) - sum(map(len, split.values()))
    crossval = point.crossval
    ood = point.ood
    return {
        "name": "EMCNet-style CNN + soft-voting ensemble",
        "version": version,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "classes": classes,
        "input_size": args.input_size,
        "preprocessing": PARAMETERS,
        "lung_crop": crop_parameters() if args.lung_localiser else None,
        "feature_layer": FEATURE_LAYER,
        "gradcam_layer": gradcam_layer(args.blocks),
        "architecture": {
            "blocks": args.blocks,
            "base_filters": args.base_filters,
            "batch_norm": True,
            "dropout": BLOCK_DROPOUT,
            "parameters": int(model.count_params()),
        },
        "training": {
            **{k: v for k, v in vars(args).items() if k not in NOT_TRAINING},
            "policy": training_policy(args.precision),
            "data": str(args.data),
            "operating_point": str(args.operating_point) if args.operating_point else None,
            "init_from": initial_model(args.init_from),
            "command": command,
            "git": git_state(),
            **fit_stats,
            "wall_seconds": round(time.perf_counter() - started, 1),
        },
        "data": {name: counts(samples, indices) for name, indices in split.items()}
        | {
            "left_out_by_class": dict(left_out_by_class),
            "trained_as_normal": negatives,
            "holdout_sources": holdout,
            "copies_of_one_film": [[samples[i].file, samples[j].file, why] for i, j, why in copies],
            "left_out_as_copies_of_held_out_films": left_out,
        },
        "calibration": {
            "method": "temperature scaling of the ensemble's probabilities, fitted on "
            + ("out-of-source cross-validation predictions" if crossval else "validation"),
            "temperature": point.temperature,
        },
        "threshold": describe_threshold(args, point),
        "crossval": crossval,
        "ood": {
            "method": "Mahalanobis distance of the 64-d features to the training features (Ledoit-Wolf covariance)",
            "threshold": ood.threshold,
            "validation_quantile": args.ood_quantile,
            "pass_rate": {name: float((ood.distance(features[name]) <= ood.threshold).mean()) for name in scores},
            "indeterminate_above_score": point.unusual,
            "indeterminate_quantile": crossval["unusual_quantile"] if crossval else args.unusual_quantile,
            "indeterminate_quantile_of": "out-of-source films" if crossval else "validation films",
        },
        "gate": {k: v for k, v in gate.as_dict().items() if k != "mean_chest"} | {"file": GATE_FILE},
        "metrics": {name: s.metrics for name, s in scores.items()},
        "outcomes": {name: s.outcomes for name, s in scores.items() if s.outcomes is not None},
        "libraries": library_versions(),
        "limitations": limitations(samples, split, negatives, len(copies), crossval is not None),
    }


def library_versions() -> dict[str, str]:
    import joblib
    import keras
    import PIL
    import sklearn
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "joblib": joblib.__version__,
    }


def initial_model(directory: Path | None) -> dict | None:
    """Which model a fine-tuning run started from, and how it had been trained, for the model card."""
    if directory is None:
        return None
    card = json.loads((directory / CARD_FILE).read_text())
    return {
        "version": card["version"],
        "epochs": card["training"]["epochs"],
        "learning_rate": card["training"]["learning_rate"],
        "init_from": card["training"].get("init_from"),
    }

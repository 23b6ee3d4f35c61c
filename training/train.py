"""Train the CNN feature extractor and the soft-voting ensemble, and export the model bundle.

    python -m training.train --data ../shared/data/cxr/manifest.csv --out models/
    python -m training.train --resume models/      # continue a run that was stopped

This module puts the stages together: the command line and resuming (`training.cli`), the data, its
copies and the split (`training.data`, `training.films`, `training.leaks`), the CNN's epochs
(`training.epochs`), the ensemble and the operating point (`training.ensemble`,
`training.decision_rule`), the scores (`training.scoring`), the card (`training.card`) and the
model directory, replaced whole (`training.export`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np

from cxr.bundle import CARD_FILE, CNN_FILE, ENSEMBLE_FILE, OOD_FILE, artifact_version, embed
from cxr.gate_statistics import GATE_FILE, GateLimits
from cxr.lungs import LUNG_FILE, LungLocaliser
from training import leaks, report
from training.card import model_card
from training.cli import RESUMABLE, parse_args, stage
from training.data import SPLIT_FILE, DataError, canonical_label, load_dataset, patient_split, write_split
from training.decision_rule import fit_decision_rule
from training.ensemble import fit_ensemble
from training.epochs import StoppedEarly, same_split, train_cnn
from training.export import write_model_directory
from training.films import survey
from training.images import load_inputs
from training.provenance import command_line
from training.scoring import class_indices, score_split
from training.unseen import NORMAL


def main(argv: list[str] | None = None) -> int:
    # TensorFlow turns its oneDNN kernels on by itself only on CPUs with AVX-512; training is faster with
    # them on CPUs without it too (bench/README.md, "Training speed"). Read when TensorFlow is first
    # imported, which happens below (train_cnn); set here, not at import, so that importing this module
    # changes nothing for serving code in the same process, which gains nothing from them.
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    args = parse_args(argv)
    if args.deterministic:
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    # SIGTERM (a scheduler, a machine shutting down) stops the run as Ctrl-C does, at a checkpoint.
    terminate = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        return train(args, command_line("training.train", argv))
    except (KeyboardInterrupt, StoppedEarly) as stop:
        print(
            f"\n{stop or 'interrupted'}; continue with: python -m training.train --resume {args.out}", file=sys.stderr
        )
        return RESUMABLE
    finally:
        signal.signal(signal.SIGTERM, terminate)


def _names(text: str) -> list[str]:
    return list(dict.fromkeys(canonical_label(c) for c in text.split(",") if c.strip()))


def train(args: argparse.Namespace, command: str) -> int:
    started = time.perf_counter()
    classes = _names(args.classes)
    negatives = [n for n in _names(args.negatives) if n not in classes]
    if negatives and NORMAL not in classes:
        print(f"error: --negatives are trained as '{NORMAL}', which is not among --classes", file=sys.stderr)
        return 2
    holdout = [h.strip() for h in args.holdout_sources.split(",") if h.strip()]
    fractions = tuple(float(f) for f in args.split.split(","))
    cache = None if args.no_cache else args.cache
    try:
        samples, excluded = load_dataset(args.data, classes + negatives)
        stage(
            f"{len(samples)} images of {classes} (trained as {NORMAL}: {negatives or 'none'}); "
            f"left out by class: {dict(excluded) or 'none'}",
            started,
        )
        localiser = LungLocaliser(args.lung_localiser) if args.lung_localiser else None
        images, kept = load_inputs(samples, args.input_size, localiser, skip_bad=args.skip_bad, cache_dir=cache)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    samples = [samples[i] for i in kept]
    unknown = sorted(set(holdout) - {s.source for s in samples})
    if unknown:
        print(f"error: no image comes from the held-out source(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    class_of = class_indices(samples, classes, negatives)
    films = survey(samples, cache)
    copies = leaks.copies(films)
    split = patient_split(samples, fractions, args.seed, holdout, leaks.groups(copies))
    leaked = leaks.crossing(copies, split)
    if leaked:  # patient_split keeps copies together: this is the check that it did
        print(
            f"error: {len(leaked)} film(s) are in two splits (train, val, test, unseen):\n"
            + leaks.describe(leaked, samples, split),
            file=sys.stderr,
        )
        return 2
    stage(
        "split by patient: "
        + ", ".join(f"{k} {len(v)}" for k, v in split.items())
        + f"; {len(copies)} pair(s) of copies of one film kept in one split, "
        + f"{len(samples) - sum(map(len, split.values()))} film(s) left out as copies of held-out films",
        started,
    )
    gate = GateLimits.fit([films.statistics[i] for i in split["train"]])
    if args.init_from is not None and not same_split(args.init_from / SPLIT_FILE, samples, split):
        # Otherwise images the starting model trained on could sit in this run's test split.
        print(
            f"error: the split differs from the one {args.init_from} was trained on; use the same data, "
            "--split, --seed and --holdout-sources",
            file=sys.stderr,
        )
        return 2

    try:
        model, history, fit_stats = train_cnn(args, classes, samples, images, class_of, split, started)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from training.cnn import FEATURE_LAYER  # imports TensorFlow: not before main() has set its options

    stage("extracting 64-d features", started)
    features, cnn_probs = {}, {}
    for name, indices in split.items():
        features[name], cnn_probs[name] = embed(model, FEATURE_LAYER, images[indices].astype(np.float32))
    ensemble = fit_ensemble(features["train"], class_of[split["train"]], args.seed)
    stage("ensemble (decision tree, SVM, random forest, AdaBoost; soft voting) fitted", started)
    point = fit_decision_rule(args, classes, ensemble, features, {n: class_of[i] for n, i in split.items()})
    stage(
        f"temperature {point.temperature:.3f}; operating threshold {point.threshold}, indeterminate from "
        f"{point.indeterminate_below}; OOD distance threshold {point.ood.threshold:.2f}, unusual above score "
        f"{point.unusual:.3f}",
        started,
    )
    scores = {
        # The figures that matter are on images the network and the ensemble did not fit: not on "train".
        name: score_split(
            ensemble,
            features[name],
            cnn_probs[name],
            [samples[i] for i in indices],
            classes,
            negatives,
            point.temperature,
            point.rule,
            point.ood,
            f"\n{name} split",
        )
        for name, indices in split.items()
        if name != "train"
    }

    def write(directory: Path) -> dict:
        import joblib

        model.save(directory / CNN_FILE)
        joblib.dump(ensemble, directory / ENSEMBLE_FILE, compress=3)
        point.ood.save(directory / OOD_FILE)
        gate.save(directory / GATE_FILE)
        if args.lung_localiser:
            shutil.copyfile(args.lung_localiser, directory / LUNG_FILE)
        write_split(directory / SPLIT_FILE, samples, split)
        (directory / "report").mkdir()
        report.training_curves(history, directory / "report" / "training_curves.png")
        test = scores["test"]
        report.confusion(
            test.metrics["ensemble"]["confusion_matrix"],
            classes,
            "Ensemble, test split",
            directory / "report" / "confusion_matrix.png",
        )
        report.roc(class_of[split["test"]], test.probabilities, 0, classes[0], directory / "report" / "roc.png")
        card = model_card(
            args,
            command,
            artifact_version(directory),
            classes,
            negatives,
            samples,
            split,
            excluded,
            copies,
            model,
            fit_stats,
            point,
            gate,
            features,
            scores,
            started,
        )
        (directory / CARD_FILE).write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n")
        return card

    # The new directory replaces OUT whole, its checkpoint with it: the run is complete, nothing to resume.
    card = write_model_directory(args.out, write)
    stage(
        f"model {card['version']} written to {args.out}; total wall time {time.perf_counter() - started:.0f}s",
        started,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

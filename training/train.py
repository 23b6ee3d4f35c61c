"""Train the CNN feature extractor and the soft-voting ensemble, and export the model bundle.

    python -m training.train --data ../shared/data/cxr/manifest.csv --out models/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from cxr.bundle import CARD_FILE, CNN_FILE, ENSEMBLE_FILE, OOD_FILE, artifact_version, embed
from cxr.decision import POSITIVE_CLASS
from cxr.ood import FeatureDistance
from cxr.preprocess import PARAMETERS
from training import report
from training.data import (
    DEFAULT_CLASSES,
    SPLIT_FILE,
    SPLITS,
    DataError,
    canonical_label,
    counts,
    load_dataset,
    patient_split,
    read_split,
    write_split,
)
from training.images import load_images
from training.metrics import choose_threshold
from training.scoring import classifier_probabilities, format_table, score_all

LIMITATIONS = [
    "Research use only; not a medical device and not a diagnosis.",
    "Trained on public web collections in which COVID-19 and normal images mostly come from different "
    "sources (COVID: publication figures, SIRM/BIMCV collections; normal: RSNA/NIH and paediatric Kermany "
    "images). Part of the measured accuracy can come from source artefacts rather than disease; "
    "see the per-source metrics.",
    "Patient identifiers exist only for the ieee8023 and figure1 sources; other sources may place images of "
    "one patient in two splits, which flatters the test metrics.",
    "Frontal (PA/AP) adult and paediatric chest radiographs only; lateral views, CT, and other body parts are "
    "out of scope and are refused by the out-of-distribution gate where it detects them.",
    "Performance on an unseen hospital is expected to be lower than on this test split.",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="manifest CSV or class-folder tree")
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--classes", default=",".join(DEFAULT_CLASSES), help="comma-separated (default: covid,normal)")
    parser.add_argument("--input-size", type=int, default=128, help="square input side in pixels (default 128)")
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=30, help="maximum; early stopping usually ends sooner")
    parser.add_argument("--patience", type=int, default=4, help="early-stopping patience on validation loss")
    parser.add_argument("--warmup-epochs", type=int, default=4, help="epochs before early stopping may act")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--split", default="0.7,0.2,0.1", help="train,validation,test fractions")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--min-sensitivity", type=float, default=0.95, help="threshold rule for covid")
    parser.add_argument("--ood-quantile", type=float, default=0.995, help="validation quantile of the OOD gate")
    parser.add_argument("--skip-bad", action="store_true", help="leave out unreadable rows instead of stopping")
    parser.add_argument("--init-from", type=Path, metavar="MODEL_DIR",
                        help="start from the CNN weights of this model (fine-tuning); it must have the same "
                             "architecture and have been trained on the same split")
    parser.add_argument("--cache", type=Path, default=Path(".cache"), help="where decoded arrays are cached")
    parser.add_argument("--no-cache", action="store_true")
    return parser.parse_args(argv)


def stage(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)


def augmenter(seed: int):
    """Training-only augmentation of position, scale and rotation.

    No exposure augmentation: histogram equalisation in `preprocess` already maps any monotonic
    exposure change to the same input, so gamma/contrast jitter after it only creates inputs that
    inference never sees.
    """
    import keras
    from keras import layers

    geometric = keras.Sequential(
        [
            # "nearest" fill: black corners would be a train-only artefact that validation never shows.
            layers.RandomRotation(0.03, fill_mode="nearest", seed=seed),
            layers.RandomTranslation(0.05, 0.05, fill_mode="nearest", seed=seed + 1),
            layers.RandomZoom((-0.1, 0.1), fill_mode="nearest", seed=seed + 2),
        ],
        name="augment",
    )
    return lambda images, labels: (geometric(images, training=True), labels)


def recalibrate_batch_norm(model, images: np.ndarray, batch_size: int = 128) -> None:
    """Re-estimate every BatchNorm's moving statistics as the plain average over un-augmented
    training images, with dropout off.

    Measured here: with the running averages kept during training (dropout active before each
    BatchNorm, augmented batches), validation accuracy swung between 0.50 and 0.80 from epoch to
    epoch while training accuracy rose steadily; inference then used statistics that the
    dropout-free network never produces (the dropout/BatchNorm "variance shift").
    """
    from keras import layers

    dropouts = [layer for layer in model.layers if isinstance(layer, layers.Dropout)]
    norms = [layer for layer in model.layers if isinstance(layer, layers.BatchNormalization)]
    rates, momenta = [d.rate for d in dropouts], [n.momentum for n in norms]
    for layer in dropouts:
        layer.rate = 0.0
    try:
        for step, start in enumerate(range(0, len(images), batch_size)):
            for layer in norms:
                layer.momentum = step / (step + 1)  # cumulative mean over the batches
            model(images[start : start + batch_size].astype(np.float32), training=True)
    finally:
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum


def train_cnn(args, classes, images, labels, split, started):
    import keras
    import tensorflow as tf

    from training.cnn import build_cnn

    keras.utils.set_random_seed(args.seed)
    model = build_cnn(args.input_size, len(classes), args.base_filters, args.blocks)
    if args.init_from is not None:
        start = keras.models.load_model(args.init_from / CNN_FILE, compile=False)
        model.set_weights(start.get_weights())  # ValueError when the architecture differs
        stage(f"CNN weights taken from {args.init_from}", started)
    model.compile(
        optimizer=keras.optimizers.Adam(args.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    train_idx, val_idx = np.asarray(split["train"]), np.asarray(split["val"])
    present = np.bincount(labels[train_idx], minlength=len(classes))
    weights = {k: float(len(train_idx) / (len(classes) * max(n, 1))) for k, n in enumerate(present)}
    stage(f"CNN: {model.count_params():,} parameters, class weights {weights}", started)
    train_ds = (
        tf.data.Dataset.from_tensor_slices((images[train_idx], labels[train_idx]))
        .shuffle(len(train_idx), seed=args.seed, reshuffle_each_iteration=True)
        .batch(args.batch_size)
        .map(lambda x, y: (tf.cast(x, tf.float32), y))
        .map(augmenter(args.seed), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    val_ds = (
        tf.data.Dataset.from_tensor_slices((images[val_idx].astype(np.float32), labels[val_idx]))
        .batch(64)
        .prefetch(tf.data.AUTOTUNE)
    )
    calibration = images[train_idx[:: max(1, len(train_idx) // 1024)]]

    class RecalibrateBeforeValidation(keras.callbacks.Callback):
        def on_test_begin(self, logs=None):
            recalibrate_batch_norm(self.model, calibration)

    callbacks = [
        RecalibrateBeforeValidation(),
        # Batch-norm statistics make the first epochs' validation loss erratic: judge only after a few.
        keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=args.patience, restore_best_weights=True, start_from_epoch=args.warmup_epochs
        ),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3, patience=3, min_lr=1e-5),
    ]
    fit_started = time.perf_counter()
    history = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=args.epochs,
        class_weight=weights,
        callbacks=callbacks,
        shuffle=False,  # the dataset reshuffles itself each epoch
        verbose=2,
    )
    recalibrate_batch_norm(model, calibration)
    seconds = time.perf_counter() - fit_started
    epochs = len(history.history["loss"])
    throughput = epochs * len(train_idx) / seconds
    stage(f"CNN trained: {epochs} epochs in {seconds:.0f}s ({throughput:.1f} training images/s)", started)
    return model, history.history, {"epochs": epochs, "seconds": round(seconds, 1), "images_per_second": round(throughput, 1)}


def fit_ensemble(features: np.ndarray, labels: np.ndarray, seed: int):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import AdaBoostClassifier, RandomForestClassifier, VotingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    members = [
        ("decision_tree", DecisionTreeClassifier(max_depth=8, min_samples_leaf=5, random_state=seed)),
        # Platt-scaled probabilities, as SVC(probability=True) gave (that flag is deprecated in scikit-learn 1.9).
        ("svm", CalibratedClassifierCV(SVC(kernel="rbf", C=1.0, random_state=seed), method="sigmoid", ensemble=False)),
        ("random_forest", RandomForestClassifier(n_estimators=200, min_samples_leaf=2, random_state=seed, n_jobs=-1)),
        ("adaboost", AdaBoostClassifier(n_estimators=100, learning_rate=0.5, random_state=seed)),
    ]
    pipeline = Pipeline([("scale", StandardScaler()), ("vote", VotingClassifier(members, voting="soft"))])
    return pipeline.fit(features, labels)


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
    return {"version": card["version"], "epochs": card["training"]["epochs"],
            "learning_rate": card["training"]["learning_rate"], "init_from": card["training"].get("init_from")}


def main(argv: list[str] | None = None) -> int:
    # TensorFlow leaves its oneDNN kernels off on CPUs without AVX-512 (these AMD EPYC machines have AVX2):
    # turned on, training ran 1.62x faster here (`python -m bench.training_speed`). Read when TensorFlow is
    # first imported, which happens below (train_cnn); set here, not at import, so that importing this
    # module changes nothing for serving code in the same process, which leaves them off (no gain there).
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    args = parse_args(argv)
    started = time.perf_counter()
    classes = list(dict.fromkeys(canonical_label(c) for c in args.classes.split(",") if c.strip()))
    fractions = tuple(float(f) for f in args.split.split(","))
    try:
        samples, excluded = load_dataset(args.data, classes)
        stage(f"{len(samples)} images of {classes}; left out by class: {dict(excluded) or 'none'}", started)
        images, kept = load_images(
            samples, args.input_size, skip_bad=args.skip_bad, cache_dir=None if args.no_cache else args.cache
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    samples = [samples[i] for i in kept]
    labels = np.array([classes.index(s.label) for s in samples])
    split = patient_split(samples, fractions, args.seed)
    stage("split by patient: " + ", ".join(f"{k} {len(v)}" for k, v in split.items()), started)
    if args.init_from is not None:
        previous = read_split(args.init_from / SPLIT_FILE)
        if previous != {samples[i].file: name for name in SPLITS for i in split[name]}:
            # Otherwise images the starting model trained on could sit in this run's test split.
            print(f"error: the split differs from the one {args.init_from} was trained on; use the same data, "
                  "--split and --seed", file=sys.stderr)
            return 2

    model, history, fit_stats = train_cnn(args, classes, images, labels, split, started)

    stage("extracting 64-d features", started)
    feats, cnn_probs = {}, {}
    for name in SPLITS:
        feats[name], cnn_probs[name] = embed(model, "features", images[split[name]].astype(np.float32))
    ensemble = fit_ensemble(feats["train"], labels[split["train"]], args.seed)
    stage("ensemble (decision tree, SVM, random forest, AdaBoost; soft voting) fitted", started)

    val_probs = ensemble.predict_proba(feats["val"])
    threshold = None
    if POSITIVE_CLASS in classes:
        positive = classes.index(POSITIVE_CLASS)
        threshold = choose_threshold(labels[split["val"]], val_probs[:, positive], positive, args.min_sensitivity)
    ood = FeatureDistance.fit(feats["train"], feats["val"], args.ood_quantile)
    stage(f"operating threshold {threshold}; OOD distance threshold {ood.threshold:.2f}", started)

    metrics, probabilities = {}, {}
    for name in ("val", "test"):
        idx = split[name]
        probabilities[name] = classifier_probabilities(ensemble, feats[name], cnn_probs[name])
        metrics[name] = score_all(probabilities[name], labels[idx], classes, threshold, [samples[i].source for i in idx])
        print(format_table(metrics[name], classes, f"\n{name} split"), flush=True)
    ood_pass = {name: float((ood.distance(feats[name]) <= ood.threshold).mean()) for name in ("val", "test")}

    staging = Path(tempfile.mkdtemp(prefix="model-", dir=args.out.parent if args.out.parent.exists() else None))
    try:
        model.save(staging / CNN_FILE)
        import joblib

        joblib.dump(ensemble, staging / ENSEMBLE_FILE, compress=3)
        ood.save(staging / OOD_FILE)
        write_split(staging / SPLIT_FILE, samples, split)
        (staging / "report").mkdir()
        report.training_curves(history, staging / "report" / "training_curves.png")
        report.confusion(metrics["test"]["ensemble"]["confusion_matrix"], classes,
                         "Ensemble, test split", staging / "report" / "confusion_matrix.png")
        report.roc(labels[split["test"]], probabilities["test"], 0, classes[0], staging / "report" / "roc.png")
        card = {
            "name": "EMCNet-style CNN + soft-voting ensemble",
            "version": artifact_version(staging),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "classes": classes,
            "input_size": args.input_size,
            "preprocessing": PARAMETERS,
            "feature_layer": "features",
            "gradcam_layer": f"block{args.blocks}_relu2",
            "architecture": {"blocks": args.blocks, "base_filters": args.base_filters,
                             "batch_norm": True, "dropout": 0.25, "parameters": int(model.count_params())},
            "training": {**{k: v for k, v in vars(args).items()
                            if k not in ("data", "out", "cache", "no_cache", "init_from")},
                         "data": str(args.data), "init_from": initial_model(args.init_from), **fit_stats,
                         "wall_seconds": round(time.perf_counter() - started, 1)},
            "data": {name: counts(samples, split[name]) for name in SPLITS} | {"left_out_by_class": dict(excluded)},
            "threshold": {"value": threshold, "class": POSITIVE_CLASS if threshold is not None else None,
                          "rule": f"highest validation specificity with sensitivity ≥ {args.min_sensitivity}; "
                                  "ties to the value nearest 0.5" if threshold is not None else "argmax"},
            "ood": {"method": "Mahalanobis distance of the 64-d features to the training features "
                              "(Ledoit-Wolf covariance)",
                    "threshold": ood.threshold, "validation_quantile": args.ood_quantile, "pass_rate": ood_pass},
            "metrics": metrics,
            "libraries": library_versions(),
            "limitations": LIMITATIONS,
        }
        (staging / CARD_FILE).write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n")
        args.out.mkdir(parents=True, exist_ok=True)
        for item in staging.iterdir():
            target = args.out / item.name
            if target.is_dir():
                shutil.rmtree(target)
            shutil.move(str(item), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    stage(f"model {card['version']} written to {args.out}; total wall time {time.perf_counter() - started:.0f}s", started)
    return 0


if __name__ == "__main__":
    sys.exit(main())

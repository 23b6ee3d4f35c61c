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
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from cxr.bundle import CARD_FILE, CNN_FILE, ENSEMBLE_FILE, OOD_FILE, artifact_version, embed
from cxr.calibration import apply_temperature, fit_temperature
from cxr.decision import POSITIVE_CLASS, Rule
from cxr.lungs import LUNG_FILE, LungLocaliser, crop_parameters
from cxr.ood import FeatureDistance
from cxr.preprocess import PARAMETERS
from training import report
from training.augment import augmenter
from training.data import (
    DEFAULT_CLASSES,
    SPLIT_FILE,
    DataError,
    canonical_label,
    counts,
    load_dataset,
    patient_split,
    read_split,
    write_split,
)
from training.images import load_inputs
from training.metrics import choose_threshold
from training.sampling import balanced_weights, epoch_order
from training.scoring import classifier_probabilities, format_table, score_all
from training.unseen import NORMAL, format_sources, per_source

NON_COVID_FINDINGS = "viral_pneumonia,bacterial_pneumonia,other"

LIMITATIONS = [
    "Research use only; not a medical device and not a diagnosis.",
    "Sources are confounded with labels: nearly all normals come from one collection (radiography: RSNA/NIH and paediatric Kermany films), COVID films from web and publication collections. The figures for held-out sources (model card, 'unseen') are the honest estimate for a hospital the model never saw, and they are far below the internal test figures.",
    "The held-out-source estimate rests on few normal films (about 100, mostly paediatric covid19imgds films, 11 ieee8023 and 3 figure1), so its specificity is uncertain by several points; its COVID films are mostly ieee8023 publication figures.",
    "'normal' means 'no COVID-19 call': it was trained on normal films and on films with other findings (pneumonia, tuberculosis, CheXpert findings). It is not a statement that the film is normal.",
    "Patient identifiers exist only for the ieee8023, figure1, montgomery and chexpert sources; other sources may place images of one patient in two splits, which flatters the test metrics.",
    "Frontal (PA/AP) adult and paediatric chest radiographs only; lateral views, CT, and other body parts are out of scope and are refused by the out-of-distribution gate where it detects them.",
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
    parser.add_argument("--holdout-sources", default="",
                        help="comma-separated sources kept out of training and validation altogether; their "
                             "figures estimate a hospital the model never saw")
    parser.add_argument("--negatives", default=NON_COVID_FINDINGS,
                        help="labels trained as the class 'normal' (non-COVID); '' for none "
                             f"(default: {NON_COVID_FINDINGS})")
    parser.add_argument("--sampling", choices=("balanced", "shuffle"), default="balanced",
                        help="balanced: every class an equal share of an epoch, sources within a class by "
                             "sqrt(size); shuffle: every training image once per epoch, with class weights")
    parser.add_argument("--epoch-size", type=int, default=2048, help="images per epoch with --sampling balanced")
    parser.add_argument("--augment", choices=("acquisition", "geometry"), default="geometry",
                        help="geometry: rotation, shift, zoom (default; measured better on held-out sources, "
                             "README ablation); acquisition: also resolution loss, blur/sharpen, JPEG and noise")
    parser.add_argument("--min-sensitivity", type=float, default=0.95, help="threshold rule for covid")
    parser.add_argument("--indeterminate-sensitivity", type=float, default=0.99,
                        help="below the threshold, films are indeterminate down to the p(covid) at which "
                             "'covid or indeterminate' reaches this validation sensitivity")
    parser.add_argument("--unusual-quantile", type=float, default=0.95,
                        help="validation quantile of the OOD distance above which a film not called covid "
                             "is indeterminate")
    parser.add_argument("--ood-quantile", type=float, default=0.995, help="validation quantile of the OOD gate")
    parser.add_argument("--skip-bad", action="store_true", help="leave out unreadable rows instead of stopping")
    parser.add_argument("--init-from", type=Path, metavar="MODEL_DIR",
                        help="start from the CNN weights of this model (fine-tuning); it must have the same "
                             "architecture and have been trained on the same split")
    parser.add_argument("--lung-localiser", type=Path, metavar="FILE",
                        help="a lung localiser from `python -m training.lungs`: the CNN then sees the lung box "
                             "only, and the localiser ships in the model directory")
    parser.add_argument("--cache", type=Path, default=Path(".cache"), help="where decoded arrays are cached")
    parser.add_argument("--no-cache", action="store_true")
    return parser.parse_args(argv)


def stage(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:7.1f}s] {message}", flush=True)


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


def train_cnn(args, classes, samples, images, labels, split, started):
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
    rng_seed = args.seed + 7
    if args.sampling == "balanced":
        groups = [f"{samples[i].source}|{samples[i].label}" for i in train_idx]
        order = epoch_order(balanced_weights(labels[train_idx], groups), args.epochs, args.epoch_size, rng_seed)
        weights = None  # every class already has an equal share of each epoch
    else:
        rng = np.random.default_rng(rng_seed)
        order = np.stack([rng.permutation(len(train_idx)) for _ in range(args.epochs)])
        present = np.bincount(labels[train_idx], minlength=len(classes))
        weights = {k: float(len(train_idx) / (len(classes) * max(n, 1))) for k, n in enumerate(present)}
    steps = order.shape[1] // args.batch_size
    order = order[:, : steps * args.batch_size]
    stage(f"CNN: {model.count_params():,} parameters; {args.sampling} sampling, {steps} steps per epoch, "
          f"class weights {weights}", started)
    train_images = tf.constant(images[train_idx])  # float16: half the memory; cast after the gather
    train_labels = tf.constant(labels[train_idx])
    train_ds = (
        tf.data.Dataset.from_tensor_slices(order.reshape(-1))
        .batch(args.batch_size)
        .map(lambda idx: (tf.gather(train_images, idx), tf.gather(train_labels, idx)))
        .map(augmenter(args.seed, acquisition=args.augment == "acquisition"), num_parallel_calls=tf.data.AUTOTUNE)
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
        steps_per_epoch=steps,
        class_weight=weights,
        callbacks=callbacks,
        shuffle=False,  # `order` fixes every epoch's images
        verbose=2,
    )
    recalibrate_batch_norm(model, calibration)
    seconds = time.perf_counter() - fit_started
    epochs = len(history.history["loss"])
    throughput = epochs * steps * args.batch_size / seconds
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
    negatives = [n for n in dict.fromkeys(canonical_label(c) for c in args.negatives.split(",") if c.strip())
                 if n not in classes]
    if negatives and NORMAL not in classes:
        print(f"error: --negatives are trained as '{NORMAL}', which is not among --classes", file=sys.stderr)
        return 2
    holdout = [h.strip() for h in args.holdout_sources.split(",") if h.strip()]
    fractions = tuple(float(f) for f in args.split.split(","))
    try:
        samples, excluded = load_dataset(args.data, classes + negatives)
        stage(f"{len(samples)} images of {classes} (trained as {NORMAL}: {negatives or 'none'}); "
              f"left out by class: {dict(excluded) or 'none'}", started)
        localiser = LungLocaliser(args.lung_localiser) if args.lung_localiser else None
        images, kept = load_inputs(samples, args.input_size, localiser, skip_bad=args.skip_bad,
                                   cache_dir=None if args.no_cache else args.cache)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    samples = [samples[i] for i in kept]
    unknown = sorted(set(holdout) - {s.source for s in samples})
    if unknown:
        print(f"error: no image comes from the held-out source(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    labels = np.array([classes.index(NORMAL if s.label in negatives else s.label) for s in samples])
    split = patient_split(samples, fractions, args.seed, holdout)
    stage("split by patient: " + ", ".join(f"{k} {len(v)}" for k, v in split.items()), started)
    if args.init_from is not None:
        previous = read_split(args.init_from / SPLIT_FILE)
        if previous != {samples[i].file: name for name, indices in split.items() for i in indices}:
            # Otherwise images the starting model trained on could sit in this run's test split.
            print(f"error: the split differs from the one {args.init_from} was trained on; use the same data, "
                  "--split, --seed and --holdout-sources", file=sys.stderr)
            return 2

    model, history, fit_stats = train_cnn(args, classes, samples, images, labels, split, started)

    stage("extracting 64-d features", started)
    feats, cnn_probs = {}, {}
    for name, indices in split.items():
        feats[name], cnn_probs[name] = embed(model, "features", images[indices].astype(np.float32))
    ensemble = fit_ensemble(feats["train"], labels[split["train"]], args.seed)
    stage("ensemble (decision tree, SVM, random forest, AdaBoost; soft voting) fitted", started)

    raw_val_probs = ensemble.predict_proba(feats["val"])
    temperature = fit_temperature(raw_val_probs, labels[split["val"]])
    val_probs = apply_temperature(raw_val_probs, temperature)
    threshold = lower = None
    if POSITIVE_CLASS in classes:
        positive = classes.index(POSITIVE_CLASS)
        threshold = choose_threshold(labels[split["val"]], val_probs[:, positive], positive, args.min_sensitivity)
        lower = min(threshold, choose_threshold(labels[split["val"]], val_probs[:, positive], positive,
                                                args.indeterminate_sensitivity))
    ood = FeatureDistance.fit(feats["train"], feats["val"], args.ood_quantile)
    unusual = float(np.quantile(ood.distance(feats["val"]), args.unusual_quantile) / ood.threshold)
    rule = Rule(tuple(classes), threshold, lower, unusual)
    stage(f"temperature {temperature:.3f}; operating threshold {threshold}, indeterminate from {lower}; "
          f"OOD distance threshold {ood.threshold:.2f}, unusual above score {unusual:.3f}", started)

    metrics, probabilities, outcomes = {}, {}, {}
    for name, idx in split.items():
        if name == "train":
            continue  # the figures that matter are on images the network and the ensemble did not fit
        probabilities[name] = classifier_probabilities(ensemble, feats[name], cnn_probs[name], temperature)
        metrics[name] = score_all(probabilities[name], labels[idx], classes, threshold,
                                  [samples[i].source for i in idx])
        print(format_table(metrics[name], classes, f"\n{name} split"), flush=True)
        if threshold is not None:
            p_covid = probabilities[name]["ensemble"][:, classes.index(POSITIVE_CLASS)]
            decided = rule.outcomes(probabilities[name]["ensemble"], ood.distance(feats[name]) / ood.threshold)
            outcomes[name] = per_source([samples[i].label for i in idx], p_covid, decided,
                                        [samples[i].source for i in idx])
            print(format_sources(outcomes[name], f"\n{name} split at the deployed rule, per source"), flush=True)
    ood_pass = {name: float((ood.distance(feats[name]) <= ood.threshold).mean()) for name in split if name != "train"}

    staging = Path(tempfile.mkdtemp(prefix="model-", dir=args.out.parent if args.out.parent.exists() else None))
    try:
        model.save(staging / CNN_FILE)
        import joblib

        joblib.dump(ensemble, staging / ENSEMBLE_FILE, compress=3)
        ood.save(staging / OOD_FILE)
        if args.lung_localiser:
            shutil.copyfile(args.lung_localiser, staging / LUNG_FILE)
        write_split(staging / SPLIT_FILE, samples, split)
        (staging / "report").mkdir()
        report.training_curves(history, staging / "report" / "training_curves.png")
        report.confusion(metrics["test"]["ensemble"]["confusion_matrix"], classes,
                         "Ensemble, test split", staging / "report" / "confusion_matrix.png")
        report.roc(labels[split["test"]], probabilities["test"], 0, classes[0], staging / "report" / "roc.png")
        card = {
            "name": "EMCNet-style CNN + soft-voting ensemble",
            "version": artifact_version(staging),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "classes": classes,
            "input_size": args.input_size,
            "preprocessing": PARAMETERS,
            "lung_crop": crop_parameters() if args.lung_localiser else None,
            "feature_layer": "features",
            "gradcam_layer": f"block{args.blocks}_relu2",
            "architecture": {"blocks": args.blocks, "base_filters": args.base_filters,
                             "batch_norm": True, "dropout": 0.25, "parameters": int(model.count_params())},
            "training": {**{k: v for k, v in vars(args).items()
                            if k not in ("data", "out", "cache", "no_cache", "init_from", "lung_localiser")},
                         "data": str(args.data), "init_from": initial_model(args.init_from), **fit_stats,
                         "wall_seconds": round(time.perf_counter() - started, 1)},
            "data": {name: counts(samples, indices) for name, indices in split.items()}
            | {"left_out_by_class": dict(excluded), "trained_as_normal": negatives, "holdout_sources": holdout},
            "calibration": {"method": "temperature scaling of the ensemble's probabilities, fitted on validation",
                            "temperature": temperature},
            "threshold": {"value": threshold, "class": POSITIVE_CLASS if threshold is not None else None,
                          "rule": f"highest validation specificity with sensitivity ≥ {args.min_sensitivity}; "
                                  "ties to the value nearest 0.5" if threshold is not None else "argmax",
                          "indeterminate_below": lower,
                          "indeterminate_rule": "below the threshold, p(covid) from which 'covid or indeterminate' "
                                                f"reaches validation sensitivity ≥ {args.indeterminate_sensitivity}"},
            "ood": {"method": "Mahalanobis distance of the 64-d features to the training features "
                              "(Ledoit-Wolf covariance)",
                    "threshold": ood.threshold, "validation_quantile": args.ood_quantile, "pass_rate": ood_pass,
                    "indeterminate_above_score": unusual, "indeterminate_quantile": args.unusual_quantile},
            "metrics": metrics,
            "outcomes": outcomes,
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

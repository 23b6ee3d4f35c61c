"""Train the CNN feature extractor and the soft-voting ensemble, and export the model bundle.

    python -m training.train --data ../shared/data/cxr/manifest.csv --out models/
    python -m training.train --resume models/      # continue a run that was stopped

A checkpoint is written to OUT/checkpoint/ after every epoch. Ctrl-C or SIGTERM stops the run; it
then exits with status 75 (as does --stop-after-epochs) and `--resume OUT` continues it to the result
the uninterrupted run gives. The checkpoint is removed once the model is written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from cxr.bundle import CARD_FILE, CNN_FILE, ENSEMBLE_FILE, OOD_FILE, artifact_version, embed
from cxr.calibration import apply_temperature, fit_temperature
from cxr.decision import POSITIVE_CLASS, Rule
from cxr.gate_statistics import GATE_FILE, GateLimits
from cxr.lungs import LUNG_FILE, LungLocaliser, crop_parameters
from cxr.ood import FeatureDistance
from cxr.preprocess import PARAMETERS
from training import checkpoint, leaks, report
from training.augment import augmenter
from training.card import limitations
from training.checkpoint import CHECKPOINT_DIR, Progress
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
from training.ensemble import fit_ensemble
from training.films import survey
from training.images import load_inputs
from training.metrics import choose_threshold
from training.precision import CHOICES, training_policy
from training.provenance import command_line, git_state
from training.sampling import balanced_weights, epoch_order
from training.scoring import classifier_probabilities, format_table, score_all
from training.unseen import NORMAL, format_sources, per_source

NON_COVID_FINDINGS = "viral_pneumonia,bacterial_pneumonia,other"
RESUMABLE = 75  # exit status of a run that stopped before its end and can be resumed (EX_TEMPFAIL)
# Arguments that may differ when a run is resumed: they do not change what it computes.
FREE_ON_RESUME = {"resume", "stop_after_epochs", "cache", "no_cache"}
PATH_ARGUMENTS = {"data", "out", "init_from", "lung_localiser", "cache", "operating_point"}
# Batch-norm recalibration averages over this many training images (times every position of each
# feature map, so thousands of values per channel even in the last block): more only lengthens each
# epoch, as it runs once per epoch on the same cores as training.
CALIBRATION_IMAGES = 512

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="manifest CSV or class-folder tree (required unless --resume)")
    parser.add_argument("--out", type=Path, help="model directory to write (required unless --resume)")
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
    parser.add_argument(
        "--holdout-sources",
        default="",
        help="comma-separated sources kept out of training and validation altogether; their "
        "figures estimate a hospital the model never saw",
    )
    parser.add_argument(
        "--negatives",
        default=NON_COVID_FINDINGS,
        help=f"labels trained as the class 'normal' (non-COVID); '' for none (default: {NON_COVID_FINDINGS})",
    )
    parser.add_argument(
        "--sampling",
        choices=("balanced", "shuffle"),
        default="balanced",
        help="balanced: every class an equal share of an epoch, sources within a class by "
        "sqrt(size); shuffle: every training image once per epoch, with class weights",
    )
    parser.add_argument("--epoch-size", type=int, default=2048, help="images per epoch with --sampling balanced")
    parser.add_argument(
        "--augment",
        choices=("acquisition", "geometry"),
        default="geometry",
        help="geometry: rotation, shift, zoom (default; measured better on held-out sources, "
        "README ablation); acquisition: also resolution loss, blur/sharpen, JPEG and noise",
    )
    parser.add_argument("--min-sensitivity", type=float, default=0.95, help="threshold rule for covid")
    parser.add_argument(
        "--indeterminate-sensitivity",
        type=float,
        default=0.99,
        help="below the threshold, films are indeterminate down to the p(covid) at which "
        "'covid or indeterminate' reaches this validation sensitivity",
    )
    parser.add_argument(
        "--unusual-quantile",
        type=float,
        default=0.95,
        help="validation quantile of the OOD distance above which a film not called covid is indeterminate",
    )
    parser.add_argument("--ood-quantile", type=float, default=0.995, help="validation quantile of the OOD gate")
    parser.add_argument(
        "--operating-point",
        type=Path,
        metavar="JSON",
        help="the operating point `training.crossval` fitted on out-of-source predictions "
        "(OUT/operating_point.json): temperature, threshold, indeterminate band and unusual score "
        "come from it instead of the internal validation split, and its estimate goes into the card",
    )
    parser.add_argument("--skip-bad", action="store_true", help="leave out unreadable rows instead of stopping")
    parser.add_argument(
        "--init-from",
        type=Path,
        metavar="MODEL_DIR",
        help="start from the CNN weights of this model (fine-tuning); it must have the same "
        "architecture and have been trained on the same split",
    )
    parser.add_argument(
        "--lung-localiser",
        type=Path,
        metavar="FILE",
        help="a lung localiser from `python -m training.lungs`: the CNN then sees the lung box "
        "only, and the localiser ships in the model directory",
    )
    parser.add_argument(
        "--precision",
        choices=CHOICES,
        default="auto",
        help="auto: bfloat16 mixed precision where the CPU computes bfloat16 natively "
        "(AVX512_BF16, AMX), else float32; the exported model is float32 either way",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="TensorFlow's op determinism: a resumed run ends with the same weights as an "
        "uninterrupted one with the same seed",
    )
    parser.add_argument(
        "--resume", type=Path, metavar="DIR", help="continue the stopped run whose --out was DIR, with its arguments"
    )
    parser.add_argument(
        "--stop-after-epochs",
        type=int,
        metavar="N",
        help="stop, resumably, after N epochs of this invocation (time-boxed sessions)",
    )
    parser.add_argument("--cache", type=Path, default=Path(".cache"), help="where decoded arrays are cached")
    parser.add_argument("--no-cache", action="store_true")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.resume is None:
        if args.data is None or args.out is None:
            parser.error("--data and --out are required (or --resume DIR)")
        return args
    try:
        saved = checkpoint.saved_arguments(args.resume / CHECKPOINT_DIR)
    except OSError:
        parser.error(f"no checkpoint to resume in {args.resume / CHECKPOINT_DIR}")
    # Attributes already in the namespace are not given defaults, so what stays unset was not on the command line.
    unset = object()
    given = parser.parse_args(argv, namespace=argparse.Namespace(**{key: unset for key in vars(args)}))
    for key, value in vars(given).items():
        if value is unset or key in FREE_ON_RESUME:
            continue
        wanted = str(value) if isinstance(value, Path) else value
        if wanted != saved.get(key) and not (key == "out" and Path(wanted) == args.resume):
            parser.error(
                f"--{key.replace('_', '-')} {wanted} differs from the stopped run's {saved.get(key)}; "
                "leave it out to resume that run"
            )
    resumed = {
        key: Path(value) if key in PATH_ARGUMENTS and value is not None else value for key, value in saved.items()
    }
    return argparse.Namespace(**(resumed | {key: getattr(args, key) for key in FREE_ON_RESUME} | {"out": args.resume}))


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


def compile_cnn(model: Any, learning_rate: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )


def epoch_batches(
    images: Any, labels: Any, order: np.ndarray, epoch: int, batch_size: int, seed: int, augment: Callable
) -> Any:
    """The augmented batches of one epoch: images[order] (order: that epoch's positions, a whole
    number of batches). Each batch's augmentation is seeded by (seed, its step in the whole run)."""
    import tensorflow as tf

    steps = len(order) // batch_size
    first = epoch * steps
    dataset = (
        tf.data.Dataset.from_tensor_slices((order.reshape(steps, batch_size), np.arange(first, first + steps)))
        .map(
            lambda idx, step: augment(tf.gather(images, idx), tf.gather(labels, idx), tf.stack([seed, step])),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
        .prefetch(tf.data.AUTOTUNE)
    )
    # One thread per augmentation op: the training step already uses every core, and ops of both
    # fanned out over the same cores only make each other wait.
    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)


def validation_batches(images: np.ndarray, labels: np.ndarray, batch_size: int = 64) -> Any:
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((images.astype(np.float32), labels))
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def run_epoch(
    model: Any,
    batches: Any,
    steps: int,
    class_weight: dict[int, float] | None,
    validation: Any,
    calibration: np.ndarray,
) -> tuple[dict[str, float], dict[str, float]]:
    """One epoch as training runs it: the training steps, batch-norm recalibration, validation.
    Returns the epoch's figures (loss, accuracy, val_loss, val_accuracy) and each part's seconds."""
    marks = [time.perf_counter()]
    fitted = model.fit(batches, epochs=1, steps_per_epoch=steps, class_weight=class_weight, shuffle=False, verbose=0)
    marks.append(time.perf_counter())
    recalibrate_batch_norm(model, calibration)
    marks.append(time.perf_counter())
    validated = model.evaluate(validation, verbose=0, return_dict=True)
    marks.append(time.perf_counter())
    logs = {
        "loss": fitted.history["loss"][-1],
        "accuracy": fitted.history["accuracy"][-1],
        "val_loss": validated["loss"],
        "val_accuracy": validated["accuracy"],
    }
    seconds = dict(zip(("train", "recalibration", "validation"), np.diff(marks).tolist()))
    return logs, seconds


def duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def checkpoint_arguments(args: argparse.Namespace) -> dict[str, Any]:
    return {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}


def same_split(path: Path, samples: list, split: dict[str, list[int]]) -> bool:
    return read_split(path) == {samples[i].file: name for name, indices in split.items() for i in indices}


class StoppedEarly(Exception):
    """The run stopped at an epoch boundary, on request, with a checkpoint to resume from."""


def train_cnn(args, classes, samples, images, labels, split, started):
    import keras

    from training.cnn import build_cnn

    policy = training_policy(args.precision)
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(args.seed)
        model = build_cnn(args.input_size, len(classes), args.base_filters, args.blocks)
        if args.init_from is not None:
            start = keras.models.load_model(args.init_from / CNN_FILE, compile=False)
            model.set_weights(start.get_weights())  # ValueError when the architecture differs
            stage(f"CNN weights taken from {args.init_from}", started)
        compile_cnn(model, args.learning_rate)
        model, history, stats = fit_cnn(model, args, classes, samples, images, labels, split, started, policy)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    if policy != "float32":
        # Serving computes in float32: the same weights in a float32 network.
        trained, model = model, build_cnn(args.input_size, len(classes), args.base_filters, args.blocks)
        model.set_weights(trained.get_weights())
    return model, history, stats


def fit_cnn(
    model: Any,
    args: argparse.Namespace,
    classes: list[str],
    samples: list,
    images: np.ndarray,
    labels: np.ndarray,
    split: dict[str, list[int]],
    started: float,
    policy: str,
) -> tuple[Any, dict[str, list[float]], dict[str, Any]]:
    """Train `model` epoch by epoch from where its checkpoint stands (from the start without --resume)."""
    import tensorflow as tf

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
    stage(
        f"CNN: {model.count_params():,} parameters; {policy}; {args.sampling} sampling, {steps} steps per "
        f"epoch, class weights {weights}",
        started,
    )
    train_images = tf.constant(images[train_idx])  # float16: half the memory; cast after the gather
    train_labels = tf.constant(labels[train_idx])
    augment = augmenter(acquisition=args.augment == "acquisition")
    validation = validation_batches(images[val_idx], labels[val_idx])
    calibration = images[train_idx[:: max(1, len(train_idx) // CALIBRATION_IMAGES)]]

    directory = args.out / CHECKPOINT_DIR
    progress, best_weights = Progress(), None
    if args.resume is not None:
        if not same_split(directory / SPLIT_FILE, samples, split):
            raise DataError(
                f"the split differs from the one of the stopped run in {args.resume}; the data must be the same"
            )
        progress, best_weights = checkpoint.restore(directory, model)
        stage(f"resumed after epoch {progress.epochs_done} from {directory}", started)
    else:
        directory.mkdir(parents=True, exist_ok=True)
        write_split(directory / SPLIT_FILE, samples, split)
    this_session = 0
    while progress.epochs_done < args.epochs and not progress.stopped_early:
        epoch = progress.epochs_done
        if args.stop_after_epochs is not None and this_session >= args.stop_after_epochs:
            raise StoppedEarly(f"stopped after {this_session} epoch(s), as --stop-after-epochs asked")
        batches = epoch_batches(train_images, train_labels, order[epoch], epoch, args.batch_size, args.seed, augment)
        logs, seconds = run_epoch(model, batches, steps, weights, validation, calibration)
        if progress.early_stopping(logs["val_loss"], args.patience, args.warmup_epochs):
            best_weights = model.get_weights()
        rate = float(model.optimizer.learning_rate.numpy())
        model.optimizer.learning_rate = progress.learning_rate(logs["val_loss"], rate)
        progress.record(logs | {"learning_rate": rate}, sum(seconds.values()))
        progress.epochs_done += 1
        this_session += 1
        checkpoint.save(directory, progress, model, best_weights, checkpoint_arguments(args))
        epoch_seconds = sum(seconds.values())
        left = args.epochs - progress.epochs_done
        print(
            f"epoch {progress.epochs_done}/{args.epochs}: loss {logs['loss']:.4f}, accuracy "
            f"{logs['accuracy']:.3f}, val_loss {logs['val_loss']:.4f}, val_accuracy {logs['val_accuracy']:.3f}, "
            f"lr {rate:.2g}; {steps * args.batch_size / epoch_seconds:.1f} images/s (training "
            f"{seconds['train']:.0f}s, recalibration {seconds['recalibration']:.0f}s, validation "
            f"{seconds['validation']:.0f}s); ETA {duration(left * progress.seconds / progress.epochs_done)}"
            + (" at most (early stopping may end sooner)" if left and not progress.stopped_early else ""),
            flush=True,
        )
    if best_weights is not None:
        model.set_weights(best_weights)
        stage(f"weights of the best epoch ({progress.best_epoch + 1}) restored", started)
    recalibrate_batch_norm(model, calibration)
    throughput = progress.epochs_done * steps * args.batch_size / progress.seconds
    stage(
        f"CNN trained: {progress.epochs_done} epochs in {progress.seconds:.0f}s ({throughput:.1f} training images/s)",
        started,
    )
    return (
        model,
        progress.history,
        {
            "epochs": progress.epochs_done,
            "seconds": round(progress.seconds, 1),
            "images_per_second": round(throughput, 1),
        },
    )


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


def operating_rule(
    args: argparse.Namespace, threshold: float | None, lower: float | None, crossval: dict | None
) -> dict:
    """The card's description of the threshold and the indeterminate band."""
    if crossval is not None:
        return {
            "value": threshold,
            "class": POSITIVE_CLASS,
            "rule": crossval["rule"],
            "fitted_on": "pooled out-of-source predictions of leave-source-out cross-validation",
            "indeterminate_below": lower,
            "indeterminate_rule": crossval["rule"],
        }
    return {
        "value": threshold,
        "class": POSITIVE_CLASS if threshold is not None else None,
        "rule": f"highest validation specificity with sensitivity ≥ {args.min_sensitivity}; "
        "ties to the value nearest 0.5"
        if threshold is not None
        else "argmax",
        "fitted_on": "the internal validation split",
        "indeterminate_below": lower,
        "indeterminate_rule": "below the threshold, p(covid) from which 'covid or indeterminate' "
        f"reaches validation sensitivity ≥ {args.indeterminate_sensitivity}",
    }


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


def train(args: argparse.Namespace, command: str) -> int:
    started = time.perf_counter()
    classes = list(dict.fromkeys(canonical_label(c) for c in args.classes.split(",") if c.strip()))
    negatives = [
        n for n in dict.fromkeys(canonical_label(c) for c in args.negatives.split(",") if c.strip()) if n not in classes
    ]
    if negatives and NORMAL not in classes:
        print(f"error: --negatives are trained as '{NORMAL}', which is not among --classes", file=sys.stderr)
        return 2
    holdout = [h.strip() for h in args.holdout_sources.split(",") if h.strip()]
    fractions = tuple(float(f) for f in args.split.split(","))
    try:
        samples, excluded = load_dataset(args.data, classes + negatives)
        stage(
            f"{len(samples)} images of {classes} (trained as {NORMAL}: {negatives or 'none'}); "
            f"left out by class: {dict(excluded) or 'none'}",
            started,
        )
        localiser = LungLocaliser(args.lung_localiser) if args.lung_localiser else None
        images, kept = load_inputs(
            samples, args.input_size, localiser, skip_bad=args.skip_bad, cache_dir=None if args.no_cache else args.cache
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    samples = [samples[i] for i in kept]
    unknown = sorted(set(holdout) - {s.source for s in samples})
    if unknown:
        print(f"error: no image comes from the held-out source(s) {', '.join(unknown)}", file=sys.stderr)
        return 2
    labels = np.array([classes.index(NORMAL if s.label in negatives else s.label) for s in samples])
    films = survey(samples, None if args.no_cache else args.cache)
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
    left_out = len(samples) - sum(map(len, split.values()))
    stage(
        "split by patient: "
        + ", ".join(f"{k} {len(v)}" for k, v in split.items())
        + f"; {len(copies)} pair(s) of copies of one film kept in one split, "
        + f"{left_out} film(s) left out as copies of held-out films",
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
        model, history, fit_stats = train_cnn(args, classes, samples, images, labels, split, started)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

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
        lower = min(
            threshold,
            choose_threshold(labels[split["val"]], val_probs[:, positive], positive, args.indeterminate_sensitivity),
        )
    ood = FeatureDistance.fit(feats["train"], feats["val"], args.ood_quantile)
    unusual = float(np.quantile(ood.distance(feats["val"]), args.unusual_quantile) / ood.threshold)
    crossval = None
    if args.operating_point is not None:
        crossval = json.loads(args.operating_point.read_text())
        temperature, threshold = crossval["temperature"], crossval["threshold"]
        lower, unusual = crossval["indeterminate_below"], crossval["unusual_score"]
        val_probs = apply_temperature(raw_val_probs, temperature)
    rule = Rule(tuple(classes), threshold, lower, unusual)
    stage(
        f"temperature {temperature:.3f}; operating threshold {threshold}, indeterminate from {lower}; "
        f"OOD distance threshold {ood.threshold:.2f}, unusual above score {unusual:.3f}",
        started,
    )

    metrics, probabilities, outcomes = {}, {}, {}
    for name, idx in split.items():
        if name == "train":
            continue  # the figures that matter are on images the network and the ensemble did not fit
        probabilities[name] = classifier_probabilities(ensemble, feats[name], cnn_probs[name], temperature)
        metrics[name] = score_all(
            probabilities[name], labels[idx], classes, threshold, [samples[i].source for i in idx]
        )
        print(format_table(metrics[name], classes, f"\n{name} split"), flush=True)
        if threshold is not None:
            p_covid = probabilities[name]["ensemble"][:, classes.index(POSITIVE_CLASS)]
            decided = rule.outcomes(probabilities[name]["ensemble"], ood.distance(feats[name]) / ood.threshold)
            outcomes[name] = per_source(
                [samples[i].label for i in idx], p_covid, decided, [samples[i].source for i in idx]
            )
            print(format_sources(outcomes[name], f"\n{name} split at the deployed rule, per source"), flush=True)
    ood_pass = {name: float((ood.distance(feats[name]) <= ood.threshold).mean()) for name in split if name != "train"}

    staging = Path(tempfile.mkdtemp(prefix="model-", dir=args.out.parent if args.out.parent.exists() else None))
    try:
        model.save(staging / CNN_FILE)
        import joblib

        joblib.dump(ensemble, staging / ENSEMBLE_FILE, compress=3)
        ood.save(staging / OOD_FILE)
        gate.save(staging / GATE_FILE)
        if args.lung_localiser:
            shutil.copyfile(args.lung_localiser, staging / LUNG_FILE)
        write_split(staging / SPLIT_FILE, samples, split)
        (staging / "report").mkdir()
        report.training_curves(history, staging / "report" / "training_curves.png")
        report.confusion(
            metrics["test"]["ensemble"]["confusion_matrix"],
            classes,
            "Ensemble, test split",
            staging / "report" / "confusion_matrix.png",
        )
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
            "architecture": {
                "blocks": args.blocks,
                "base_filters": args.base_filters,
                "batch_norm": True,
                "dropout": 0.25,
                "parameters": int(model.count_params()),
            },
            "training": {
                **{
                    k: v
                    for k, v in vars(args).items()
                    if k
                    not in (
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
                },
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
                "left_out_by_class": dict(excluded),
                "trained_as_normal": negatives,
                "holdout_sources": holdout,
                "copies_of_one_film": [[samples[i].file, samples[j].file, why] for i, j, why in copies],
                "left_out_as_copies_of_held_out_films": left_out,
            },
            "calibration": {
                "method": "temperature scaling of the ensemble's probabilities, fitted on "
                + ("out-of-source cross-validation predictions" if crossval else "validation"),
                "temperature": temperature,
            },
            "threshold": operating_rule(args, threshold, lower, crossval),
            "crossval": crossval,
            "ood": {
                "method": "Mahalanobis distance of the 64-d features to the training features (Ledoit-Wolf covariance)",
                "threshold": ood.threshold,
                "validation_quantile": args.ood_quantile,
                "pass_rate": ood_pass,
                "indeterminate_above_score": unusual,
                "indeterminate_quantile": crossval["unusual_quantile"] if crossval else args.unusual_quantile,
                "indeterminate_quantile_of": "out-of-source films" if crossval else "validation films",
            },
            "gate": {k: v for k, v in gate.as_dict().items() if k != "mean_chest"} | {"file": GATE_FILE},
            "metrics": metrics,
            "outcomes": outcomes,
            "libraries": library_versions(),
            "limitations": limitations(samples, split, negatives, len(copies), crossval is not None),
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
    shutil.rmtree(args.out / CHECKPOINT_DIR)  # the run is complete: nothing left to resume
    stage(
        f"model {card['version']} written to {args.out}; total wall time {time.perf_counter() - started:.0f}s", started
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

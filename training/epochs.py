"""Training the CNN: epoch by epoch from a checkpoint, with batch-norm recalibration before every validation."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cxr.bundle import CNN_FILE
from training import checkpoint
from training.augment import augmenter
from training.checkpoint import CHECKPOINT_DIR, Progress
from training.cli import stage
from training.data import SPLIT_FILE, DataError, read_split, write_split
from training.precision import training_policy
from training.sampling import balanced_weights, epoch_order

# Batch-norm recalibration averages over this many training images (times every position of each
# feature map, so thousands of values per channel even in the last block): more only lengthens each
# epoch, as it runs once per epoch on the same cores as training.
BATCH_NORM_IMAGES = 512


def recalibrate_batch_norm(model, images: np.ndarray, batch_size: int = 128) -> None:
    """Re-estimate every BatchNorm's moving statistics as the plain average over un-augmented
    training images, with dropout off.

    Measured here: with the running averages kept during training (dropout active before each
    BatchNorm, augmented batches), validation accuracy swung between 0.50 and 0.80 from epoch to
    epoch while training accuracy rose steadily; inference then used statistics that the
    dropout-free network never produces (the dropout/BatchNorm "variance shift").
    """
    from keras import layers

    every = _layers(model)
    dropouts = [layer for layer in every if isinstance(layer, layers.Dropout)]
    norms = [layer for layer in every if isinstance(layer, layers.BatchNormalization)]
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


def _layers(model) -> list:
    """Every layer of `model` and of the models nested in it, once each (a training wrapper holds the CNN
    as one of its layers)."""
    import keras

    found: dict[int, Any] = {}
    for layer in model.layers:
        for inner in _layers(layer) if isinstance(layer, keras.Model) else [layer]:
            found.setdefault(id(inner), inner)
    return list(found.values())


def compile_cnn(model: Any, learning_rate: float) -> None:
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )


def epoch_batches(
    images: Any,
    class_of: Any,
    order: np.ndarray,
    epoch: int,
    batch_size: int,
    seed: int,
    augment: Callable,
    partners: np.ndarray | None = None,
) -> Any:
    """The augmented batches of one epoch: images[order] (order: that epoch's positions, a whole
    number of batches). Each batch's augmentation is seeded by (seed, its step in the whole run).
    With `partners` (positions, as `order`), each image's amplitude spectrum is first mixed with its
    partner's (`training.mixing`)."""
    import tensorflow as tf

    steps = len(order) // batch_size
    first = epoch * steps
    columns = (order.reshape(steps, batch_size), np.arange(first, first + steps))

    def batch(idx: tf.Tensor, step: tf.Tensor, partner: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        key, films = tf.stack([seed, step]), tf.gather(images, idx)
        if partner is not None:
            from training.mixing import mix_amplitudes

            mix_key, key = tf.unstack(tf.random.experimental.stateless_split(tf.cast(key, tf.int64), 2))
            films = mix_amplitudes(tf.cast(films, tf.float32), tf.gather(images, partner), mix_key)
        return augment(films, tf.gather(class_of, idx), key)

    if partners is not None:
        columns += (partners.reshape(steps, batch_size),)
    dataset = (
        tf.data.Dataset.from_tensor_slices(columns)
        .map(batch, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )
    # One thread per augmentation op: the training step already uses every core, and ops of both
    # fanned out over the same cores only make each other wait.
    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 1
    return dataset.with_options(options)


def validation_batches(images: np.ndarray, class_of: np.ndarray, batch_size: int = 64) -> Any:
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices((images.astype(np.float32), class_of))
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )


def run_epoch(
    model: Any,
    batches: Any,
    steps: int,
    class_weight: dict[int, float] | None,
    validation: Any,
    batch_norm_images: np.ndarray,
) -> tuple[dict[str, float], dict[str, float]]:
    """One epoch as training runs it: the training steps, batch-norm recalibration, validation.
    Returns the epoch's figures (loss, accuracy, val_loss, val_accuracy) and each part's seconds."""
    marks = [time.perf_counter()]
    fitted = model.fit(batches, epochs=1, steps_per_epoch=steps, class_weight=class_weight, shuffle=False, verbose=0)
    marks.append(time.perf_counter())
    recalibrate_batch_norm(model, batch_norm_images)
    marks.append(time.perf_counter())
    validated = model.evaluate(validation, verbose=0, return_dict=True)
    marks.append(time.perf_counter())
    # Training figures as the model reports them (a source adversary adds "source_loss", "reversal_weight").
    logs = {key: values[-1] for key, values in fitted.history.items()} | {
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


def train_cnn(args, classes, samples, images, class_of, split, started):
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
        if args.source_adversary:
            from training.adversary import SourceAdversarialCNN

            sources = len({samples[i].source for i in split["train"]})
            model = SourceAdversarialCNN(model, len(classes), sources)
            model.compile(optimizer=keras.optimizers.Adam(args.learning_rate))
        else:
            compile_cnn(model, args.learning_rate)
        model, history, stats = fit_cnn(model, args, classes, samples, images, class_of, split, started, policy)
        if args.source_adversary:
            model = model.cnn  # the adversary's head trains the features; it is not part of the model
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
    class_of: np.ndarray,
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
        order = epoch_order(balanced_weights(class_of[train_idx], groups), args.epochs, args.epoch_size, rng_seed)
        weights = None  # every class already has an equal share of each epoch
    else:
        rng = np.random.default_rng(rng_seed)
        order = np.stack([rng.permutation(len(train_idx)) for _ in range(args.epochs)])
        present = np.bincount(class_of[train_idx], minlength=len(classes))
        weights = {k: float(len(train_idx) / (len(classes) * max(n, 1))) for k, n in enumerate(present)}
    steps = order.shape[1] // args.batch_size
    order = order[:, : steps * args.batch_size]
    stage(
        f"CNN: {model.count_params():,} parameters; {policy}; {args.sampling} sampling, {steps} steps per "
        f"epoch, class weights {weights}",
        started,
    )
    train_images = tf.constant(images[train_idx])  # float16: half the memory; cast after the gather
    train_sources = np.array([samples[i].source for i in train_idx])
    train_targets = class_of[train_idx]
    if args.source_adversary:
        from training.adversary import encode_targets

        names, source_index = np.unique(train_sources, return_inverse=True)
        train_targets = encode_targets(train_targets, source_index, len(names))
    partners = None
    if args.mix_sources:
        from training.mixing import source_partners

        partners = source_partners(class_of[train_idx], train_sources, order, (rng_seed, 1))
    train_classes = tf.constant(train_targets)
    augment = augmenter(acquisition=args.augment == "acquisition")
    validation = validation_batches(images[val_idx], class_of[val_idx])
    batch_norm_images = images[train_idx[:: max(1, len(train_idx) // BATCH_NORM_IMAGES)]]

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
        if args.source_adversary:
            from training.adversary import reversal_weight

            model.reversal.assign(args.adversary_weight * reversal_weight(epoch, args.epochs))
        batches = epoch_batches(
            train_images,
            train_classes,
            order[epoch],
            epoch,
            args.batch_size,
            args.seed,
            augment,
            None if partners is None else partners[epoch],
        )
        logs, seconds = run_epoch(model, batches, steps, weights, validation, batch_norm_images)
        if progress.is_best_epoch(logs["val_loss"], args.patience, args.warmup_epochs):
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
            f"{logs['accuracy']:.3f}, "
            + (
                f"source loss {logs['source_loss']:.3f} (reversal weight {logs['reversal_weight']:.3f}), "
                if "source_loss" in logs
                else ""
            )
            + f"val_loss {logs['val_loss']:.4f}, val_accuracy {logs['val_accuracy']:.3f}, "
            f"lr {rate:.2g}; {steps * args.batch_size / epoch_seconds:.1f} images/s (training "
            f"{seconds['train']:.0f}s, recalibration {seconds['recalibration']:.0f}s, validation "
            f"{seconds['validation']:.0f}s); ETA {duration(left * progress.seconds / progress.epochs_done)}"
            + (" at most (early stopping may end sooner)" if left and not progress.stopped_early else ""),
            flush=True,
        )
    if best_weights is not None:
        model.set_weights(best_weights)
        stage(f"weights of the best epoch ({progress.best_epoch + 1}) restored", started)
    recalibrate_batch_norm(model, batch_norm_images)
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

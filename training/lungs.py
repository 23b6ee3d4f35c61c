"""Train the lung localiser of `cxr.lungs` from lung masks and lung boxes.

    python -m training.lungs --lungs ../shared/data/cxr-lungs --images ../shared/data/cxr --out lungs.keras

`--lungs` holds `masks/<file>.png` (255 = lung) and/or `boxes.csv` (`file,lung,x,y,w,h`, one row per
lung); `--images` the films they refer to, by the same file name and of the same size. The target of
each film is the box around both lungs, as fractions of the frame that `cxr.preprocess.crop_box`
leaves; where a film has both, the box drawn by a person (`boxes.csv`) is used. A seeded fifth of
the films (by source) is held out, and the localiser is judged there: the IoU of its box with the
true one, and the share of the true lung box that the widened crop keeps.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.imaging import decode_image
from cxr.lungs import LOCALISER_SIZE, normalise_fractions
from cxr.preprocess import crop_box, preprocess
from training.data import source_from_name


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lungs", type=Path, required=True, help="folder with masks/ and/or boxes.csv")
    parser.add_argument("--images", type=Path, required=True, help="folder of the films they refer to")
    parser.add_argument("--out", type=Path, required=True, help="where to write the localiser (.keras)")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=42)
    return parser.parse_args(argv)


def _pixel_boxes(lungs: Path) -> dict[str, tuple[float, float, float, float]]:
    """file → (top, bottom, left, right) in pixels around both lungs; person-drawn boxes win over masks."""
    boxes: dict[str, tuple[float, float, float, float]] = {}
    for mask_path in sorted((lungs / "masks").glob("*.png")) if (lungs / "masks").is_dir() else []:
        mask = np.asarray(Image.open(mask_path).convert("L")) > 127
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size and cols.size:
            boxes[mask_path.name] = (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1)
    drawn: dict[str, list[tuple[float, float, float, float]]] = defaultdict(list)
    if (lungs / "boxes.csv").is_file():
        with (lungs / "boxes.csv").open(newline="") as handle:
            for row in csv.DictReader(handle):
                x, y, w, h = (float(row[k]) for k in ("x", "y", "w", "h"))
                drawn[row["file"]].append((y, y + h, x, x + w))
    for file, parts in drawn.items():
        parts_array = np.array(parts)
        boxes[file] = (
            parts_array[:, 0].min(),
            parts_array[:, 1].max(),
            parts_array[:, 2].min(),
            parts_array[:, 3].max(),
        )
    return boxes


def load_targets(lungs: Path, images: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(overview tensors n × 64 × 64 × 1, lung-box fractions of the frame n × 4, file names)."""
    tensors, targets, files = [], [], []
    for file, (top, bottom, left, right) in sorted(_pixel_boxes(lungs).items()):
        path = images / file
        if not path.is_file():
            continue
        pixels = decode_image(path.read_bytes()).pixels
        f_top, f_bottom, f_left, f_right = crop_box(pixels)
        height, width = f_bottom - f_top, f_right - f_left
        fractions = [
            (top - f_top) / height,
            (bottom - f_top) / height,
            (left - f_left) / width,
            (right - f_left) / width,
        ]
        tensors.append(preprocess(pixels, LOCALISER_SIZE).tensor)
        targets.append(np.clip(fractions, 0.0, 1.0))
        files.append(file)
    if not files:
        raise SystemExit(f"error: no film of {images} has a lung mask or box in {lungs}")
    return np.stack(tensors), np.array(targets, dtype=np.float32), files


def build_localiser():
    import keras
    from keras import layers

    inputs = keras.Input((LOCALISER_SIZE, LOCALISER_SIZE, 1), name="overview")
    x = inputs
    for filters in (16, 32, 64, 64):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)  # position matters here: no global pooling
    x = layers.Dropout(0.3)(x)
    x = layers.Dense(64, activation="relu")(x)
    outputs = layers.Dense(4, activation="sigmoid", name="lung_box")(x)  # top, bottom, left, right
    return keras.Model(inputs, outputs, name="lung_localiser")


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise IoU of (top, bottom, left, right) boxes."""
    height = np.clip(np.minimum(a[:, 1], b[:, 1]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    width = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 2], b[:, 2]), 0, None)
    inter = height * width
    return inter / np.maximum(_area(a) + _area(b) - inter, 1e-9)


def _area(box: np.ndarray) -> np.ndarray:
    return (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2])


def kept_share(crop: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Share of each true lung box that lies inside the crop."""
    height = np.clip(np.minimum(crop[:, 1], truth[:, 1]) - np.maximum(crop[:, 0], truth[:, 0]), 0, None)
    width = np.clip(np.minimum(crop[:, 3], truth[:, 3]) - np.maximum(crop[:, 2], truth[:, 2]), 0, None)
    return height * width / np.maximum(_area(truth), 1e-9)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    import keras
    import tensorflow as tf

    from training.augment import augmenter

    tensors, targets, files = load_targets(args.lungs, args.images)
    sources = np.array([source_from_name(f) for f in files])
    rng = np.random.default_rng(args.seed)
    held = np.zeros(len(files), dtype=bool)
    for source in np.unique(sources):
        members = np.flatnonzero(sources == source)
        held[rng.choice(members, size=max(1, len(members) // 5), replace=False)] = True
    print(
        f"{len(files)} films with lung boxes ({dict(zip(*np.unique(sources, return_counts=True)))}); "
        f"{(~held).sum()} to train, {held.sum()} held out",
        flush=True,
    )

    keras.utils.set_random_seed(args.seed)
    acquisition = augmenter(acquisition=True, geometry=False)

    def flip(images: tf.Tensor, boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        # A mirrored film has its lung box mirrored: left ↔ 1 − right.
        mirrored = tf.random.uniform((tf.shape(images)[0], 1)) < 0.5
        flipped = tf.stack([boxes[:, 0], boxes[:, 1], 1 - boxes[:, 3], 1 - boxes[:, 2]], axis=1)
        return (
            tf.where(mirrored[:, :, None, None], tf.reverse(images, axis=[2]), images),
            tf.where(mirrored, flipped, boxes),
        )

    batches = (
        tf.data.Dataset.from_tensor_slices((tensors[~held], targets[~held]))
        .shuffle(len(files), seed=args.seed, reshuffle_each_iteration=True)
        .batch(32)
    )
    seeds = tf.data.Dataset.random(seed=args.seed, rerandomize_each_iteration=True).batch(2)  # one per batch
    train = (
        tf.data.Dataset.zip(batches, seeds)
        .map(lambda batch, seed: acquisition(*batch, seed))
        .map(flip)
        .prefetch(tf.data.AUTOTUNE)
    )
    model = build_localiser()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mae")
    model.fit(
        train,
        validation_data=(tensors[held], targets[held]),
        epochs=args.epochs,
        verbose=0,
        shuffle=False,
        callbacks=[keras.callbacks.ReduceLROnPlateau("val_loss", factor=0.5, patience=15, min_lr=1e-5)],
    )
    predicted = model.predict(tensors[held], verbose=0)
    overlap = iou(np.clip(predicted, 0, 1), targets[held])
    kept = kept_share(normalise_fractions(predicted), targets[held])
    print(
        f"held-out films: lung-box IoU mean {overlap.mean():.3f}, median {np.median(overlap):.3f}; "
        f"share of the true lung box inside the crop: mean {kept.mean():.3f}, min {kept.min():.3f}, "
        f"≥ 0.95 on {(kept >= 0.95).mean():.1%} of films",
        flush=True,
    )
    for source in np.unique(sources[held]):
        members = sources[held] == source
        print(f"  {source}: IoU {overlap[members].mean():.3f}, kept {kept[members].mean():.3f} (n={members.sum()})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    model.save(args.out)
    print(f"localiser written to {args.out} in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training-only augmentation, on batches of preprocessed images (n × size × size × 1, [0, 1]).

Two kinds:
  * geometry — rotation, translation, zoom in and out (random crops): where the patient sits in the
    frame must not matter;
  * acquisition — resolution loss (down- then up-sampling), blur or sharpening, JPEG re-compression
    and noise. Collections differ in exactly these (web figures are JPEG and blurred, one collection
    was upscaled from 224 px, another squashed to 128 px); histogram equalisation removes exposure
    differences but not these, so a network can tell the collection, and thereby the label, from them.

No exposure augmentation: the images are re-equalised after augmentation, as `cxr.preprocess`
equalises every input, so the network never sees an input that inference cannot produce.
"""

from __future__ import annotations

import math

import tensorflow as tf

from cxr.preprocess import PARAMETERS

APPLY_PROBABILITY = 0.5  # each acquisition change is applied to about half of the images, independently


def equalise(images: tf.Tensor) -> tf.Tensor:
    """`cxr.preprocess.equalise` for a batch, in TensorFlow (same bins, same interpolation)."""
    shape = tf.shape(images)
    flat = tf.reshape(images, (shape[0], -1))
    low = tf.reduce_min(flat, axis=1, keepdims=True)
    span = tf.reduce_max(flat, axis=1, keepdims=True) - low
    scaled = (flat - low) / tf.maximum(span, 1e-6)
    bins = int(PARAMETERS["equalisation_bins"])
    index = tf.minimum(tf.cast(scaled * bins, tf.int32), bins - 1)
    counts = tf.math.bincount(index, minlength=bins, maxlength=bins, axis=-1, dtype=tf.float32)
    cdf = tf.cumsum(counts, axis=1)
    cdf = (cdf - cdf[:, :1]) / tf.maximum(cdf[:, -1:] - cdf[:, :1], 1.0)
    start = tf.concat([cdf[:, :1], cdf[:, :-1]], axis=1)
    slope = tf.concat([tf.zeros_like(cdf[:, :1]), cdf[:, 1:] - cdf[:, :-1]], axis=1) * bins
    position = scaled - tf.cast(index, tf.float32) / bins
    result = tf.gather(start, index, batch_dims=1) + position * tf.gather(slope, index, batch_dims=1)
    result = tf.where(span < 1e-6, tf.zeros_like(result), result)  # a flat image maps to zeros
    return tf.reshape(result, shape)


def _chosen(batch: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    return tf.random.stateless_uniform((batch, 1, 1, 1), seed) < APPLY_PROBABILITY


def _geometry(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Rotation (up to ±0.03 turn), translation (up to ±5 % of each side) and zoom (a crop of up to
    20 % of each side, or up to 10 % zoomed out) of each image, composed into one affine map so that
    every image is resampled once rather than once per transform."""
    shape = tf.shape(images)
    batch, height, width = shape[0], tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    angle_seed, shift_seed, zoom_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    angle = tf.random.stateless_uniform((batch,), angle_seed, -0.03, 0.03) * 2.0 * math.pi
    shift = tf.random.stateless_uniform((batch, 2), shift_seed, -0.05, 0.05) * tf.stack([width, height])
    zoom = 1.0 + tf.random.stateless_uniform((batch,), zoom_seed, -0.2, 0.1)  # < 1 samples a smaller region
    cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    # Output pixel p samples the input at centre + R(angle)·zoom·(p − centre) + shift.
    transforms = tf.stack(
        [
            cos,
            -sin,
            cx - cos * cx + sin * cy + shift[:, 0],
            sin,
            cos,
            cy - sin * cx - cos * cy + shift[:, 1],
            tf.zeros_like(cos),
            tf.zeros_like(cos),
        ],
        axis=1,
    )
    # "nearest" fill: black corners would be a train-only artefact that validation never shows.
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=shape[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    )


def _resolution_loss(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    factor_seed, chosen_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    size = tf.shape(images)[1]
    factor = tf.random.stateless_uniform((), factor_seed, 0.3, 0.9)
    small = tf.maximum(tf.cast(tf.cast(size, tf.float32) * factor, tf.int32), 8)
    degraded = tf.image.resize(tf.image.resize(images, (small, small), antialias=True), (size, size))
    return tf.where(_chosen(tf.shape(images)[0], chosen_seed), degraded, images)


def _blur_or_sharpen(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    amount_seed, chosen_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    taps = tf.constant([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0  # binomial ≈ Gaussian, sigma 1 px
    kernel = tf.reshape(taps[:, None] * taps[None, :], (5, 5, 1, 1))
    blurred = tf.nn.conv2d(tf.pad(images, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="SYMMETRIC"), kernel, 1, "VALID")
    # amount < 0 blurs (−1: the blurred image), > 0 sharpens (unsharp masking).
    amount = tf.random.stateless_uniform((tf.shape(images)[0], 1, 1, 1), amount_seed, -1.0, 1.5)
    changed = tf.clip_by_value(images + amount * (images - blurred), 0.0, 1.0)
    return tf.where(_chosen(tf.shape(images)[0], chosen_seed), changed, images)


def _jpeg(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    quality_seed, chosen_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    quality = tf.random.stateless_uniform((tf.shape(images)[0],), quality_seed, 25, 95, dtype=tf.int32)

    def compress(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        image, q = args
        return tf.image.adjust_jpeg_quality(image, q)

    compressed = tf.map_fn(compress, (images, quality), fn_output_signature=tf.float32)
    compressed = tf.ensure_shape(compressed, images.shape)
    return tf.where(_chosen(tf.shape(images)[0], chosen_seed), compressed, images)


def _noise(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    sigma_seed, noise_seed, chosen_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    sigma = tf.random.stateless_uniform((tf.shape(images)[0], 1, 1, 1), sigma_seed, 0.0, 0.04)
    noisy = tf.clip_by_value(images + sigma * tf.random.stateless_normal(tf.shape(images), noise_seed), 0.0, 1.0)
    return tf.where(_chosen(tf.shape(images)[0], chosen_seed), noisy, images)


def augmenter(acquisition: bool = True, geometry: bool = True):
    """A function (images, labels, seed) → (augmented images, labels) for `tf.data.Dataset.map` on batches.

    `seed` (two integers) alone fixes a batch's changes: the same batch and seed give the same images
    whichever thread runs it and whenever, so an interrupted run can be resumed exactly.
    `geometry=False` leaves positions alone (for targets that are positions, as the lung box is)."""

    def augment(images: tf.Tensor, labels: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.cast(images, tf.float32)
        seeds = tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 5))
        if geometry:
            images = _geometry(images, seeds[0])
        if acquisition:
            images = _resolution_loss(images, seeds[1])
            images = _blur_or_sharpen(images, seeds[2])
            images = _jpeg(images, seeds[3])
            images = _noise(images, seeds[4])
            images = equalise(images)
        return images, labels

    return augment

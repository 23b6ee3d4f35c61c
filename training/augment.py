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


def _chosen(batch: tf.Tensor, generator: tf.random.Generator) -> tf.Tensor:
    return generator.uniform((batch, 1, 1, 1)) < APPLY_PROBABILITY


def _resolution_loss(images: tf.Tensor, generator: tf.random.Generator) -> tf.Tensor:
    size = tf.shape(images)[1]
    factor = generator.uniform((), 0.3, 0.9)
    small = tf.maximum(tf.cast(tf.cast(size, tf.float32) * factor, tf.int32), 8)
    degraded = tf.image.resize(tf.image.resize(images, (small, small), antialias=True), (size, size))
    return tf.where(_chosen(tf.shape(images)[0], generator), degraded, images)


def _blur_or_sharpen(images: tf.Tensor, generator: tf.random.Generator) -> tf.Tensor:
    taps = tf.constant([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0  # binomial ≈ Gaussian, sigma 1 px
    kernel = tf.reshape(taps[:, None] * taps[None, :], (5, 5, 1, 1))
    blurred = tf.nn.conv2d(tf.pad(images, [[0, 0], [2, 2], [2, 2], [0, 0]], mode="SYMMETRIC"), kernel, 1, "VALID")
    # amount < 0 blurs (−1: the blurred image), > 0 sharpens (unsharp masking).
    amount = generator.uniform((tf.shape(images)[0], 1, 1, 1), -1.0, 1.5)
    changed = tf.clip_by_value(images + amount * (images - blurred), 0.0, 1.0)
    return tf.where(_chosen(tf.shape(images)[0], generator), changed, images)


def _jpeg(images: tf.Tensor, generator: tf.random.Generator) -> tf.Tensor:
    quality = tf.cast(generator.uniform((tf.shape(images)[0],), 25, 95), tf.int32)

    def compress(args: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        image, q = args
        return tf.image.adjust_jpeg_quality(image, q)

    compressed = tf.map_fn(compress, (images, quality), fn_output_signature=tf.float32)
    compressed = tf.ensure_shape(compressed, images.shape)
    return tf.where(_chosen(tf.shape(images)[0], generator), compressed, images)


def _noise(images: tf.Tensor, generator: tf.random.Generator) -> tf.Tensor:
    sigma = generator.uniform((tf.shape(images)[0], 1, 1, 1), 0.0, 0.04)
    noisy = tf.clip_by_value(images + sigma * generator.normal(tf.shape(images)), 0.0, 1.0)
    return tf.where(_chosen(tf.shape(images)[0], generator), noisy, images)


def augmenter(seed: int, acquisition: bool = True, geometry: bool = True):
    """A function (images, labels) → (augmented images, labels) for `tf.data.Dataset.map` on batches.

    `geometry=False` leaves positions alone (for targets that are positions, as the lung box is)."""
    import keras
    from keras import layers

    geometric = keras.Sequential(
        [
            # "nearest" fill: black corners would be a train-only artefact that validation never shows.
            layers.RandomRotation(0.03, fill_mode="nearest", seed=seed),
            layers.RandomTranslation(0.05, 0.05, fill_mode="nearest", seed=seed + 1),
            # Negative factors zoom in: a random crop of up to 20 % of each side.
            layers.RandomZoom((-0.2, 0.1), fill_mode="nearest", seed=seed + 2),
        ],
        name="augment",
    )
    generator = tf.random.Generator.from_seed(seed + 3)

    def augment(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        images = tf.cast(images, tf.float32)
        if geometry:
            images = geometric(images, training=True)
        if acquisition:
            images = _resolution_loss(images, generator)
            images = _blur_or_sharpen(images, generator)
            images = _jpeg(images, generator)
            images = _noise(images, generator)
            images = equalise(images)
        return images, labels

    return augment

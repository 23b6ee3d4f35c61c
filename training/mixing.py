"""Amplitude mixing across sources (`--mix-sources`), a training-only augmentation.

A film's Fourier amplitude spectrum carries much of a collection's "look" (exposure curve, processing,
grain, resolution), its phase carries the anatomy (Yang & Soatto 2020, FDA; Xu et al. 2021, FACT). Here
about half of the training films get their amplitude spectrum blended with that of a film of the same
class from another source, keeping their own phase: the anatomy and the label stay, the look moves
towards another collection's. Partners are of the same class so that the label cannot leak from the
partner (a COVID film's diffuse haze is low-frequency amplitude too).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from training.augment import equalise

MIX_PROBABILITY = 0.5
MAX_WEIGHT = 1.0  # the partner's share of the amplitude is drawn from U(0, MAX_WEIGHT), as FACT does


def source_partners(
    classes: np.ndarray, sources: np.ndarray, order: np.ndarray, seed: int | tuple[int, ...]
) -> np.ndarray:
    """For every position in `order` (positions into `classes`/`sources`, any shape), the position of a
    film of the same class from another source, drawn uniformly; the film itself where its class has no
    other source (it is then left as it is). Fixed by `seed`, so a resumed run draws the same partners."""
    rng = np.random.default_rng(seed)
    classes, sources = np.asarray(classes), np.asarray(sources)
    flat = np.asarray(order).ravel()
    chosen = flat.copy()
    for key in {(c, s) for c, s in zip(classes.tolist(), sources.tolist())}:
        here = np.flatnonzero((classes[flat] == key[0]) & (sources[flat] == key[1]))
        candidates = np.flatnonzero((classes == key[0]) & (sources != key[1]))
        if here.size and candidates.size:
            chosen[here] = candidates[rng.integers(0, candidates.size, here.size)]
    return chosen.reshape(np.shape(order))


def mix_amplitudes(images: tf.Tensor, partners: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Batches n × size × size × 1 in [0, 1]: each image, with probability MIX_PROBABILITY, takes the
    amplitude spectrum (1 − w)·own + w·partner's, w ~ U(0, MAX_WEIGHT), keeps its phase, and is
    re-equalised (as `cxr.preprocess` equalises every input, so no input is one inference cannot see)."""
    weight_seed, chosen_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    own = tf.signal.fft2d(tf.complex(images[..., 0], 0.0))
    other = tf.signal.fft2d(tf.complex(tf.cast(partners[..., 0], tf.float32), 0.0))
    batch = tf.shape(images)[0]
    weight = tf.random.stateless_uniform((batch, 1, 1), weight_seed, 0.0, MAX_WEIGHT)
    amplitude = (1.0 - weight) * tf.abs(own) + weight * tf.abs(other)
    phase = tf.math.angle(own)
    spectrum = tf.complex(amplitude * tf.cos(phase), amplitude * tf.sin(phase))
    mixed = equalise(tf.math.real(tf.signal.ifft2d(spectrum))[..., None])
    chosen = tf.random.stateless_uniform((batch, 1, 1, 1), chosen_seed) < MIX_PROBABILITY
    return tf.where(chosen, mixed, images)

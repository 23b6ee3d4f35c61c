"""Which training images each epoch sees: sampling balanced by class and, within a class, by source.

With plain shuffling nearly every normal comes from one collection (`radiography`), so the cheapest
way to lower the loss is to learn that collection's look. Here every class gets the same share of an
epoch, and within a class each (source, original label) group gets a share that grows only with the
square root of its size: a small site is seen far more often than its size alone would give, without
repeating its few images so often that the network memorises them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def balanced_weights(targets: Sequence[int], groups: Sequence[str]) -> np.ndarray:
    """Sampling probability of each image (sums to 1).

    `targets` are the class indices trained on; `groups` name each image's (source, label) group.
    Invariant: every class present gets total probability 1 / (number of classes present), and
    within a class a group of n images gets a share proportional to sqrt(n).
    """
    targets, groups = np.asarray(targets), np.asarray(groups)
    keys = [f"{t}|{g}" for t, g in zip(targets.tolist(), groups.tolist())]
    size = Counter(keys)
    weights = np.array([1.0 / np.sqrt(size[k]) for k in keys])  # n images × 1/sqrt(n) = sqrt(n) per group
    for target in np.unique(targets):
        members = targets == target
        weights[members] /= weights[members].sum()
    return weights / weights.sum()


def epoch_order(weights: np.ndarray, epochs: int, per_epoch: int, seed: int) -> np.ndarray:
    """Positions (into `weights`) of the images of every epoch, epochs × per_epoch, drawn with
    replacement; fixed by `seed`, so a resumed run sees the same images in the same order."""
    rng = np.random.default_rng(seed)
    return rng.choice(len(weights), size=(epochs, per_epoch), replace=True, p=weights)

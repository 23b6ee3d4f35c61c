"""The leak guard: one film must not be in two of train, validation, test and held-out.

Copies of a film are found by the SHA-256 of the file (the same bytes) or by the perceptual hash
(`training.films`; the same radiograph re-encoded, resized or re-windowed by another collection).
`copies` groups them; `patient_split` keeps each group in one split (or out of training, where one copy
belongs to a held-out source), and `crossing` is the check training makes on the split it is given:
any pair it lists stops the run.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.data import Sample
from training.films import Films, hamming

# Of 256 bits. On the shared data (5481 films, deduplicated upstream by another method) the 16 pairs
# within 40 bits were, where looked at, one radiograph each (re-cropped or re-windowed by another
# collection); the closest pairs of distinct films seen were 44 bits apart.
NEAR_DUPLICATE_BITS = 40


def copies(films: Films, max_bits: int = NEAR_DUPLICATE_BITS) -> list[tuple[int, int, str]]:
    """Every pair (i, j, why) with i < j of the same film: "same file" (SHA-256) or "near-duplicate (k bits)"."""
    pairs: list[tuple[int, int, str]] = []
    first: dict[str, int] = {}
    for index, digest in enumerate(films.sha256):
        if digest in first:
            pairs.append((first[digest], index, "same file"))
        first.setdefault(digest, index)
    exact = {(i, j) for i, j, _ in pairs}
    hashes = films.perceptual
    for i in range(len(hashes) - 1):
        distances = hamming(hashes[i], hashes[i + 1 :])
        for offset in np.flatnonzero(distances <= max_bits):
            j = i + 1 + int(offset)
            if (i, j) not in exact:
                pairs.append((i, j, f"near-duplicate ({int(distances[offset])} bits)"))
    return sorted(pairs)


def groups(pairs: Sequence[tuple[int, int, str]]) -> list[list[int]]:
    """The connected groups of sample indices that `pairs` links (each of two or more)."""
    parent: dict[int, int] = {}

    def root(i: int) -> int:
        while parent.setdefault(i, i) != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in pairs:
        parent[root(j)] = root(i)
    members: dict[int, list[int]] = {}
    for i in list(parent):
        members.setdefault(root(i), []).append(i)
    return sorted(sorted(group) for group in members.values())


def crossing(pairs: Sequence[tuple[int, int, str]], split: dict[str, list[int]]) -> list[tuple[int, int, str]]:
    """The pairs whose two films are in different splits (films in no split are not used: no leak)."""
    where = {index: name for name, indices in split.items() for index in indices}
    return [(i, j, why) for i, j, why in pairs if i in where and j in where and where[i] != where[j]]


def describe(pairs: Sequence[tuple[int, int, str]], samples: Sequence[Sample], split: dict[str, list[int]]) -> str:
    where = {index: name for name, indices in split.items() for index in indices}
    return "\n".join(
        f"  {samples[i].file} ({where[i]}) and {samples[j].file} ({where[j]}): {why}" for i, j, why in pairs
    )

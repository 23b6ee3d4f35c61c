"""The gate's image statistics of a film, and their limits fitted on a model's training split.

`measure` takes a decoded film's statistics on what the model looks at (the cropped, equalised frame
at STATISTICS_SIZE); `GateLimits.fit` sets, from the training films' statistics, the mean chest layout
and the limit of each fitted check so that it refuses REFUSED_SHARE of those films. Training writes
the limits to GATE_FILE in the model directory (hashed into the model version); serving reads them
from there, so the gate always matches the films its model was trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cxr.imaging import DecodedImage
from cxr.preprocess import Prepared, preprocess

GATE_FILE = "gate.json"
STATISTICS_SIZE = 128  # image statistics are taken at a fixed size, whatever the model's input size
BLOCKS = 8  # the chest layout is compared on BLOCKS × BLOCKS block means
# Each fitted limit refuses this share of the training films (the quantile it sits at).
REFUSED_SHARE = 0.002


@dataclass(frozen=True)
class FilmStatistics:
    """What the fitted checks measure of one film."""

    flat_fraction: float  # share of the cropped 8-bit film at its single most common grey level
    edge_strength: float  # mean absolute neighbour difference of the equalised frame
    blocks: np.ndarray  # BLOCKS × BLOCKS block means of the equalised frame
    # The whole 8-bit film's 256-level histogram, for the gate's intensity spread (None where not taken).
    histogram: np.ndarray | None = field(default=None, repr=False)


def measure(image: DecodedImage, prepared: Prepared | None = None) -> FilmStatistics:
    """The statistics of `image`; `prepared` may pass `preprocess(image.frame, size)` when it was made
    already (it is used if its size is STATISTICS_SIZE)."""
    if prepared is None or prepared.tensor.shape[:2] != (STATISTICS_SIZE, STATISTICS_SIZE):
        prepared = preprocess(image.frame, STATISTICS_SIZE)
    inside, whole = box_histograms(image.gray, prepared.box)
    flat = float(inside.max() / max(int(inside.sum()), 1))
    equalised = prepared.tensor[..., 0]
    edges = float((np.abs(np.diff(equalised, axis=0)).mean() + np.abs(np.diff(equalised, axis=1)).mean()) / 2)
    return FilmStatistics(flat, edges, coarse(equalised), whole)


def box_histograms(gray: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The 256-level histograms of the 8-bit film inside `box` (top, bottom, left, right) and of the whole
    film: the whole is the box plus the strips around it, so each pixel is counted once."""
    top, bottom, left, right = box
    inside = histogram(gray[top:bottom, left:right])
    strips = (gray[:top], gray[bottom:], gray[top:bottom, :left], gray[top:bottom, right:])
    return inside, inside + sum((histogram(strip) for strip in strips if strip.size), np.zeros(256, np.int64))


def histogram(gray: np.ndarray) -> np.ndarray:
    """The 256-bin histogram of an 8-bit array (`np.bincount(gray.ravel(), minlength=256)`), counted by
    Pillow: `bincount` first widens every pixel to a 64-bit index, several times the work on a 2-4k px film."""
    if gray.dtype != np.uint8:
        raise ValueError(f"expected 8-bit pixels, got {gray.dtype}")
    return np.asarray(Image.fromarray(gray).histogram(), dtype=np.int64)


def coarse(equalised: np.ndarray) -> np.ndarray:
    """The BLOCKS × BLOCKS block means of the equalised STATISTICS_SIZE frame."""
    n = BLOCKS
    return equalised.reshape(n, equalised.shape[0] // n, n, equalised.shape[1] // n).mean(axis=(1, 3))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel() - a.mean(), b.ravel() - b.mean()
    norm = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / norm) if norm > 0 else 0.0


@dataclass(frozen=True)
class GateLimits:
    """The fitted part of the gate: the mean chest layout and the limits of three checks."""

    mean_chest: np.ndarray  # BLOCKS × BLOCKS mean of the training films' block means
    max_flat_fraction: float
    max_edge_strength: float
    min_chest_layout: float  # correlation of a film's block means with mean_chest
    films: int  # how many training films they were fitted on

    @classmethod
    def fit(cls, statistics: list[FilmStatistics]) -> GateLimits:
        if not statistics:
            raise ValueError("the gate's limits need at least one training film")
        mean_chest = np.mean([s.blocks for s in statistics], axis=0)
        layouts = [correlation(s.blocks, mean_chest) for s in statistics]
        return cls(
            mean_chest=mean_chest,
            max_flat_fraction=float(np.quantile([s.flat_fraction for s in statistics], 1 - REFUSED_SHARE)),
            max_edge_strength=float(np.quantile([s.edge_strength for s in statistics], 1 - REFUSED_SHARE)),
            min_chest_layout=float(np.quantile(layouts, REFUSED_SHARE)),
            films=len(statistics),
        )

    def layout(self, statistics: FilmStatistics) -> float:
        return correlation(statistics.blocks, self.mean_chest)

    def as_dict(self) -> dict:
        return {
            "mean_chest": np.round(self.mean_chest, 6).tolist(),
            "max_flat_fraction": self.max_flat_fraction,
            "max_edge_strength": self.max_edge_strength,
            "min_chest_layout": self.min_chest_layout,
            "films": self.films,
            "refused_share_of_training_films": REFUSED_SHARE,
            "statistics_size": STATISTICS_SIZE,
        }

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> GateLimits:
        """Raises ValueError (or OSError) when the file is not limits this code fits."""
        stored = json.loads(Path(path).read_text())
        if stored.get("statistics_size") != STATISTICS_SIZE:
            raise ValueError(f"{path} was fitted at {stored.get('statistics_size')} px, not {STATISTICS_SIZE}")
        mean_chest = np.asarray(stored["mean_chest"], dtype=np.float64)
        if mean_chest.shape != (BLOCKS, BLOCKS):
            raise ValueError(f"{path}: the mean chest layout is {mean_chest.shape}, not {BLOCKS} × {BLOCKS}")
        return cls(
            mean_chest,
            float(stored["max_flat_fraction"]),
            float(stored["max_edge_strength"]),
            float(stored["min_chest_layout"]),
            int(stored["films"]),
        )

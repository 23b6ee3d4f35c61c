"""What training needs to know of each film besides its model input, taken in one parallel pass
(optionally cached on disk): the SHA-256 of its bytes and a perceptual hash (the leak guard,
`training.leaks`), and the gate's image statistics (`cxr.gate_statistics`, fitted on the training split).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.fft import dctn
from tqdm import tqdm

from cxr.gate_statistics import BLOCKS, STATISTICS_SIZE, FilmStatistics, measure
from cxr.imaging import decode_image
from cxr.preprocess import PARAMETERS, preprocess
from training.data import Sample

# The perceptual hash is the sign pattern (above or below their median) of the HASH_FREQUENCIES² lowest
# DCT frequencies of a HASH_SIDE-px frame: 256 bits. 64 bits (8 × 8 of 32 px) cannot tell chest films
# apart: on the shared data, hundreds of pairs of distinct films lie within 4 bits of each other.
HASH_SIDE = 64
HASH_FREQUENCIES = 16
HASH_WORDS = HASH_FREQUENCIES**2 // 64
VERSION = 1  # of what is cached; bump when a measurement changes


@dataclass(frozen=True)
class Films:
    """Per film, in the order of the samples given to `survey`."""

    sha256: list[str]
    perceptual: np.ndarray  # n × HASH_WORDS uint64: the perceptual hashes
    statistics: list[FilmStatistics]


def perceptual_hash(equalised: np.ndarray) -> np.ndarray:
    """A DCT hash (pHash) of the equalised frame, HASH_WORDS uint64 words. Re-encoding, resizing and
    re-windowing (which the equalisation undoes) barely change it."""
    frame = Image.fromarray(equalised.astype(np.float32), mode="F").resize((HASH_SIDE, HASH_SIDE), Image.BOX)
    low = dctn(np.asarray(frame, dtype=np.float64), norm="ortho")[:HASH_FREQUENCIES, :HASH_FREQUENCIES]
    return np.packbits((low > np.median(low)).ravel()).view(np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits in which hashes differ: `a` (HASH_WORDS) against each row of `b` (n × HASH_WORDS)."""
    return np.bitwise_count(a ^ b).sum(axis=-1)


def _survey_one(path: str) -> tuple[str, np.ndarray, float, float, np.ndarray]:
    data = Path(path).read_bytes()
    image = decode_image(data)
    prepared = preprocess(image.frame, STATISTICS_SIZE)
    statistics = measure(image, prepared)
    return (
        hashlib.sha256(data).hexdigest(),
        perceptual_hash(prepared.tensor[..., 0]),
        statistics.flat_fraction,
        statistics.edge_strength,
        statistics.blocks,
    )


def _cache_key(samples: Sequence[Sample]) -> str:
    digest = hashlib.sha256(json.dumps({"version": VERSION, "preprocess": PARAMETERS}, sort_keys=True).encode())
    for sample in samples:
        stat = sample.path.stat()
        digest.update(f"{sample.path}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def survey(samples: Sequence[Sample], cache_dir: Path | None = None) -> Films:
    """The facts of every sample's film. The files must decode (`training.images` has loaded them)."""
    cache = cache_dir / f"films-{_cache_key(samples)}.npz" if cache_dir else None
    if cache and cache.exists():
        with np.load(cache) as stored:
            return _films(*(stored[k] for k in ("sha256", "perceptual", "flat", "edges", "blocks")))
    workers = max(1, min(len(os.sched_getaffinity(0)), 8))
    with ProcessPoolExecutor(workers) as pool:
        rows = list(
            tqdm(
                pool.map(_survey_one, [str(s.path) for s in samples], chunksize=16),
                total=len(samples),
                desc="hashes+gate statistics",
                unit="img",
            )
        )
    sha256 = [r[0] for r in rows]
    perceptual = np.array([r[1] for r in rows], dtype=np.uint64).reshape(len(rows), HASH_WORDS)
    flat = np.array([r[2] for r in rows], dtype=np.float64)
    edges = np.array([r[3] for r in rows], dtype=np.float64)
    blocks = np.array([r[4] for r in rows], dtype=np.float64).reshape(len(rows), BLOCKS, BLOCKS)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, sha256=np.array(sha256), perceptual=perceptual, flat=flat, edges=edges, blocks=blocks)
    return _films(sha256, perceptual, flat, edges, blocks)


def _films(sha256, perceptual, flat, edges, blocks) -> Films:
    statistics = [FilmStatistics(float(f), float(e), b) for f, e, b in zip(flat, edges, blocks)]
    return Films([str(d) for d in sha256], np.asarray(perceptual, dtype=np.uint64), statistics)

"""Decode and preprocess a data set once, in parallel, into one array (optionally cached on disk)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cxr.errors import InputError
from cxr.imaging import decode_image
from cxr.lungs import LOCALISER_SIZE, LungLocaliser, lung_box
from cxr.preprocess import PARAMETERS, crop_box, preprocess
from training.data import DataError, Sample


def _prepare(task: tuple[str, int, np.ndarray | None]) -> tuple[np.ndarray | None, str | None]:
    path, size, lung_fractions = task
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, f"the file cannot be read ({exc.strerror or exc})"
    try:
        pixels = decode_image(data).pixels
        region = None if lung_fractions is None else lung_box(crop_box(pixels), lung_fractions)
        return preprocess(pixels, size, region).tensor.astype(np.float16), None
    except InputError as exc:
        return None, f"the image cannot be used: {exc.message}"


def _cache_key(samples: Sequence[Sample], size: int, lung_fractions: np.ndarray | None) -> str:
    digest = hashlib.sha256(json.dumps({"size": size, "preprocess": PARAMETERS}, sort_keys=True).encode())
    if lung_fractions is not None:
        digest.update(np.ascontiguousarray(lung_fractions, dtype=np.float64).tobytes())
    for sample in samples:
        stat = sample.path.stat() if sample.path.exists() else None
        digest.update(f"{sample.path}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}\n".encode())
    return digest.hexdigest()[:20]


def load_images(
    samples: Sequence[Sample],
    size: int,
    skip_bad: bool = False,
    cache_dir: Path | None = None,
    lung_fractions: np.ndarray | None = None,
) -> tuple[np.ndarray, list[int]]:
    """(images n × size × size × 1 float16, indices into `samples` that loaded).

    With `lung_fractions` (n × 4, `cxr.lungs`), each image is its lung box instead of the whole frame.
    A missing or undecodable file stops with a `DataError` naming its row, unless `skip_bad` is set,
    in which case it is left out and reported in the count printed at the end.
    """
    cache = cache_dir / f"images-{_cache_key(samples, size, lung_fractions)}.npz" if cache_dir else None
    if cache and cache.exists():
        with np.load(cache) as stored:
            return stored["images"], stored["kept"].tolist()
    workers = max(1, min(len(os.sched_getaffinity(0)), 8))
    images, kept, bad = [], [], []
    tasks = [(str(s.path), size, None if lung_fractions is None else lung_fractions[i]) for i, s in enumerate(samples)]
    with ProcessPoolExecutor(workers) as pool:
        results = pool.map(_prepare, tasks, chunksize=16)
        for index, (image, problem) in enumerate(tqdm(results, total=len(tasks), desc="decode+preprocess", unit="img")):
            if problem is None:
                images.append(image)
                kept.append(index)
                continue
            message = f"{samples[index].origin}: {problem}"
            if not skip_bad:
                raise DataError(message + " (use --skip-bad to leave such rows out)")
            bad.append(message)
    if bad:
        print(f"skipped {len(bad)} bad row(s):", *bad[:10], sep="\n  ")
    if not images:
        raise DataError("no image could be loaded")
    array = np.stack(images)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, images=array, kept=np.asarray(kept))
    return array, kept


def load_inputs(
    samples: Sequence[Sample],
    size: int,
    localiser: LungLocaliser | None = None,
    skip_bad: bool = False,
    cache_dir: Path | None = Path(".cache"),
) -> tuple[np.ndarray, list[int]]:
    """The model's inputs for `samples`, as serving makes them (`cxr.lungs.prepare`): the lung box
    found by `localiser` when there is one, else the whole frame. Returns what `load_images` does."""
    if localiser is None:
        return load_images(samples, size, skip_bad=skip_bad, cache_dir=cache_dir)
    overviews, kept = load_images(samples, LOCALISER_SIZE, skip_bad=skip_bad, cache_dir=cache_dir)
    fractions = localiser.fractions(overviews.astype(np.float32))
    images, _ = load_images([samples[i] for i in kept], size, cache_dir=cache_dir, lung_fractions=fractions)
    return images, kept

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
from cxr.preprocess import PARAMETERS, preprocess
from training.data import DataError, Sample


def _prepare(task: tuple[str, int]) -> tuple[np.ndarray | None, str | None]:
    path, size = task
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, f"the file cannot be read ({exc.strerror or exc})"
    try:
        return preprocess(decode_image(data).pixels, size).tensor.astype(np.float16), None
    except InputError as exc:
        return None, f"the image cannot be used: {exc.message}"


def _cache_key(samples: Sequence[Sample], size: int) -> str:
    digest = hashlib.sha256(json.dumps({"size": size, "preprocess": PARAMETERS}, sort_keys=True).encode())
    for sample in samples:
        stat = sample.path.stat() if sample.path.exists() else None
        digest.update(f"{sample.path}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}\n".encode())
    return digest.hexdigest()[:20]


def load_images(
    samples: Sequence[Sample], size: int, skip_bad: bool = False, cache_dir: Path | None = None
) -> tuple[np.ndarray, list[int]]:
    """(images n × size × size × 1 float16, indices into `samples` that loaded).

    A missing or undecodable file stops with a `DataError` naming its row, unless `skip_bad` is set,
    in which case it is left out and reported in the count printed at the end.
    """
    cache = cache_dir / f"images-{_cache_key(samples, size)}.npz" if cache_dir else None
    if cache and cache.exists():
        with np.load(cache) as stored:
            return stored["images"], stored["kept"].tolist()
    workers = max(1, min(len(os.sched_getaffinity(0)), 8))
    images, kept, bad = [], [], []
    tasks = [(str(s.path), size) for s in samples]
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

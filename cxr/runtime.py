"""Thread settings for TensorFlow and the numeric libraries, applied once per process before TF starts.

TensorFlow sizes its thread pools to the machine by default: every process gets one intra-op thread per
core (plus as many inter-op threads), and so do OpenBLAS/OpenMP. With several gunicorn workers on a
2-core machine that is workers × cores busy threads fighting over 2 cores. The serving default is
therefore `max(1, cores // workers)` intra-op threads and 1 inter-op thread per process (bench/README.md,
"TensorFlow threads", has the measurements behind it). Override with the environment:

    CXR_TF_THREADS        intra-op threads per process (default: cores // CXR_WORKERS, at least 1)
    CXR_TF_INTER_THREADS  inter-op threads per process (default 1: the model is one chain of layers)
    CXR_WORKERS           worker processes sharing the machine (default 1, i.e. all cores for one process)

`configure_threads()` must run before TensorFlow executes its first operation (loading the model
counts): call it in each worker process before `ModelBundle(...)`. Never initialise TensorFlow in a
gunicorn master and then fork: TF's thread pools do not survive a fork.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

log = logging.getLogger(__name__)

THREADS_ENV = "CXR_TF_THREADS"
INTER_THREADS_ENV = "CXR_TF_INTER_THREADS"
WORKERS_ENV = "CXR_WORKERS"
# Read at library start-up (OpenBLAS, OpenMP, MKL); set so that child processes inherit the same limit.
BLAS_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class ThreadSettings:
    intra_op: int
    inter_op: int
    applied: bool  # False when TensorFlow had already started and kept its own pools


_settings: ThreadSettings | None = None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _positive_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number of threads") from None
    if value < 1:
        raise ValueError(f"{name} must be at least 1 (got {value})")
    return value


def planned_threads(workers: int | None = None) -> tuple[int, int]:
    """(intra-op, inter-op) threads for one of `workers` processes (default: $CXR_WORKERS or 1)."""
    workers = workers if workers is not None else _positive_int(WORKERS_ENV, 1)
    intra = _positive_int(THREADS_ENV, max(1, available_cores() // max(1, workers)))
    inter = _positive_int(INTER_THREADS_ENV, 1)
    return intra, inter


def configure_threads(workers: int | None = None) -> ThreadSettings:
    """Limit TensorFlow's and the BLAS libraries' threads for this process; idempotent.

    Call before TensorFlow runs anything. A later call returns the first call's settings.
    """
    global _settings
    if _settings is not None:
        return _settings
    intra, inter = planned_threads(workers)
    for name in BLAS_ENV:
        os.environ.setdefault(name, str(intra))
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(intra))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", str(inter))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:  # numpy's BLAS may already be loaded with one thread per core
        from threadpoolctl import threadpool_limits

        threadpool_limits(intra)
    except ImportError:  # pragma: no cover - scikit-learn depends on threadpoolctl
        pass
    import tensorflow as tf

    applied = True
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
        tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError:
        # The runtime already started (something ran a TF op first): its pools keep their sizes.
        applied = False
        intra = tf.config.threading.get_intra_op_parallelism_threads() or intra
        inter = tf.config.threading.get_inter_op_parallelism_threads() or inter
        log.warning("TensorFlow had already started; its thread pools keep their sizes (%d/%d)", intra, inter)
    _settings = ThreadSettings(intra, inter, applied)
    log.info("TensorFlow threads: %d intra-op, %d inter-op per process", intra, inter)
    return _settings

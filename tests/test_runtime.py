"""TensorFlow thread settings: cores ÷ workers by default, the environment overrides, applied before TF starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxr import runtime

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("cores", "env", "expected"),
    [
        (2, {}, (2, 1)),
        (2, {"CXR_WORKERS": "2"}, (1, 1)),
        (2, {"CXR_WORKERS": "4"}, (1, 1)),
        (8, {"CXR_WORKERS": "3"}, (2, 1)),
        (2, {"CXR_WORKERS": "2", "CXR_TF_THREADS": "2", "CXR_TF_INTER_THREADS": "2"}, (2, 2)),
    ],
)
def test_planned_threads(monkeypatch, cores, env, expected):
    monkeypatch.setattr(runtime, "available_cores", lambda: cores)
    for name in (runtime.THREADS_ENV, runtime.INTER_THREADS_ENV, runtime.WORKERS_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert runtime.planned_threads() == expected


@pytest.mark.parametrize("value", ["0", "-1", "two"])
def test_bad_values_are_refused_with_the_variable_named(monkeypatch, value):
    monkeypatch.setenv(runtime.THREADS_ENV, value)
    with pytest.raises(ValueError, match=runtime.THREADS_ENV):
        runtime.planned_threads()


@pytest.mark.slow
def test_settings_reach_tensorflow():
    code = (
        "import json; from cxr.runtime import configure_threads; s = configure_threads(); "
        "import tensorflow as tf; tf.constant(1.0) + 1; "
        "print(json.dumps([s.intra_op, s.inter_op, s.applied, tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads()]))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CXR_", "TF_NUM_", "OMP_", "OPENBLAS_", "MKL_"))}
    env.update(CXR_WORKERS="2", CXR_TF_INTER_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    intra, inter, applied, tf_intra, tf_inter = json.loads(done.stdout.strip().splitlines()[-1])
    expected = max(1, runtime.available_cores() // 2)
    assert (intra, inter, applied, tf_intra, tf_inter) == (expected, 1, True, expected, 1)

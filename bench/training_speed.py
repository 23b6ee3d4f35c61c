"""Training throughput of the shipped CNN with TensorFlow's oneDNN kernels off and on.

    python -m bench.training_speed [--rounds 3] [--steps 30] [--json bench/results/training_speed.json]

TensorFlow enables oneDNN by default only on CPUs with AVX-512; `training.train` turns it on (these
machines have AVX2). Each round trains the shipped architecture (`models/model_card.json`: input size,
filters, blocks) for `--steps` batches of 32, with the training run's augmentation, once with oneDNN
off and once on, each in a fresh process (the switch is read when TensorFlow is imported), alternating
so that both see the same machine. Random arrays stand in for X-rays: the speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tools.common import MODEL_DIR, PYTHON, ROOT, ForeignCpu, median, save_json, table

BATCH = 32


def child(steps: int) -> dict[str, Any]:
    """Images per second over `steps` training batches after 5 warm-up batches (runs in a child process)."""
    import keras
    import numpy as np
    import tensorflow as tf

    from training.cnn import build_cnn
    from training.train import augmenter

    card = json.loads((MODEL_DIR / "model_card.json").read_text())
    size, arch = card["input_size"], card["architecture"]
    keras.utils.set_random_seed(0)
    model = build_cnn(size, len(card["classes"]), arch["base_filters"], arch["blocks"])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    images = rng.random(((steps + 5) * BATCH, size, size, 1), dtype=np.float32).astype(np.float16)
    labels = rng.integers(0, len(card["classes"]), len(images))
    dataset = (tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH)
               .map(lambda x, y: (tf.cast(x, tf.float32), y)).map(augmenter(0), num_parallel_calls=tf.data.AUTOTUNE)
               .prefetch(tf.data.AUTOTUNE))
    model.fit(dataset.take(5), epochs=1, verbose=0)  # tracing and allocation
    started = time.perf_counter()
    model.fit(dataset.skip(5), epochs=1, verbose=0)
    return {"images_per_s": steps * BATCH / (time.perf_counter() - started), "size": size,
            "base_filters": arch["base_filters"], "blocks": arch["blocks"]}


def run_child(onednn: bool, steps: int) -> dict[str, Any]:
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1" if onednn else "0", TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([PYTHON, "-m", "bench.training_speed", "--child", "--steps", str(steps)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"child (oneDNN {'on' if onednn else 'off'}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.steps)))
        return 0
    foreign = ForeignCpu()
    speeds: dict[str, list[float]] = {"off": [], "on": []}
    shape = {}
    for round_ in range(args.rounds):
        for onednn in (False, True):
            result = run_child(onednn, args.steps)
            speeds["on" if onednn else "off"].append(result["images_per_s"])
            shape = {k: result[k] for k in ("size", "base_filters", "blocks")}
            print(f"round {round_ + 1}: oneDNN {'on ' if onednn else 'off'} {result['images_per_s']:.1f} images/s",
                  flush=True)
    off, on = median(speeds["off"]), median(speeds["on"])
    print(f"\nCNN {shape['size']} px, {shape['base_filters']} base filters, {shape['blocks']} blocks; "
          f"batches of {BATCH}; "
          f"{args.steps} steps per run; median of {args.rounds} alternating runs\n")
    print(table(["oneDNN", "training images/s (median)", "runs"],
                [["off (TensorFlow's default here)", off, " ".join(f"{v:.1f}" for v in speeds["off"])],
                 ["on (training.train)", on, " ".join(f"{v:.1f}" for v in speeds["on"])]]))
    print(f"\non ÷ off: {on / off:.2f}×")
    print(foreign.line())
    save_json(args.json, {"benchmark": "training_speed", "architecture": shape,
                          "steps": args.steps, "batch": BATCH, "images_per_s": speeds,
                          "median": {"off": off, "on": on}, "ratio": on / off, "other_cpu": foreign.result()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

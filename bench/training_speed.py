"""Training speed: how close the real training epoch comes to a bare training step, bfloat16 against
float32, and the FLOP rate achieved against the machine's peak.

    python -m bench.training_speed [--input-size 128 --base-filters 16 --blocks 4 --batch-size 32]
                                   [--rounds 2] [--bare-steps 20] [--epoch-size 2048] [--val-size 885]
                                   [--json bench/results/training_speed.json]

Each measurement runs in a fresh process, alternating, so that all see the same machine:
  * bare: `keras.Model.fit` on in-memory float32 arrays, no augmentation, `--bare-steps` batches;
  * real: one epoch as `training.train` runs it (`training.epochs.run_epoch`): `--epoch-size` images
    gathered and augmented in tf.data as the shipped recipe does, batch-norm recalibration, then
    validation on `--val-size` images;
  * peak: a large float32 matmul and a large convolution, in GFLOP/s.
The architecture defaults to the shipped one (`models/model_card.json`), as do the epoch and
validation sizes. Each kind runs in float32 and, where the CPU computes bfloat16 natively, in
bfloat16 mixed precision too. Random arrays stand in for X-rays: the speed does not depend on them.
A first, short epoch (or batch) in each process traces the functions and is not timed, as it is
paid once per run.
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
from training.precision import native_bfloat16

UNSUPPORTED = "not supported by this CPU"


def training_flops(model: Any) -> float:
    """FLOPs of one training image: the convolutions and dense layers (batch norm, ReLU and pooling
    add little arithmetic), forward plus backward counted as three forward passes (the backward pass
    computes both the gradient of the input and that of the weights)."""
    from keras import layers

    forward = 0.0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            height, width = layer.output.shape[1:3]
            forward += 2.0 * height * width * _product(layer.kernel.shape)
        elif isinstance(layer, layers.Dense):
            forward += 2.0 * _product(layer.kernel.shape)
    return 3.0 * forward


def _product(shape: Any) -> float:
    result = 1.0
    for dim in shape:
        result *= int(dim)
    return result


def build(args: argparse.Namespace, n_classes: int):
    import keras

    from training.cnn import build_cnn
    from training.epochs import compile_cnn
    from training.precision import training_policy

    keras.mixed_precision.set_global_policy(training_policy(args.precision))
    keras.utils.set_random_seed(0)
    model = build_cnn(args.input_size, n_classes, args.base_filters, args.blocks)
    compile_cnn(model, 1e-3)
    return model


def bare(args: argparse.Namespace, card: dict) -> dict[str, Any]:
    import numpy as np

    model = build(args, len(card["classes"]))
    rng = np.random.default_rng(0)
    images = rng.random(((args.bare_steps + 2) * args.batch_size, args.input_size, args.input_size, 1), np.float32)
    labels = rng.integers(0, len(card["classes"]), len(images))
    warm = 2 * args.batch_size
    model.fit(images[:warm], labels[:warm], batch_size=args.batch_size, epochs=1, verbose=0)
    started = time.perf_counter()
    model.fit(images[warm:], labels[warm:], batch_size=args.batch_size, epochs=1, verbose=0, shuffle=False)
    return {
        "images_per_s": args.bare_steps * args.batch_size / (time.perf_counter() - started),
        "training_gflop_per_image": training_flops(model) / 1e9,
    }


def real(args: argparse.Namespace, card: dict) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf

    from training.augment import augmenter
    from training.epochs import BATCH_NORM_IMAGES, epoch_batches, run_epoch, validation_batches

    n_classes = len(card["classes"])
    model = build(args, n_classes)
    rng = np.random.default_rng(0)
    pool = max(args.epoch_size, BATCH_NORM_IMAGES)
    size = (args.input_size, args.input_size, 1)
    images = tf.constant(rng.random((pool, *size), np.float32).astype(np.float16))  # as training holds them
    labels = tf.constant(rng.integers(0, n_classes, pool))
    val_images = rng.random((args.val_size, *size), np.float32).astype(np.float16)
    validation = validation_batches(val_images, rng.integers(0, n_classes, args.val_size))
    batch_norm_images = images.numpy()[:BATCH_NORM_IMAGES]
    augment = augmenter(acquisition=card["training"].get("augment") == "acquisition")
    steps = args.epoch_size // args.batch_size
    order = rng.integers(0, pool, (2, steps * args.batch_size))
    # The training recipe's class weights go with plain shuffling; balanced sampling needs none.
    weights = {k: 1.0 for k in range(n_classes)} if card["training"].get("sampling") == "shuffle" else None
    warm = epoch_batches(images, labels, order[0, : 2 * args.batch_size], 0, args.batch_size, 0, augment)
    run_epoch(model, warm, 2, weights, validation_batches(val_images[:64], np.zeros(64, int)), batch_norm_images[:128])
    batches = epoch_batches(images, labels, order[1], 1, args.batch_size, 0, augment)
    _, seconds = run_epoch(model, batches, steps, weights, validation, batch_norm_images)
    images_done = steps * args.batch_size
    return {
        "images_per_s": images_done / sum(seconds.values()),
        "training_steps_images_per_s": images_done / seconds["train"],
        "seconds": seconds,
        "calibration_images": len(batch_norm_images),
    }


def peak(args: argparse.Namespace, card: dict) -> dict[str, Any]:
    """GFLOP/s of a 2048² float32 matmul and of a 3×3, 64 → 64 channel convolution on 32 × 64² images."""
    import tensorflow as tf

    n = 2048
    a, b = tf.random.uniform((n, n)), tf.random.uniform((n, n))
    x, k = tf.random.uniform((32, 64, 64, 64)), tf.random.uniform((3, 3, 64, 64))
    cases = {
        "matmul": (tf.function(lambda: tf.linalg.matmul(a, b)), 2.0 * n**3),
        "conv": (tf.function(lambda: tf.nn.conv2d(x, k, 1, "SAME")), 2.0 * 32 * 64 * 64 * 64 * 64 * 9),
    }
    result = {}
    for name, (function, flops) in cases.items():
        function().numpy()
        repeats, started = 0, time.perf_counter()
        while time.perf_counter() - started < 3.0:
            function().numpy()
            repeats += 1
        result[f"{name}_gflop_per_s"] = repeats * flops / (time.perf_counter() - started) / 1e9
    return result


def run_child(kind: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    # training.train turns oneDNN on before TensorFlow starts; the children do the same.
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1", TF_CPP_MIN_LOG_LEVEL="2")
    command = [
        PYTHON,
        "-m",
        "bench.training_speed",
        "--child",
        kind,
        "--precision",
        precision,
        *(
            f"--{k.replace('_', '-')}={getattr(args, k)}"
            for k in ("input_size", "base_filters", "blocks", "batch_size", "bare_steps", "epoch_size", "val_size")
        ),
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child ({kind}, {precision}) failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    card = json.loads((MODEL_DIR / "model_card.json").read_text())
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-size", type=int, default=card["input_size"])
    parser.add_argument("--base-filters", type=int, default=card["architecture"]["base_filters"])
    parser.add_argument("--blocks", type=int, default=card["architecture"]["blocks"])
    parser.add_argument("--batch-size", type=int, default=card["training"]["batch_size"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bare-steps", type=int, default=20)
    parser.add_argument("--epoch-size", type=int, default=card["training"]["epoch_size"])
    parser.add_argument("--val-size", type=int, default=card["data"]["val"]["total"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=("bare", "real", "peak"), help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps({"bare": bare, "real": real, "peak": peak}[args.child](args, card)))
        return 0

    foreign = ForeignCpu()
    precisions = ["float32", "bfloat16"] if native_bfloat16() else ["float32"]
    runs: dict[str, list[dict[str, Any]]] = {}
    for round_ in range(args.rounds):
        for precision in precisions:
            for kind in ("bare", "real"):
                result = run_child(kind, precision, args)
                runs.setdefault(f"{kind} {precision}", []).append(result)
                print(f"round {round_ + 1}: {kind} {precision} {result['images_per_s']:.1f} images/s", flush=True)
        runs.setdefault("peak", []).append(run_child("peak", "float32", args))

    def typical(key: str, field: str) -> float:
        return median([r[field] for r in runs[key]])

    flops = runs["bare float32"][0]["training_gflop_per_image"]
    peak_gflops = max(typical("peak", "matmul_gflop_per_s"), typical("peak", "conv_gflop_per_s"))
    print(
        f"\nCNN {args.input_size} px, {args.base_filters} base filters, {args.blocks} blocks, batches of "
        f"{args.batch_size}; bare: {args.bare_steps} steps; real: an epoch of {args.epoch_size} images, "
        f"recalibration on {runs['real float32'][0]['calibration_images']}, validation on {args.val_size}; "
        f"median of {args.rounds} alternating runs; {flops:.3f} GFLOP per training image\n"
    )
    rows, summary = [], {}
    for precision in ("float32", "bfloat16"):
        if precision not in precisions:
            rows.append([precision, UNSUPPORTED, "", "", "", "", "", ""])
            continue
        bare_rate, real_rate = (
            typical(f"bare {precision}", "images_per_s"),
            typical(f"real {precision}", "images_per_s"),
        )
        steps_rate = typical(f"real {precision}", "training_steps_images_per_s")
        parts = {
            part: median([r["seconds"][part] for r in runs[f"real {precision}"]])
            for part in ("train", "recalibration", "validation")
        }
        summary[precision] = {
            "bare": bare_rate,
            "real": real_rate,
            "real_training_steps": steps_rate,
            "ratio": real_rate / bare_rate,
            "seconds": parts,
        }
        rows.append(
            [
                precision,
                bare_rate,
                real_rate,
                f"{real_rate / bare_rate:.2f}",
                f"{steps_rate / bare_rate:.2f}",
                f"{parts['train']:.1f} / {parts['recalibration']:.1f} / {parts['validation']:.1f}",
                flops * bare_rate,
                flops * real_rate,
            ]
        )
    print(
        table(
            [
                "precision",
                "bare images/s",
                "real epoch images/s",
                "real ÷ bare",
                "training steps ÷ bare",
                "epoch s: steps / recal. / val.",
                "bare GFLOP/s",
                "real GFLOP/s",
            ],
            rows,
        )
    )
    if "bfloat16" in summary:
        print(f"\nbfloat16 ÷ float32, real epoch: {summary['bfloat16']['real'] / summary['float32']['real']:.2f}×")
    print(
        f"\npeak: matmul {typical('peak', 'matmul_gflop_per_s'):.1f} GFLOP/s, conv "
        f"{typical('peak', 'conv_gflop_per_s'):.1f} GFLOP/s; bare step at "
        f"{flops * summary['float32']['bare'] / peak_gflops:.0%} of the higher, real epoch at "
        f"{flops * summary['float32']['real'] / peak_gflops:.0%}"
    )
    print(foreign.line())
    save_json(
        args.json,
        {
            "benchmark": "training_speed",
            "architecture": {k: getattr(args, k) for k in ("input_size", "base_filters", "blocks", "batch_size")},
            "bare_steps": args.bare_steps,
            "epoch_size": args.epoch_size,
            "val_size": args.val_size,
            "training_gflop_per_image": flops,
            "runs": runs,
            "summary": summary,
            "bfloat16": "measured" if "bfloat16" in summary else UNSUPPORTED,
            "peak_gflop_per_s": {k: typical("peak", k) for k in ("matmul_gflop_per_s", "conv_gflop_per_s")},
            "other_cpu": foreign.result(),
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

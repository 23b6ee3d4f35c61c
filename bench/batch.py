"""Batch throughput: `training.evaluate` images per second on the shared data, and training throughput
(training images per second, per epoch).

    python -m bench.batch [--split test] [--train-epochs 0] [--json bench/results/batch.json]

The training figure comes from the shipped model card (`training.images_per_second`, all epochs of the
run that made models/). `--train-epochs N` also times N fresh epochs into a temporary folder (minutes;
the shared data's decoded-image cache in .cache/ is reused) and reports each epoch.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tools.common import DATA_DIR, MODEL_DIR, PYTHON, ROOT, ForeignCpu, save_json, table


def evaluate(split: str | None, model: Path) -> dict:
    command = [PYTHON, "-m", "training.evaluate", "--model", str(model), "--data", str(DATA_DIR / "manifest.csv")]
    if split:
        command += ["--split", split]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"training.evaluate failed:\n{done.stderr[-3000:]}")
    match = re.search(r"([\d.]+) images/s end to end \(([\d.]+) after decoding\)", done.stdout)
    images = re.search(r": (\d+) images, model", done.stdout)
    return {
        "split": split or "all",
        "images": int(images.group(1)) if images else None,
        "images_per_s": float(match.group(1)) if match else None,
        "images_per_s_after_decoding": float(match.group(2)) if match else None,
        "wall_s_with_start_up": wall,
    }


def card_training(model: Path) -> dict:
    card = json.loads((model / "model_card.json").read_text())
    training = card.get("training", {})
    train_images = card.get("data", {}).get("train", {}).get("n") or card.get("data", {}).get("train", {}).get("total")
    return {
        "epochs": training.get("epochs"),
        "seconds": training.get("seconds"),
        "images_per_s": training.get("images_per_second"),
        "train_images": train_images,
        "batch_size": training.get("batch_size"),
    }


def epochs_from_log(text: str, train_images: int | None) -> dict:
    """Per-epoch seconds and training images/s from a `training.train` log (Keras's verbose=2 lines)."""
    split = re.search(r"split by patient: train (\d+)", text)
    train_images = int(split.group(1)) if split else train_images
    seconds = [float(v) for v in re.findall(r"^\d+/\d+ - (\d+(?:\.\d+)?)s - ", text, flags=re.MULTILINE)]
    overall = re.search(r"\(([\d.]+) training images/s\)", text)
    return {
        "train_images": train_images,
        "epoch_seconds": seconds,
        "epoch_images_per_s": [train_images / v for v in seconds if v] if train_images else [],
        "images_per_s": float(overall.group(1)) if overall else None,
    }


def fresh_training(epochs: int) -> dict:
    """Train `epochs` epochs into a temporary folder and time each from Keras's own per-epoch log."""
    with tempfile.TemporaryDirectory(prefix="cxr-train-") as tmp:
        command = [
            PYTHON,
            "-m",
            "training.train",
            "--data",
            str(DATA_DIR / "manifest.csv"),
            "--out",
            str(Path(tmp) / "model"),
            "--epochs",
            str(epochs),
            "--patience",
            str(epochs + 1),
        ]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"training.train failed:\n{done.stderr[-3000:]}")
    return epochs_from_log(done.stdout + done.stderr, None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="test", help="model split to evaluate ('' for the whole manifest)")
    parser.add_argument("--train-epochs", type=int, default=0, help="also time this many fresh training epochs")
    parser.add_argument("--train-log", type=Path, help="also report the epochs of this training.train log")
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    foreign = ForeignCpu()
    result = {"evaluate": evaluate(args.split or None, args.model), "card_training": card_training(args.model)}
    if args.train_log:
        result["logged_training"] = epochs_from_log(
            args.train_log.read_text(errors="replace"), result["card_training"]["train_images"]
        )
    if args.train_epochs:
        result["fresh_training"] = fresh_training(args.train_epochs)
    e, c = result["evaluate"], result["card_training"]
    rows = [
        [
            f"training.evaluate --split {e['split']} ({e['images']} images)",
            f"{e['images_per_s']} images/s end to end",
            f"{e['images_per_s_after_decoding']} images/s after decoding",
        ],
        [f"training (model card: {c['epochs']} epochs, {c['seconds']} s)", f"{c['images_per_s']} images/s", ""],
    ]
    logged = result.get("logged_training")
    if logged:
        per_epoch = ", ".join(f"{v:.1f}" for v in logged["epoch_images_per_s"])
        rows.append(
            [
                f"training run of models/ ({len(logged['epoch_seconds'])} epochs of {logged['train_images']} "
                "images, from its log)",
                f"{logged['images_per_s']} images/s",
                f"per epoch: {per_epoch}",
            ]
        )
    fresh = result.get("fresh_training")
    if fresh:
        per_epoch = ", ".join(f"{v:.1f}" for v in fresh["epoch_images_per_s"])
        rows.append(
            [
                f"training, {len(fresh['epoch_seconds'])} fresh epoch(s) of {fresh['train_images']} images",
                f"{fresh['images_per_s']} images/s",
                f"per epoch: {per_epoch}",
            ]
        )
    print(table(["batch job", "throughput", "detail"], rows))
    print(foreign.line())
    save_json(args.json, {"benchmark": "batch", **result, "foreign_cpu": foreign.result()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

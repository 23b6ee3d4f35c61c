"""Evaluate a model bundle on any labelled manifest or class-folder tree.

    python -m training.evaluate --model models/ --data PATH --out metrics.json [--predictions preds.csv]
    python -m training.evaluate --model models/ --data ../shared/data/cxr/manifest.csv --split test

Prints a table of every classifier (CNN softmax, each ensemble member, the ensemble) and writes the
same metrics as JSON. Exits with status 2 when the data cannot be read.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from cxr.bundle import ModelBundle
from cxr.decision import decide
from cxr.errors import ModelBundleError
from training.data import SPLIT_FILE, SPLITS, UNSEEN, DataError, load_dataset, read_split
from training.images import load_inputs
from training.scoring import score_split


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models"), help="model directory (default models/)")
    parser.add_argument("--data", type=Path, required=True, help="manifest CSV or class-folder tree")
    parser.add_argument("--out", type=Path, help="write the metrics as JSON here")
    parser.add_argument("--predictions", type=Path, help="write one CSV row per image here")
    parser.add_argument("--split", choices=(*SPLITS, UNSEEN), help="only the images the model's saved split puts here")
    parser.add_argument("--skip-bad", action="store_true", help="leave out unreadable rows instead of stopping")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:
        bundle = ModelBundle(args.model)
    except ModelBundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    classes = bundle.classes
    # Labels the model was trained to call normal (non-COVID findings) are scored as such.
    negatives = [n for n in bundle.card.get("data", {}).get("trained_as_normal", []) if n not in classes]
    try:
        samples, excluded = load_dataset(args.data, classes + negatives, known_labels=None)
        if args.split:
            saved = read_split(args.model / SPLIT_FILE)
            samples = [s for s in samples if saved.get(s.file) == args.split]
            if not samples:
                raise DataError(f"no image of {args.data} is in the model's {args.split} split")
        images, kept = load_inputs(samples, bundle.input_size, bundle.localiser, skip_bad=args.skip_bad)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if excluded:
        print(f"left out {sum(excluded.values())} image(s) of classes the model does not know: {dict(excluded)}")
    samples = [samples[i] for i in kept]
    forward_started = time.perf_counter()
    features, cnn_probs = bundle.embed(images)
    rate = len(samples) / (time.perf_counter() - started)
    title = (
        f"{args.data}{f' ({args.split} split)' if args.split else ''}: {len(samples)} images, model {bundle.version}"
    )
    scores = score_split(
        bundle.ensemble,
        features,
        cnn_probs,
        samples,
        classes,
        negatives,
        bundle.temperature,
        bundle.rule,
        bundle.ood,
        title,
    )
    print(
        f"{rate:.1f} images/s end to end ({len(samples) / (time.perf_counter() - forward_started):.1f} after decoding)"
    )
    if args.out:
        result = {
            "model_version": bundle.version,
            "data": str(args.data),
            "split": args.split,
            "n": len(samples),
            "left_out_by_class": dict(excluded),
            "threshold": bundle.threshold,
            "metrics": scores.metrics,
            "outcomes": scores.outcomes,
        }
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.predictions:
        with args.predictions.open("w", newline="") as handle:
            writer = csv.writer(handle)
            # "decision" is the deployed outcome (a class or "indeterminate"); "class" the class the threshold
            # rule gives, which the app shows beside an indeterminate outcome.
            writer.writerow(["file", "label", "decision"] + [f"p_{c}" for c in classes] + ["class", "source"])
            ensemble = scores.probabilities["ensemble"]
            chosen = decide(ensemble, classes, bundle.threshold)
            for sample, decision, index, probs in zip(samples, scores.decisions, chosen, ensemble):
                writer.writerow(
                    [sample.file, sample.label, decision]
                    + [f"{p:.6f}" for p in probs]
                    + [classes[index], sample.source]
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""How well the OOD gate separates chest X-rays from everything else.

    python -m bench.ood_gate --model models/ --data ../shared/data/cxr/manifest.csv

Every image goes the way of an upload: `decode_image`, `ModelBundle.predict`, `gate.assess`.
Prints, as a Markdown table, the share of the shared chest X-rays that pass (the held-out test split
of models/split.csv, and all of them) and the share refused of each generated non-X-ray category
(bench/nonxray.py), with the checks that refused them. `--csv` writes one row per image.
The gate's mean chest layout and limits are the model's, fitted on its training films (`cxr.gate_statistics`).
"""

from __future__ import annotations

import argparse
import csv
import io
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from cxr.bundle import ModelBundle
from cxr.errors import InputError
from cxr.gate import assess
from cxr.imaging import decode_image
from tools.nonxray import CATEGORIES, Sample, encode
from training.data import read_split


@dataclass(frozen=True)
class Outcome:
    name: str
    accepted: bool
    score: float | None  # None when the decoder refused the file
    failed: tuple[str, ...]  # gate checks, or "decoder (4xx)"


def judge(bundle: ModelBundle, name: str, data: bytes) -> Outcome:
    try:
        decoded = decode_image(data)
    except InputError as error:
        return Outcome(name, False, None, (f"decoder ({error.status})",))
    result = assess(decoded, bundle.predict(decoded.frame), bundle.gate)
    return Outcome(name, result.accepted, result.score, result.failed)


def xray_files(manifest: Path, split_file: Path) -> tuple[list[str], set[str]]:
    """(every file of the manifest, those in the model's held-out test split)."""
    with manifest.open(newline="", encoding="utf-8-sig") as handle:
        files = [row["file"] for row in csv.DictReader(handle)]
    split = read_split(split_file) if split_file.is_file() else {}
    return files, {f for f in files if split.get(f) == "test"}


def as_jpeg(data: bytes) -> bytes:
    return encode(Image.open(io.BytesIO(data)).convert("L"), "JPEG", quality=85)


def row(label: str, outcomes: list[Outcome], xray: bool) -> str:
    n = len(outcomes)
    accepted = sum(o.accepted for o in outcomes)
    reasons = Counter(reason for o in outcomes for reason in o.failed)
    why = ", ".join(f"{reason} {count}" for reason, count in reasons.most_common()) or "-"
    kind, count = ("accepted", accepted) if xray else ("refused", n - accepted)
    return f"| {label} | {n} | {kind} {count / n:.1%} ({count}) | {why} |"


def run(bundle: ModelBundle, items: Iterable[Sample]) -> list[Outcome]:
    return [judge(bundle, name, data) for name, data in items]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models"), help="model directory (with split.csv)")
    parser.add_argument("--data", type=Path, required=True, help="manifest.csv of the shared chest X-rays")
    parser.add_argument("--csv", type=Path, help="write one row per image here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    bundle = ModelBundle(args.model)
    print(
        f"model {bundle.version}: OOD distance threshold {bundle.ood.threshold:.2f} "
        f"(validation quantile {bundle.ood.quantile})\n"
    )
    lines = ["| set | images | gate | refused by (check: count) |", "|---|---:|---|---|"]
    results: list[tuple[str, Outcome]] = []
    files, test = xray_files(args.data, args.model / "split.csv")
    outcomes = run(bundle, ((f, (args.data.parent / f).read_bytes()) for f in files))
    held_out = [o for o in outcomes if o.name in test]
    if held_out:
        lines.append(row("X-rays, held-out test split", held_out, xray=True))
    lines.append(row("X-rays, all in the manifest", outcomes, xray=True))
    results += [("X-rays (test split)" if o.name in test else "X-rays", o) for o in outcomes]
    if test:  # the container must not matter: the same films as many PACS and phones export them
        label = "X-rays, held-out, re-encoded as JPEG q85"
        outcomes = run(bundle, ((f, as_jpeg((args.data.parent / f).read_bytes())) for f in sorted(test)))
        lines.append(row(label, outcomes, xray=True))
        results += [(label, o) for o in outcomes]
    everything: list[Outcome] = []
    for label, make in CATEGORIES.items():
        outcomes = run(bundle, make())
        lines.append(row(label, outcomes, xray=False))
        results += [(label, o) for o in outcomes]
        everything += outcomes
    lines.append(row("**all non-X-rays**", everything, xray=False))
    print("\n".join(lines))
    print(f"\n{len(results)} images in {time.perf_counter() - started:.0f} s")
    if args.csv:
        with args.csv.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["set", "name", "accepted", "score", "failed"])
            for label, o in results:
                writer.writerow(
                    [label, o.name, int(o.accepted), "" if o.score is None else f"{o.score:.4f}", ";".join(o.failed)]
                )


if __name__ == "__main__":
    main()

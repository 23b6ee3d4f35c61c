"""Does preprocessing a large film from its reduced working frame (`cxr.preprocess.working_frame`) change
what the model decides? Real X-rays of the model's test split, enlarged to a detector's size, are
predicted and gated twice: from the working frame, and from the full-resolution film (the working frame
turned off). Prints how many decisions and gate verdicts agree, and the largest probability difference.

    python -m bench.large_film_agreement [--images 200] [--side 2048]
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tools.common import DATA_DIR, MODEL_DIR, table


def test_split_films(count: int, model_dir: Path) -> list[Path]:
    """`count` films of the model's test split, spread over it (every source)."""
    with (model_dir / "split.csv").open(newline="") as handle:
        files = [row["file"] for row in csv.DictReader(handle) if row["split"] == "test"]
    return [DATA_DIR / name for name in files[:: max(1, len(files) // count)][:count]]


def enlarged(path: Path, side: int) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert("L").resize((side, side), Image.BICUBIC).save(buffer, "PNG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--working-scale", type=int, help="override cxr.preprocess.WORKING_SCALE (to compare)")
    args = parser.parse_args(argv)

    import cxr.preprocess
    from cxr.bundle import ModelBundle
    from cxr.gate import assess
    from cxr.imaging import decode_image, to_float

    bundle = ModelBundle(args.model)
    if args.working_scale:
        cxr.preprocess.WORKING_SCALE = args.working_scale
    reduced_frame = cxr.preprocess.working_frame

    def run(image, full_resolution: bool):
        whole = lambda pixels, size: (to_float(pixels), 1)  # noqa: E731 (the film itself as the working frame)
        cxr.preprocess.working_frame = whole if full_resolution else reduced_frame
        try:
            output = bundle.predict(image.frame)
            return output, assess(image, output, bundle.gate)
        finally:
            cxr.preprocess.working_frame = reduced_frame

    def agreement(pairs: list[tuple]) -> list:
        """films, same decision, same gate verdict, max and median |Δp| over pairs ((output, gate), (output, gate))."""
        deltas = [max(abs(a.probabilities[c] - b.probabilities[c]) for c in bundle.classes) for (a, _), (b, _) in pairs]
        return [
            len(pairs),
            sum(a.decision == b.decision for (a, _), (b, _) in pairs),
            sum(ga.accepted == gb.accepted for (_, ga), (_, gb) in pairs),
            max(deltas),
            float(np.median(deltas)),
        ]

    reduced_vs_full, enlarged_vs_native = [], []
    for path in test_split_films(args.images, args.model):
        image = decode_image(enlarged(path, args.side))
        full = run(image, True)
        reduced_vs_full.append((full, run(image, False)))
        enlarged_vs_native.append((full, run(decode_image(path.read_bytes()), True)))
    print(f"Test-split films enlarged to {args.side} px (bicubic), model {bundle.version}\n")
    print(
        table(
            ["comparison", "films", "same decision", "same gate verdict", "max |Δp|", "median |Δp|"],
            [
                [f"{args.side} px: working frame vs full resolution", *agreement(reduced_vs_full)],
                [f"for scale: {args.side} px (full resolution) vs the film as it came", *agreement(enlarged_vs_native)],
            ],
            digits=4,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

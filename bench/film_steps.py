"""The steps around the forward pass for one 2048 px and one 320 px film, as the fastest of N timings per
step (`bench.inprocess`'s `full_prediction` and `stage_times`): on a busy machine the fastest timing is
the least disturbed one. Run it from two checkouts alternately to compare commits.

    python -m bench.film_steps [--repeats 25] [--json PATH]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

from tools.common import MODEL_DIR, median, read_images, save_json, table

AROUND = [  # every step of `stage_times` but the forward pass and the unused scikit-learn ensemble
    "decode",
    "preprocess",
    "ensemble",
    "decision + OOD",
    "to_uint8",
    "gate",
    "sha256",
    "film PNG",
    "heatmap PNG",
    "thumbnail + JPEG",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from cxr.runtime import configure_threads

    configure_threads()
    from PIL import Image

    from bench.inprocess import OVERLAY_ON_REQUEST, full_prediction, stage_times
    from cxr.bundle import ModelBundle

    bundle = ModelBundle(args.model)
    small = next(data for _, data in read_images(8) if full_prediction(bundle, data))
    buffer = io.BytesIO()  # as `bench.inprocess --large` makes it
    Image.open(io.BytesIO(small)).convert("L").resize((args.side, args.side), Image.BICUBIC).save(buffer, "PNG")
    results = {}
    for name, data in ((f"{args.side} px", buffer.getvalue()), ("shared film", small)):
        full_prediction(bundle, data)  # warm-up
        fulls, stages = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            full_prediction(bundle, data)
            fulls.append((time.perf_counter() - started) * 1000.0)
            stages.append(stage_times(bundle, data))
        fastest = {step: min(run[step] for run in stages) for step in stages[0]}
        results[name] = {"full_median_ms": median(fulls), "fastest_ms": fastest}
    names = list(results)
    steps = [*AROUND, "forward + Grad-CAM", OVERLAY_ON_REQUEST]
    rows = [[step, *(results[n]["fastest_ms"][step] for n in names)] for step in steps]
    rows.append(["sum around the forward pass", *(sum(results[n]["fastest_ms"][s] for s in AROUND) for n in names)])
    rows.append(["full prediction (median)", *(results[n]["full_median_ms"] for n in names)])
    print(table([f"step, fastest of {args.repeats} (ms)", *names], rows, digits=2))
    save_json(args.json, {"benchmark": "film_steps", "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())

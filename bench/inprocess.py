"""In-process speed: the bare CNN forward pass vs the full prediction the app runs per upload, where the
time goes, and the best batch throughput of that full prediction in one process.

    python -m bench.inprocess [--images 40] [--repeats 5] [--json bench/results/inprocess.json]

Each TensorFlow thread setting runs in a fresh process (threads are fixed when TF starts):
  * latency rows: bare forward (`tf.function(cnn(x, training=False))` on one preprocessed image) and the
    full prediction (decode, preprocess, one forward pass with features + CNN probabilities + Grad-CAM,
    ensemble, OOD score and gate, then the stored files: image PNG, small Grad-CAM heatmap PNG and thumbnail JPEG),
    measured
    alternately on the same images in the same process, so their ratio is from one run;
  * throughput rows: the same full prediction over a batch of images, one after another or from two
    threads of the one process, in images per second.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tools.common import (
    MODEL_DIR,
    PYTHON,
    ROOT,
    ForeignCpu,
    machine,
    median,
    percentile,
    read_images,
    save_json,
    table,
    verdict,
)

TARGET_RATIO = 1.5
# (intra-op threads, inter-op threads) per process; (1, 1) is what each of 2 workers gets on 2 cores.
SETTINGS = ((1, 1), (2, 1), (2, 2))


def full_prediction(bundle: Any, data: bytes, thumbnail_size: int = 256) -> dict[str, bytes]:
    """Exactly the work of `webapp.analysis.create_prediction` for one upload, less the disk and database."""
    from cxr.gate import assess
    from cxr.imaging import decode_image
    from cxr.overlay import stored_files

    image = decode_image(data)
    output = bundle.predict(image.frame)
    gate = assess(image, output, bundle.gate)
    if not gate.accepted:  # refused uploads are answered 422 and not stored
        return {}
    hashlib.sha256(data).hexdigest()
    return stored_files(image, output.heatmap, output.box, thumbnail_size)


def stage_times(bundle: Any, data: bytes) -> dict[str, float]:
    """Milliseconds of each step of `full_prediction`, run one after another."""
    import numpy as np

    from cxr.decision import decide
    from cxr.gate import assess
    from cxr.imaging import decode_image
    from cxr.overlay import film_png, heatmap_png, jpeg_bytes, thumbnail
    from cxr.preprocess import preprocess

    times: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = fn()
        times[name] = (time.perf_counter() - started) * 1000.0
        return value

    image = timed("decode", lambda: decode_image(data))
    prepared = timed("preprocess", lambda: preprocess(image.frame, bundle.input_size))
    feats, _, cams = timed("forward + Grad-CAM", lambda: bundle.forward(prepared.tensor[np.newaxis]))
    serving_ensemble = getattr(bundle, "_ensemble_proba", bundle.ensemble.predict_proba)
    probs = timed("ensemble", lambda: serving_ensemble(feats))
    timed("(ensemble through scikit-learn, as before)", lambda: bundle.ensemble.predict_proba(feats))
    timed("decision + OOD", lambda: (decide(probs, bundle.classes, bundle.threshold), bundle.ood.distance(feats)))
    output = bundle.predict(image.frame)
    gray = timed("to_uint8", lambda: image.gray)  # made once, for the gate and the stored files
    timed("gate", lambda: assess(image, output, bundle.gate))
    timed("sha256", lambda: hashlib.sha256(data).hexdigest())
    film = timed("film PNG", lambda: film_png(image))
    heat = timed("heatmap PNG", lambda: heatmap_png(output.heatmap, output.box, gray.shape))
    timed("thumbnail + JPEG", lambda: jpeg_bytes(thumbnail(gray, 256)))
    times[OVERLAY_ON_REQUEST] = overlay_request_ms(film, heat)
    return times


# Not part of an upload: the overlay the result page's plain image, the API, the PDF and the DICOM secondary
# capture ask for, rendered from the stored film and heatmap and encoded (webapp/overlays.py).
OVERLAY_ON_REQUEST = "(overlay on request: read, render, JPEG)"


def overlay_request_ms(film: bytes, heat: bytes) -> float:
    """Milliseconds to render the overlay from these stored files (written to a temporary folder first)."""
    import tempfile

    from cxr.overlay import jpeg_bytes, overlay_from_files

    with tempfile.TemporaryDirectory() as folder:
        film_path, heat_path = Path(folder, "film.png"), Path(folder, "film-heat.png")
        film_path.write_bytes(film)
        heat_path.write_bytes(heat)
        started = time.perf_counter()
        jpeg_bytes(overlay_from_files(film_path, heat_path))
        return (time.perf_counter() - started) * 1000.0


def measure(images: int, repeats: int, batch_seconds: float, model_dir: Path, large_side: int = 0) -> dict[str, Any]:
    """Run in a child process whose TF threads are set by the environment (CXR_TF_THREADS ...)."""
    from cxr.runtime import configure_threads

    settings = configure_threads()
    import numpy as np
    import tensorflow as tf

    from cxr.bundle import ModelBundle
    from cxr.imaging import decode_image
    from cxr.preprocess import preprocess

    loaded = time.perf_counter()
    bundle = ModelBundle(model_dir)
    load_s = time.perf_counter() - loaded
    # Only images the gate accepts: those go the whole way (a refused upload skips the stored files).
    blobs = [data for _, data in read_images(images * 2) if full_prediction(bundle, data)][:images]
    tensors = [preprocess(decode_image(b).frame, bundle.input_size).tensor[np.newaxis] for b in blobs]
    size = bundle.input_size
    bare = tf.function(
        lambda x: bundle.cnn(x, training=False), input_signature=[tf.TensorSpec((None, size, size, 1), tf.float32)]
    )

    def run_bare(x: np.ndarray) -> None:
        bare(x).numpy()

    def run_eager(x: np.ndarray) -> None:
        bundle.cnn(x, training=False).numpy()

    for x, data in zip(tensors[:5], blobs[:5]):  # warm-up: traces, caches, allocator
        for _ in range(3):
            run_bare(x)
            run_eager(x)
            full_prediction(bundle, data)

    samples: dict[str, list[float]] = {"bare": [], "eager": [], "full": []}
    for _ in range(repeats):
        for x, data in zip(tensors, blobs):
            for name, fn, arg in (("bare", run_bare, x), ("full", full_prediction, data), ("eager", run_eager, x)):
                started = time.perf_counter()
                fn(bundle, arg) if name == "full" else fn(arg)
                samples[name].append((time.perf_counter() - started) * 1000.0)

    stages: dict[str, list[float]] = {}
    for data in blobs:
        for name, ms in stage_times(bundle, data).items():
            stages.setdefault(name, []).append(ms)

    def throughput(concurrency: int) -> float:
        done, started = 0, time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            while time.perf_counter() - started < batch_seconds:
                list(pool.map(lambda d: full_prediction(bundle, d), blobs))
                done += len(blobs)
        return done / (time.perf_counter() - started)

    batch = {str(c): throughput(c) for c in (1, 2)}
    large = None
    if large_side:  # a detector-sized film: decoding, preprocessing, overlay and encoding grow with the pixels
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.open(io.BytesIO(blobs[0])).convert("L").resize((large_side, large_side), Image.BICUBIC).save(
            buffer, "PNG"
        )
        big = buffer.getvalue()
        accepted = bool(full_prediction(bundle, big))
        timings = []
        for _ in range(max(3, repeats)):
            started = time.perf_counter()
            full_prediction(bundle, big)
            timings.append((time.perf_counter() - started) * 1000.0)
        large = {
            "side": large_side,
            "full_p50_ms": median(timings),
            "stages_ms": stage_times(bundle, big),
            "accepted_by_gate": accepted,
        }
    batched_forward = np.concatenate(tensors)
    bundle.forward(batched_forward)
    started = time.perf_counter()
    for _ in range(repeats):
        bundle.forward(batched_forward)
    forward_batch_per_s = repeats * len(tensors) / (time.perf_counter() - started)
    return {
        "intra_op": settings.intra_op,
        "inter_op": settings.inter_op,
        "model_version": bundle.version,
        "model_load_s": load_s,
        "images": len(blobs),
        "repeats": repeats,
        "ms": {name: {"p50": median(v), "p95": percentile(v, 95), "n": len(v)} for name, v in samples.items()},
        "stages_ms": {name: median(v) for name, v in stages.items()},
        "batch_images_per_s": batch,
        "forward_only_batch_images_per_s": forward_batch_per_s,
        "large": large,
    }


def run_child(intra: int, inter: int, args: argparse.Namespace) -> dict[str, Any]:
    env = dict(os.environ, CXR_TF_THREADS=str(intra), CXR_TF_INTER_THREADS=str(inter), TF_CPP_MIN_LOG_LEVEL="2")
    for name in (
        "OMP_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
    ):
        env.pop(name, None)
    command = [
        PYTHON,
        "-m",
        "bench.inprocess",
        "--child",
        "--images",
        str(args.images),
        "--repeats",
        str(args.repeats),
        "--batch-seconds",
        str(args.batch_seconds),
        "--model",
        str(args.model),
        "--large",
        str(getattr(args, "large", 0)),
    ]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"child {intra}/{inter} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def render(results: list[dict[str, Any]]) -> str:
    rows = []
    for r in results:
        bare, full = r["ms"]["bare"]["p50"], r["ms"]["full"]["p50"]
        rows.append(
            [
                f"{r['intra_op']}/{r['inter_op']}",
                bare,
                r["ms"]["eager"]["p50"],
                full,
                r["ms"]["full"]["p95"],
                full / bare,
                verdict(full / bare <= TARGET_RATIO),
                r["batch_images_per_s"]["1"],
                r["batch_images_per_s"]["2"],
                r["forward_only_batch_images_per_s"],
            ]
        )
    out = [
        table(
            [
                "TF threads intra/inter",
                "bare forward p50 ms",
                "eager cnn() p50 ms",
                "full p50 ms",
                "full p95 ms",
                "full / bare",
                f"≤ {TARGET_RATIO}×",
                "full, 1 thread img/s",
                "full, 2 threads img/s",
                "forward only, batched img/s",
            ],
            rows,
            digits=2,
        )
    ]
    stage_names = list(results[0]["stages_ms"])
    out.append("\nWhere the time of one full prediction goes (median ms per step):\n")
    out.append(
        table(
            ["step", *(f"{r['intra_op']}/{r['inter_op']}" for r in results)],
            [[name, *(r["stages_ms"][name] for r in results)] for name in stage_names],
            digits=2,
        )
    )
    large = [r for r in results if r.get("large")]
    if large:
        side = large[0]["large"]["side"]
        out.append(f"\nOne {side}×{side} film (the shared images are ~320 px; detectors give 2-4k px), median ms:\n")
        out.append(
            table(
                ["step", *(f"{r['intra_op']}/{r['inter_op']}" for r in large)],
                [[name, *(r["large"]["stages_ms"][name] for r in large)] for name in stage_names]
                + [["full prediction", *(r["large"]["full_p50_ms"] for r in large)]],
                digits=1,
            )
        )
    best = max(max(r["batch_images_per_s"].values()) for r in results)
    out.append(f"\nBest in-process batch throughput of the full prediction: {best:.1f} images/s")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=40, help="distinct real X-rays")
    parser.add_argument("--repeats", type=int, default=5, help="rounds over the images for the latency medians")
    parser.add_argument("--batch-seconds", type=float, default=15.0, help="length of each throughput run")
    parser.add_argument(
        "--settings",
        default=",".join(f"{a}/{b}" for a, b in SETTINGS),
        help="TF intra/inter thread settings to compare, e.g. 1/1,2/1",
    )
    parser.add_argument("--model", type=Path, default=MODEL_DIR)
    parser.add_argument("--large", type=int, default=2048, help="also time one film of this side (0: no)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.images, args.repeats, args.batch_seconds, args.model, args.large)))
        return 0
    foreign = ForeignCpu()
    settings = [tuple(int(v) for v in s.split("/")) for s in args.settings.split(",")]
    results = [run_child(intra, inter, args) for intra, inter in settings]
    print(
        f"In-process speed on {machine()['cpu']} ({machine()['cores']} cores), model {results[0]['model_version']},"
        f" {args.images} images × {args.repeats} rounds\n"
    )
    print(render(results))
    print(foreign.line())
    save_json(args.json, {"benchmark": "inprocess", "results": results, "foreign_cpu": foreign.result()})
    return 0


if __name__ == "__main__":
    sys.exit(main())

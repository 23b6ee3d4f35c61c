"""Over HTTP under gunicorn (the README's settings, gunicorn.conf.py) on loopback: start-up time, then
upload → JSON latency, throughput, errors and worker memory at 1, 4 and 8 concurrent clients, compared
with the in-process full prediction measured in the same run.

    python -m bench.serving [--requests 300] [--json bench/results/serving.json]
    python -m bench.serving --matrix          # TF threads × workers × threads comparison (shorter runs)

The in-process reference runs first, in a child process with the workers' TF thread setting (p50) and
with each thread setting (the best batch throughput); then gunicorn starts with a fresh SQLite
database and upload folder in a temporary folder.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import inprocess
from tools.common import MODEL_DIR, ForeignCpu, machine, read_images, save_json, table, verdict
from tools.load import UPLOAD, report, run_load
from tools.server import Gunicorn

LEVELS = (1, 4, 8)
P50_RATIO = 1.3
THROUGHPUT_SHARE = 0.8
MEMORY_MIB = 1024.0


def in_process_reference(workers: int, tf_threads: int | None, repeats: int, batch_seconds: float) -> dict[str, Any]:
    """Full-prediction p50 with the workers' thread setting, and the best batch throughput of any setting."""
    from cxr.runtime import available_cores

    cores = available_cores()
    serving_threads = tf_threads or max(1, cores // workers)
    args = argparse.Namespace(images=30, repeats=repeats, batch_seconds=batch_seconds, model=MODEL_DIR)
    results = {}
    for intra in sorted({serving_threads, cores, 1}):
        results[intra] = inprocess.run_child(intra, 1, args)
    best = max(max(r["batch_images_per_s"].values()) for r in results.values())
    serving = results[serving_threads]
    return {
        "tf_threads": serving_threads,
        "full_p50_ms": serving["ms"]["full"]["p50"],
        "bare_p50_ms": serving["ms"]["bare"]["p50"],
        "best_batch_images_per_s": best,
        "children": {str(k): v for k, v in results.items()},
    }


def serve_and_load(
    workdir: Path,
    workers: int,
    threads: int | None,
    worker_class: str | None,
    tf_threads: int | None,
    requests: int,
    levels: tuple[int, ...],
    images: list[tuple[str, bytes]],
) -> dict[str, Any]:
    env = {"CXR_WORKERS": str(workers)}
    if tf_threads:
        env["CXR_TF_THREADS"] = str(tf_threads)
    server = Gunicorn(workdir, workers=workers, threads=threads, worker_class=worker_class, env=env)
    try:
        startup = server.start()
        pids = server.wait_workers(workers)
        server.wait_idle()  # every worker has loaded the model: none competes for the CPU while measuring
        all_ready = time.perf_counter() - server.launched_at - 1.0  # less the idle window
        idle_rss = server.rss_per_worker()
        # Each image once: warms every worker, and keeps only the images the gate accepts (a 422 refusal
        # skips the stored PNGs, so it would flatter the latency), as the in-process figures do.
        images = [(name, data) for name, data in images if server.upload(name, data)[0] == 201]
        created = len(images)
        levels_out = {}
        for concurrency in levels:
            server.peak_rss.clear()
            server.start_sampling()
            per_client = math.ceil(requests / concurrency)
            run = run_load([server.url], images, concurrency, per_client, duration=600, token=server.token)
            server.stop_sampling()
            created += len(run.created_ids())
            summary = run.summary(UPLOAD)
            summary["peak_rss_mib"] = max(server.peak_rss.values(), default=float("nan"))
            summary["locked"] = len(run.locked())
            levels_out[str(concurrency)] = summary
            print(report(run, f"  {concurrency} client(s):"), flush=True)
        status, listing = server.get_json("/api/v1/predictions?per_page=1")
        log = server.log_text()
        return {
            "workers": workers,
            "threads": threads,
            "worker_class": worker_class or "gunicorn.conf.py",
            "startup_s": startup,
            "provision_s": server.provision_s,  # creating the user and token with the CLI, before the launch
            "all_workers_ready_s": all_ready,
            "worker_pids": pids,
            "idle_rss_mib": idle_rss,
            "levels": levels_out,
            "rows": listing.get("total") if status == 200 else None,
            "created_201": created,  # the warm-up uploads included
            "log_tracebacks": log.count("Traceback"),
            "log_locked": log.lower().count("database is locked"),
        }
    finally:
        server.stop()


def render(reference: dict[str, Any], served: dict[str, Any]) -> str:
    full = reference["full_p50_ms"]
    best = reference["best_batch_images_per_s"]
    rows = []
    for level, s in served["levels"].items():
        ratio = s["p50_ms"] / full
        rows.append(
            [level, s["requests"], s["ok"], s["errors"], s["p50_ms"], s["p95_ms"], s["per_s"], s["peak_rss_mib"], ratio]
        )
    out = [
        table(
            [
                "clients",
                "uploads",
                "201",
                "errors",
                "p50 ms",
                "p95 ms",
                "uploads/s",
                "peak RSS/worker MiB",
                "p50 / in-process",
            ],
            rows,
        )
    ]
    c1, c8 = served["levels"].get("1"), served["levels"].get("8")
    checks = []
    if c1:
        checks.append(
            [
                f"p50 at 1 client ≤ {P50_RATIO}× in-process full prediction ({full:.1f} ms)",
                f"{c1['p50_ms'] / full:.2f}×",
                verdict(c1["p50_ms"] / full <= P50_RATIO),
            ]
        )
    errors = sum(s["errors"] for s in served["levels"].values())
    checks.append(["zero errors at every level", errors, verdict(errors == 0)])
    peak = max(s["peak_rss_mib"] for s in served["levels"].values())
    checks.append([f"memory per worker ≤ {MEMORY_MIB:.0f} MiB", f"{peak:.0f} MiB", verdict(peak <= MEMORY_MIB)])
    if c8:
        share = c8["per_s"] / best
        checks.append(
            [
                f"throughput at 8 clients ≥ {THROUGHPUT_SHARE:.0%} of best in-process batch ({best:.1f}/s)",
                f"{share:.0%}",
                verdict(share >= THROUGHPUT_SHARE),
            ]
        )
    checks.append(
        [
            "rows == 201 responses",
            f"{served['rows']} / {served['created_201']}",
            verdict(served["rows"] == served["created_201"]),
        ]
    )
    checks.append(["start-up: gunicorn launch → first /healthz 200", f"{served['startup_s']:.1f} s", ""])
    checks.append(
        ["before the launch (not counted): a user and API token with the CLI", f"{served['provision_s']:.1f} s", ""]
    )
    checks.append(
        ["start-up: gunicorn launch → every worker loaded and idle", f"≈ {served['all_workers_ready_s']:.1f} s", ""]
    )
    out.append("")
    out.append(table(["check", "measured", "verdict"], checks))
    return "\n".join(out)


def matrix(args: argparse.Namespace, images: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    """Compare worker/thread layouts with shorter runs at 1 and 8 clients."""
    configs = [  # (workers, gunicorn threads, worker class, TF intra-op threads)
        (2, 2, "gthread", 1),
        (2, 2, "gthread", 2),
        (2, 1, "sync", 1),
        (1, 4, "gthread", 2),
        (3, 1, "sync", 1),
        (4, 1, "sync", 1),
    ]
    out = []
    for workers, threads, worker_class, tf_threads in configs:
        print(f"\n{workers} workers × {threads} threads ({worker_class}), TF intra-op {tf_threads}", flush=True)
        with tempfile.TemporaryDirectory(prefix="cxr-serving-") as tmp:
            served = serve_and_load(
                Path(tmp), workers, threads, worker_class, tf_threads, args.matrix_requests, (1, 8), images
            )
        served["tf_threads"] = tf_threads
        out.append(served)
    rows = [
        [
            f"{s['workers']}×{s['threads']} {s['worker_class']}",
            s["tf_threads"],
            s["levels"]["1"]["p50_ms"],
            s["levels"]["8"]["p50_ms"],
            s["levels"]["8"]["p95_ms"],
            s["levels"]["8"]["per_s"],
            s["levels"]["8"]["errors"],
            max(v["peak_rss_mib"] for v in s["levels"].values()),
        ]
        for s in out
    ]
    print(
        "\n"
        + table(
            [
                "workers × threads",
                "TF intra-op",
                "p50 ms @1",
                "p50 ms @8",
                "p95 ms @8",
                "uploads/s @8",
                "errors",
                "peak RSS/worker MiB",
            ],
            rows,
        )
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="uploads per concurrency level (at least)")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    parser.add_argument("--workers", type=int, default=2, help="as gunicorn.conf.py (WEB_CONCURRENCY)")
    parser.add_argument("--threads", type=int, help="gunicorn threads per worker (default: gunicorn.conf.py)")
    parser.add_argument("--worker-class", help="gunicorn worker class (default: gunicorn.conf.py)")
    parser.add_argument("--tf-threads", type=int, help="CXR_TF_THREADS (default: cores // workers)")
    parser.add_argument("--images", type=int, default=60, help="distinct real X-rays to upload")
    parser.add_argument("--repeats", type=int, default=4, help="in-process reference rounds")
    parser.add_argument("--batch-seconds", type=float, default=15.0)
    parser.add_argument("--matrix", action="store_true", help="compare worker/thread layouts instead")
    parser.add_argument("--matrix-requests", type=int, default=600)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    images = read_images(args.images)
    info = machine()
    foreign = ForeignCpu()
    if args.matrix:
        results = matrix(args, images)
        print(foreign.line())
        save_json(args.json, {"benchmark": "serving-matrix", "results": results, "foreign_cpu": foreign.result()})
        return 0
    print(f"In-process reference ({info['cpu']}, {info['cores']} cores) ...", flush=True)
    reference = in_process_reference(args.workers, args.tf_threads, args.repeats, args.batch_seconds)
    print(
        f"  full prediction p50 {reference['full_p50_ms']:.1f} ms with {reference['tf_threads']} TF thread(s); "
        f"best batch {reference['best_batch_images_per_s']:.1f} images/s",
        flush=True,
    )
    levels = tuple(int(v) for v in args.levels.split(","))
    with tempfile.TemporaryDirectory(prefix="cxr-serving-") as tmp:
        started = time.perf_counter()
        served = serve_and_load(
            Path(tmp), args.workers, args.threads, args.worker_class, args.tf_threads, args.requests, levels, images
        )
        served["wall_s"] = time.perf_counter() - started
    print(
        f"\ngunicorn: {args.workers} workers, threads {args.threads or 'from gunicorn.conf.py'}, "
        f"TF intra-op {reference['tf_threads']}\n"
    )
    print(render(reference, served))
    print(foreign.line())
    save_json(
        args.json, {"benchmark": "serving", "reference": reference, "served": served, "foreign_cpu": foreign.result()}
    )
    c8 = served["levels"].get("8", {})
    failed = any(s["errors"] for s in served["levels"].values()) or served["rows"] != served["created_201"]
    return 1 if failed or not c8 else 0


if __name__ == "__main__":
    sys.exit(main())

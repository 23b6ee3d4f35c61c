"""Concurrent uploads and history reads against gunicorn with SQLite for a few minutes; afterwards no 5xx,
no "database is locked", as many rows as 201 answers, and every row with its files (and no orphan file).

    python -m bench.soak [--clients 8] [--duration 180] [--reads 0.5] [--json bench/results/soak.json]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tools.checks import log_findings, storage_report, total_rows
from tools.common import ForeignCpu, machine, read_images, save_json, table, verdict
from tools.load import DETAIL, IMAGE, LIST, UPLOAD, report, run_load
from tools.server import Gunicorn


def soak(
    workdir: Path,
    clients: int,
    duration: float,
    reads: float,
    images: int,
    workers: int | None = None,
    max_requests: int = 100_000,
) -> dict:
    server = Gunicorn(workdir, workers=workers)
    try:
        startup = server.start()
        server.start_sampling()
        run = run_load(
            [server.url], read_images(images), clients, max_requests, duration=duration, reads=reads, token=server.token
        )
        server.stop_sampling()
        print(report(run, f"{clients} clients for {run.wall:.0f}s (reads {reads:.0%}), SQLite"), flush=True)
        rows = total_rows(server)
        storage = storage_report(server)
        findings = log_findings(server.log_text())
        result = {
            "startup_s": startup,
            "provision_s": server.provision_s,
            "wall_s": run.wall,
            "summary": {op: run.summary(op) for op in (UPLOAD, LIST, DETAIL, IMAGE) if run.of(op)},
            "statuses": dict(run.statuses()),
            "failures": [f"{r.op} {r.status} {r.error[:200]}" for r in run.failures()[:20]],
            "locked_responses": len(run.locked()),
            # Every read asks for something that exists (ids of earlier 201s): anything but 2xx is a defect.
            "reads_not_2xx": sum(1 for r in run.results if r.op != UPLOAD and not r.ok),
            "created_201": len(run.created_ids()),
            "rows": rows,
            "storage": {
                k: storage[k] for k in ("rows", "files", "rows_missing_files", "orphans", "young_orphans", "consistent")
            },
            "log": findings,
            "peak_rss_mib": max(server.peak_rss.values(), default=float("nan")),
        }
    finally:
        server.stop()
    return result


def render(result: dict) -> str:
    storage = result["storage"]
    checks = [
        ["requests (uploads + reads)", sum(s["requests"] for s in result["summary"].values()), ""],
        ["5xx or no answer", len(result["failures"]), verdict(not result["failures"])],
        [
            '"database is locked" (answers + log)',
            result["locked_responses"] + result["log"]["database_locked"],
            verdict(result["locked_responses"] + result["log"]["database_locked"] == 0),
        ],
        ["reads not answered 2xx", result["reads_not_2xx"], verdict(result["reads_not_2xx"] == 0)],
        [
            "rows == 201 answers",
            f"{result['rows']} / {result['created_201']}",
            verdict(result["rows"] == result["created_201"]),
        ],
        ["rows without their files", len(storage["rows_missing_files"]), verdict(not storage["rows_missing_files"])],
        [
            "files without a row",
            len(storage["orphans"]) + len(storage["young_orphans"]),
            verdict(storage["consistent"]),
        ],
        ["tracebacks in the log", result["log"]["tracebacks"], verdict(result["log"]["tracebacks"] == 0)],
        ["peak RSS per worker", f"{result['peak_rss_mib']:.0f} MiB", ""],
    ]
    return table(["check", "measured", "verdict"], checks)


def passed(result: dict) -> bool:
    return (
        not result["failures"]
        and result["locked_responses"] == 0
        and result["log"]["database_locked"] == 0
        and result["reads_not_2xx"] == 0
        and result["rows"] == result["created_201"]
        and result["storage"]["consistent"]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load")
    parser.add_argument("--reads", type=float, default=0.5, help="share of requests that read history")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    print(f"Soak on {machine()['cpu']} ({machine()['cores']} cores)", flush=True)
    foreign = ForeignCpu()
    with tempfile.TemporaryDirectory(prefix="cxr-soak-") as tmp:
        result = soak(Path(tmp), args.clients, args.duration, args.reads, args.images)
    print(render(result))
    print(foreign.line())
    save_json(args.json, {"benchmark": "soak", **result, "foreign_cpu": foreign.result()})
    return 0 if passed(result) else 1


if __name__ == "__main__":
    sys.exit(main())

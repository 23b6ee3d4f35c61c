"""SIGKILL gunicorn workers in the middle of concurrent uploads: the master replaces them, the requests
they held fail cleanly (the connection drops: no 5xx, no half-stored upload), and afterwards every row
has its files and every file has its row (once `check-storage --clean` has removed the orphans).

    python -m bench.kill_worker [--clients 8] [--duration 60] [--kills 3] [--json bench/results/kill.json]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from tools.checks import storage_report, total_rows
from tools.common import ForeignCpu, read_images, save_json, table, verdict
from tools.load import UPLOAD, report, run_load
from tools.server import Gunicorn


def kill_during_load(workdir: Path, clients: int, duration: float, kills: int, images: int, workers: int = 2) -> dict:
    server = Gunicorn(workdir, workers=workers)
    events: list[dict] = []
    try:
        server.start()
        server.wait_workers(workers)
        stop = threading.Event()

        def killer() -> None:
            origin = time.perf_counter()
            for number in range(kills):
                due = origin + duration * (number + 1) / (kills + 1)
                if stop.wait(max(0.0, due - time.perf_counter())):
                    return
                before = server.worker_pids()
                if not before:
                    continue
                victim = before[number % len(before)]
                os.kill(victim, signal.SIGKILL)
                killed_at = time.perf_counter()
                event = {"at_s": killed_at - origin, "pid": victim, "replaced_by": None, "replaced_after_s": None}
                deadline = killed_at + 120
                while time.perf_counter() < deadline and not stop.is_set():
                    fresh = [p for p in server.worker_pids() if p not in before]
                    if fresh and len(server.worker_pids()) >= workers:
                        event["replaced_by"] = fresh[0]
                        event["replaced_after_s"] = time.perf_counter() - killed_at
                        break
                    time.sleep(0.05)
                events.append(event)

        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        run = run_load([server.url], read_images(images), clients, 100_000, duration=duration, token=server.token)
        stop.set()
        thread.join(10)
        print(report(run, f"{clients} clients for {run.wall:.0f}s, {len(events)} worker(s) SIGKILLed"), flush=True)
        server.wait_workers(workers, timeout=120)
        healthy_after = server.wait_healthy(60) >= 0
        after_status, _, _ = server.upload(*read_images(1)[0])
        master_alive = server.process.poll() is None
        rows = total_rows(server)
        log = server.log_text()
        for event in events:  # how long the replacement took to load the model (its own log line)
            match = re.search(rf"\[{event['replaced_by']}\] \[INFO\] app: Loaded model \S+ from \S+ in ([\d.]+) s", log)
            event["model_loaded_after_s"] = float(match.group(1)) if match else None
        created = len(run.created_ids())
        failures = run.failures()
        before_clean = storage_report(server, clean=False, min_age=0)
        after_clean = storage_report(server, clean=True, min_age=0)
        final = storage_report(server, clean=False, min_age=0)
        return {
            "kills": events,
            "uploads": run.summary(UPLOAD),
            "statuses": dict(run.statuses()),
            "failures": [f"{r.status} {r.error[:120]}" for r in failures],
            "failures_5xx": sum(1 for r in failures if r.status >= 500),
            "created_201": created + (1 if after_status == 201 else 0),
            "rows": rows,
            "master_alive": master_alive,
            "healthy_after": healthy_after,
            "upload_after": after_status,
            "rows_missing_files": before_clean["rows_missing_files"],
            "orphans_found": len(before_clean["orphans"]),
            "orphans_removed": len(after_clean["removed"]),
            "consistent_after_clean": final["consistent"],
        }
    finally:
        server.stop()


def render(result: dict) -> str:
    failed = len(result["failures"])
    extra_rows = (result["rows"] or 0) - result["created_201"]
    replaced = [e for e in result["kills"] if e["replaced_by"]]
    checks = [
        [
            "workers SIGKILLed / replaced by the master",
            f"{len(result['kills'])} / {len(replaced)}",
            verdict(len(replaced) == len(result["kills"]) and result["master_alive"]),
        ],
        ["time to a replacement process", ", ".join(f"{e['replaced_after_s']:.2f}s" for e in replaced) or "–", ""],
        ["... which then loaded the model in", ", ".join(f"{e['model_loaded_after_s']}s" for e in replaced) or "–", ""],
        ["uploads answered 201", result["uploads"]["ok"], ""],
        ["in-flight uploads that failed (connection dropped)", failed, ""],
        ["... of which 5xx answers", result["failures_5xx"], verdict(result["failures_5xx"] == 0)],
        ["rows − 201 answers (committed, answer lost with the worker)", extra_rows, verdict(0 <= extra_rows <= failed)],
        ["rows without their files", len(result["rows_missing_files"]), verdict(not result["rows_missing_files"])],
        [
            "orphan files found / removed by check-storage --clean",
            f"{result['orphans_found']} / {result['orphans_removed']}",
            "",
        ],
        ["consistent after cleaning", result["consistent_after_clean"], verdict(result["consistent_after_clean"])],
        ["upload after the kills", result["upload_after"], verdict(result["upload_after"] == 201)],
    ]
    return table(["check", "measured", "verdict"], checks)


def passed(result: dict) -> bool:
    extra = (result["rows"] or 0) - result["created_201"]
    return (
        result["master_alive"]
        and result["failures_5xx"] == 0
        and 0 <= extra <= len(result["failures"])
        and not result["rows_missing_files"]
        and result["consistent_after_clean"]
        and result["upload_after"] == 201
        and all(e["replaced_by"] for e in result["kills"])
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    foreign = ForeignCpu()
    with tempfile.TemporaryDirectory(prefix="cxr-kill-") as tmp:
        result = kill_during_load(Path(tmp), args.clients, args.duration, args.kills, args.images)
    print(render(result))
    print(foreign.line())
    save_json(args.json, {"benchmark": "kill_worker", **result, "foreign_cpu": foreign.result()})
    return 0 if passed(result) else 1


if __name__ == "__main__":
    sys.exit(main())

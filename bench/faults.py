"""Faults against a running gunicorn: the upload folder full, the upload folder not writable, the database
unreachable, the model files removed after start. For each: what an upload and /healthz answer during
the fault, whether the log names the cause, and whether the service recovers by itself once the cause
is gone (no restart).

    python -m bench.faults [--database sqlite|postgres|auto] [--json bench/results/faults.json]

Disk-full and read-only use a small tmpfs mounted over the upload folder (root only; otherwise a file in
place of the folder stands in for "not writable" and disk-full is skipped). "Database unreachable" stops
the PostgreSQL server (with --database postgres, the default when PostgreSQL and psycopg are installed)
or, with SQLite, holds its write lock from another process for longer than the busy timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

from tools.checks import storage_report
from tools.common import MODEL_DIR, read_images, save_json, table, verdict
from tools.postgres import Postgres, PostgresUnavailable
from tools.server import Gunicorn

MODEL_FILES = ("cnn.keras", "ensemble.joblib", "ood.npz", "model_card.json")


def mount_tmpfs(path: Path, size: str) -> bool:
    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)], capture_output=True, text=True
    )
    return done.returncode == 0


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> Path:
    """Write a filler file until the file system is full."""
    filler = path / "filler.bin"
    chunk = b"\0" * 65536
    with open(filler, "wb") as handle:
        try:
            while True:
                handle.write(chunk)
                handle.flush()
        except OSError:
            pass
    return filler


class Probe:
    def __init__(self, server: Gunicorn, image: tuple[str, bytes]) -> None:
        self.server = server
        self.image = image

    def upload(self) -> tuple[int, str]:
        status, payload, error = self.server.upload(*self.image, timeout=60)
        text = payload.decode(errors="replace") if payload else error
        with suppress(ValueError):
            text = json.loads(text).get("error") or text
        return status, text[:300]

    def read(self) -> int:
        return self.server.request("GET", "/api/v1/predictions?per_page=5", timeout=30)[0]

    def health(self) -> tuple[int, dict]:
        return self.server.get_json("/healthz", timeout=30)

    def wait_upload(self, status: int, timeout: float = 90.0) -> tuple[int, str, float]:
        """Upload until the answer has `status` (recovery is not instant: a model reload takes seconds)."""
        started = time.perf_counter()
        answer = self.upload()
        while answer[0] != status and time.perf_counter() - started < timeout:
            time.sleep(0.5)
            answer = self.upload()
        return answer[0], answer[1], time.perf_counter() - started


def scenario(
    name: str,
    probe: Probe,
    log_mark: str,
    inject: Callable[[], Any],
    repair: Callable[[], Any],
    expect_health_503: bool = True,
) -> dict[str, Any]:
    log_start = len(probe.server.log_text())
    inject()
    try:
        during_status, during_text = probe.upload()
        read_status = probe.read()
        health_status, health_body = probe.health()
    finally:
        repair()
    after_status, _, recovery_s = probe.wait_upload(201)
    health_after, _ = probe.health()
    log = probe.server.log_text()[log_start:]
    result = {
        "fault": name,
        "upload_during": during_status,
        "message": during_text,
        "read_during": read_status,
        "health_during": health_status,
        "health_body": health_body,
        "cause_logged": log_mark.lower() in log.lower(),
        "upload_after": after_status,
        "recovery_s": recovery_s,
        "health_after": health_after,
    }
    result["ok"] = (
        during_status == 503
        and result["cause_logged"]
        and after_status == 201
        and health_after == 200
        and (health_status == 503 or not expect_health_503)
    )
    print(
        f"  {name}: during {during_status} ({during_text[:100]}), /healthz {health_status}; "
        f"after {after_status} in {recovery_s:.1f}s",
        flush=True,
    )
    return result


def run_faults(workdir: Path, database: str) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    image = read_images(1)[0]
    with ExitStack() as stack:
        model = workdir / "model"
        model.mkdir()
        for name in MODEL_FILES:
            shutil.copy2(MODEL_DIR / name, model / name)
        uploads = workdir / "uploads"
        mounted = mount_tmpfs(uploads, "16m")
        if mounted:
            stack.callback(umount, uploads)
        postgres = None
        if database in ("postgres", "auto"):
            try:
                postgres = stack.enter_context(Postgres(workdir))
            except PostgresUnavailable as exc:
                if database == "postgres":
                    raise
                print(f"  (SQLite instead of PostgreSQL: {exc})")
        env = {
            "CXR_MODEL_DIR": str(model),
            "CXR_MODEL_RETRY_SECONDS": "1",
            "CXR_STORAGE_MIN_FREE_BYTES": str(256 * 1024),
            "CXR_SQLITE_BUSY_TIMEOUT_MS": "2000",
        }
        server = Gunicorn(workdir, upload_folder=uploads, database_url=postgres.url if postgres else None, env=env)
        stack.callback(server.stop)
        server.start()
        probe = Probe(server, image)
        assert probe.upload()[0] == 201, "the server does not work before any fault"

        # 1. Disk full
        if mounted:
            filler: list[Path] = []
            results.append(
                scenario(
                    "upload folder full (ENOSPC)",
                    probe,
                    "No space left",
                    lambda: filler.append(fill(uploads)),
                    lambda: filler[0].unlink(),
                )
            )
        else:
            results.append({"fault": "upload folder full (ENOSPC)", "skipped": "needs root to mount a small tmpfs"})

        # 2. Not writable
        if mounted:

            def remount(mode):
                return subprocess.run(["mount", "-o", f"remount,{mode}", str(uploads)], check=True)

            results.append(
                scenario(
                    "upload folder read-only (EROFS)",
                    probe,
                    "Read-only file system",
                    lambda: remount("ro"),
                    lambda: remount("rw"),
                )
            )
        else:
            aside = workdir / "uploads.aside"

            def block() -> None:
                uploads.rename(aside)
                uploads.write_text("a file where the upload folder should be")

            def unblock() -> None:
                uploads.unlink()
                aside.rename(uploads)

            results.append(
                scenario("upload folder not writable (a file in its place)", probe, "Not a directory", block, unblock)
            )

        # 3. Database unreachable
        if postgres is not None:
            results.append(
                scenario(
                    "database unreachable (PostgreSQL stopped)",
                    probe,
                    "Database failure",
                    lambda: postgres.stop("fast"),
                    postgres.start,
                )
            )
        else:
            holder: list[sqlite3.Connection] = []

            def lock() -> None:
                connection = sqlite3.connect(server.database_url.removeprefix("sqlite:///"), isolation_level=None)
                connection.execute("BEGIN EXCLUSIVE")
                holder.append(connection)

            def unlock() -> None:
                holder[0].execute("ROLLBACK")
                holder[0].close()

            results.append(
                scenario(
                    "database unavailable (SQLite write lock held elsewhere)",
                    probe,
                    "Database failure",
                    lock,
                    unlock,
                    expect_health_503=False,
                )
            )

        # 4. Model files removed after start (then every worker restarted, as max_requests or a crash does)
        away = workdir / "model.away"

        def remove_model() -> None:
            model.rename(away)
            still = probe.upload()[0]
            print(f"  model files removed; a worker that has the model loaded still answers {still}")
            old = set(server.worker_pids())
            os.kill(server.pid, signal.SIGHUP)  # gunicorn: start new workers, stop the old ones
            deadline = time.perf_counter() + 60
            while time.perf_counter() < deadline and set(server.worker_pids()) & old:
                time.sleep(0.2)
            time.sleep(1.0)

        results.append(
            scenario(
                "model files removed after start (workers restarted)",
                probe,
                "model cannot be loaded",
                remove_model,
                lambda: away.rename(model),
            )
        )
        results[-1]["master_alive"] = server.process.poll() is None
        storage = storage_report(server, min_age=0)
        return {
            "results": results,
            "storage_consistent": storage["consistent"],
            "database": "postgresql" if postgres else "sqlite",
            "tmpfs": mounted,
        }


def render(out: dict[str, Any]) -> str:
    rows = []
    for r in out["results"]:
        if "skipped" in r:
            rows.append([r["fault"], "skipped", "", "", "", "", r["skipped"]])
            continue
        rows.append(
            [
                r["fault"],
                f"{r['upload_during']}: {r['message'][:75]}…",
                r["read_during"],
                r["health_during"],
                r["cause_logged"],
                f"{r['upload_after']} / {r['health_after']}",
                f"{r['recovery_s']:.1f}",
                verdict(r["ok"]),
            ]
        )
    text = table(
        [
            "fault",
            "upload during the fault",
            "history read",
            "/healthz",
            "cause in log",
            "upload / healthz after",
            "recovered in s",
            "verdict",
        ],
        rows,
    )
    return text + f"\nDatabase: {out['database']}; storage consistent afterwards: {out['storage_consistent']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", choices=("auto", "sqlite", "postgres"), default="auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cxr-faults-") as tmp:
        out = run_faults(Path(tmp), args.database)
    print(render(out))
    save_json(args.json, {"benchmark": "faults", **out})
    return 0 if all(r.get("ok", True) for r in out["results"]) and out["storage_consistent"] else 1


if __name__ == "__main__":
    sys.exit(main())

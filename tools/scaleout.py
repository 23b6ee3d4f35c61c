"""The scale-out rehearsal, shared by `python -m bench.scaleout` and tests/test_scaleout.py: two gunicorn
instances on different ports share one PostgreSQL database and one upload folder, as two hosts behind a
proxy would; the same concurrent load is spread over both. Afterwards the rows must equal the 201
answers, both instances list the same history, and each serves the images the other stored."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cxr.overlay import FILE_FORMATS
from tools.checks import all_ids, log_findings, storage_report, total_rows
from tools.load import UPLOAD, report, run_load
from tools.postgres import DATABASE, Postgres
from tools.server import Gunicorn, flask_command, provision, server_env


def scale_out(
    workdir: Path,
    pg: Postgres,
    images: list[tuple[str, bytes]],
    clients: int,
    duration: float,
    reads: float,
    workers: int,
    requests_per_client: int = 100_000,
    database: str = DATABASE,
) -> dict[str, Any]:
    """Run the rehearsal against the (empty) `database` of the running server `pg`; returns what `passed` judges."""
    shared_uploads = workdir / "shared-uploads"  # stands for an NFS/SMB mount or an object-store gateway
    shared_uploads.mkdir()
    url = pg.url_of(database)
    # The schema is created once, before the instances start (a deployment step, as in `make run`), and so
    # are the user and API token: accounts live in the shared database, so one token serves on both.
    env = server_env(workdir / "init", url, shared_uploads)
    init = flask_command(["init-db"], env)
    if init.returncode != 0:
        raise RuntimeError(f"init-db against PostgreSQL failed:\n{init.stderr[-2000:]}")
    account = provision(env)
    servers = [
        Gunicorn(
            workdir / f"host{n}",
            workers=workers,
            database_url=url,
            upload_folder=shared_uploads,
            init_db=False,
            env={"CXR_WORKERS": str(workers * 2)},
            account=account,
        )
        for n in (1, 2)
    ]
    try:
        with ThreadPoolExecutor(len(servers)) as pool:  # two hosts boot side by side
            list(pool.map(lambda server: server.start(), servers))
        urls = [s.url for s in servers]
        run = run_load(urls, images, clients, requests_per_client, duration=duration, reads=reads, token=account.token)
        print(report(run, f"{clients} clients over {len(urls)} instances for {run.wall:.0f}s, PostgreSQL"), flush=True)
        created = run.created_ids()
        by_target = {url: sum(1 for r in run.of(UPLOAD) if r.target == url and r.status == 201) for url in urls}
        histories = [all_ids(server) for server in servers]
        cross = []  # images stored through one instance, fetched from the other
        for prediction_id in created[:: max(1, len(created) // 20)]:
            for kind in ("image", "overlay", "thumbnail"):
                path = f"/predictions/{prediction_id}/{kind}.{FILE_FORMATS[kind]}"
                cross.append(servers[1].request("GET", path)[0])
                cross.append(servers[0].request("GET", path)[0])
        storage = storage_report(servers[0], min_age=0)
        return {
            "uploads": run.summary(UPLOAD),
            "statuses": dict(run.statuses()),
            "failures": [f"{r.op} {r.status} {r.error[:150]}" for r in run.failures()[:20]],
            "created_201": len(created),
            "created_by_instance": by_target,
            "rows_by_instance": [total_rows(server) for server in servers],
            "rows_in_postgres": int(pg.query("SELECT count(*) FROM predictions", database=database)),
            "same_history": histories[0] == histories[1],
            "history_matches_201s": sorted(histories[0]) == sorted(created),
            "cross_fetch_ok": sum(1 for s in cross if s == 200),
            "cross_fetch": len(cross),
            "storage_consistent": storage["consistent"],
            "log": [log_findings(s.log_text()) for s in servers],
        }
    finally:
        for server in servers:
            server.stop()


def passed(r: dict[str, Any]) -> bool:
    return (
        not r["failures"]
        and r["rows_in_postgres"] == r["created_201"]
        and r["same_history"]
        and r["history_matches_201s"]
        and r["cross_fetch_ok"] == r["cross_fetch"]
        and r["storage_consistent"]
    )

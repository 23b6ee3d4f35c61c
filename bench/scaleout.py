"""Scale-out: two gunicorn instances on different ports share one PostgreSQL database (started on
127.0.0.1 by this script) and one upload folder, as two hosts behind a proxy would. The same concurrent
load is spread over both; afterwards rows == 201 answers, both instances list the same history, and
each serves the images the other stored.

    python -m bench.scaleout [--clients 8] [--duration 90] [--install] [--json bench/results/scaleout.json]

Needs PostgreSQL's server binaries (`apt-get install -y postgresql`, or `--install` as root) and the
driver (`pip install "psycopg[binary]==3.3.9"`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.checks import all_ids, log_findings, storage_report, total_rows
from cxr.overlay import FILE_FORMATS
from tools.common import ForeignCpu, read_images, save_json, table, verdict
from tools.load import UPLOAD, report, run_load
from tools.postgres import Postgres
from tools.server import Gunicorn, flask_command, provision, server_env


def scale_out(
    workdir: Path, clients: int, duration: float, reads: float, images: int, workers: int, install: bool
) -> dict:
    shared_uploads = workdir / "shared-uploads"  # stands for an NFS/SMB mount or an object-store gateway
    shared_uploads.mkdir()
    with Postgres(workdir, auto_install=install) as pg:
        # The schema is created once, before the instances start (a deployment step, as in `make run`),
        # and so are the user and API token: accounts live in the shared database, so one token serves
        # on both instances.
        env = server_env(workdir / "init", pg.url, shared_uploads)
        init = flask_command(["init-db"], env)
        if init.returncode != 0:
            raise RuntimeError(f"init-db against PostgreSQL failed:\n{init.stderr[-2000:]}")
        account = provision(env)
        servers = [
            Gunicorn(
                workdir / f"host{n}",
                workers=workers,
                database_url=pg.url,
                upload_folder=shared_uploads,
                init_db=False,
                env={"CXR_WORKERS": str(workers * 2)},
                account=account,
            )
            for n in (1, 2)
        ]
        try:
            for server in servers:
                server.start()
            urls = [s.url for s in servers]
            run = run_load(
                urls, read_images(images), clients, 100_000, duration=duration, reads=reads, token=account.token
            )
            print(
                report(run, f"{clients} clients over {len(urls)} instances for {run.wall:.0f}s, PostgreSQL"), flush=True
            )
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
                "rows_in_postgres": int(pg.query("SELECT count(*) FROM predictions")),
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


def render(r: dict) -> str:
    per = ", ".join(str(v) for v in r["created_by_instance"].values())
    checks = [
        ["uploads answered 201 (per instance)", f"{r['created_201']} ({per})", ""],
        ["5xx or no answer", len(r["failures"]), verdict(not r["failures"])],
        [
            "rows in PostgreSQL == 201 answers",
            f"{r['rows_in_postgres']} / {r['created_201']}",
            verdict(r["rows_in_postgres"] == r["created_201"]),
        ],
        [
            "history total seen by each instance",
            " / ".join(map(str, r["rows_by_instance"])),
            verdict(len(set(r["rows_by_instance"])) == 1),
        ],
        ["both instances list the same ids, in the same order", r["same_history"], verdict(r["same_history"])],
        ["listed ids == ids of the 201 answers", r["history_matches_201s"], verdict(r["history_matches_201s"])],
        [
            "images fetched through either instance",
            f"{r['cross_fetch_ok']} / {r['cross_fetch']}",
            verdict(r["cross_fetch_ok"] == r["cross_fetch"]),
        ],
        ["every row has its files, every file its row", r["storage_consistent"], verdict(r["storage_consistent"])],
    ]
    return table(["check", "measured", "verdict"], checks)


def passed(r: dict) -> bool:
    return (
        not r["failures"]
        and r["rows_in_postgres"] == r["created_201"]
        and r["same_history"]
        and r["history_matches_201s"]
        and r["cross_fetch_ok"] == r["cross_fetch"]
        and r["storage_consistent"]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=90.0)
    parser.add_argument("--reads", type=float, default=0.3)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="workers per instance (2 instances on this machine)")
    parser.add_argument("--install", action="store_true", help="apt-get install postgresql when it is missing")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    foreign = ForeignCpu()
    with tempfile.TemporaryDirectory(prefix="cxr-scale-") as tmp:
        result = scale_out(Path(tmp), args.clients, args.duration, args.reads, args.images, args.workers, args.install)
    print(render(result))
    print(foreign.line())
    save_json(args.json, {"benchmark": "scaleout", **result, "foreign_cpu": foreign.result()})
    return 0 if passed(result) else 1


if __name__ == "__main__":
    sys.exit(main())

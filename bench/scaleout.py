"""Scale-out: two gunicorn instances on different ports share one PostgreSQL database (started on
127.0.0.1 by this script) and one upload folder, as two hosts behind a proxy would. The same concurrent
load is spread over both; afterwards rows == 201 answers, both instances list the same history, and
each serves the images the other stored (tools/scaleout.py; tests/test_scaleout.py runs it short).

    python -m bench.scaleout [--clients 8] [--duration 90] [--install] [--json bench/results/scaleout.json]

Needs PostgreSQL's server binaries (`apt-get install -y postgresql`, or `--install` as root) and the
driver (`pip install "psycopg[binary]==3.3.9"`).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tools.common import ForeignCpu, read_images, save_json, table, verdict
from tools.postgres import Postgres
from tools.scaleout import passed, scale_out


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
    with tempfile.TemporaryDirectory(prefix="cxr-scale-") as tmp, Postgres(auto_install=args.install) as pg:
        images = read_images(args.images)
        result = scale_out(Path(tmp), pg, images, args.clients, args.duration, args.reads, args.workers)
    print(render(result))
    print(foreign.line())
    save_json(args.json, {"benchmark": "scaleout", **result, "foreign_cpu": foreign.result()})
    return 0 if passed(result) else 1


if __name__ == "__main__":
    sys.exit(main())

"""After a load or fault run: count the rows, list the ids, run `flask --app app check-storage`, scan the log."""

from __future__ import annotations

import json
import re
from typing import Any

from tools.server import Gunicorn, flask_command


def total_rows(server: Gunicorn) -> int | None:
    status, body = server.get_json("/api/v1/predictions?per_page=1")
    return int(body["total"]) if status == 200 else None


def all_ids(server: Gunicorn) -> list[int]:
    """Every stored prediction id, newest first, by paging through the API."""
    ids, page = [], 1
    while True:
        status, body = server.get_json(f"/api/v1/predictions?per_page=100&page={page}")
        if status != 200:
            raise RuntimeError(f"history page {page} answered {status}: {body}")
        ids += [item["id"] for item in body["items"]]
        if not body.get("next"):
            return ids
        page += 1


def storage_report(server: Gunicorn, clean: bool = False, min_age: float = 0.0) -> dict[str, Any]:
    """`flask --app app check-storage --json` against the server's database and upload folder."""
    args = ["check-storage", "--json", "--min-age", str(min_age)] + (["--clean"] if clean else [])
    done = flask_command(args, server.env)
    try:
        start = done.stdout.index("{")
        report = json.loads(done.stdout[start:])
    except ValueError:
        raise RuntimeError(
            f"check-storage printed no report (exit {done.returncode}):\n{done.stderr[-3000:]}"
        ) from None
    report["exit_code"] = done.returncode
    return report


def log_findings(text: str) -> dict[str, int]:
    """Counts of what must not appear in a gunicorn log after a clean run."""
    access_5xx = len(re.findall(r'" 5\d\d ', text))
    return {
        "tracebacks": text.count("Traceback (most recent call last)"),
        "database_locked": text.lower().count("database is locked"),
        "access_5xx": access_5xx,
        "worker_timeouts": text.count("WORKER TIMEOUT"),
    }

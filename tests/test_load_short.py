"""Short load tests against a real gunicorn (the README's gunicorn.conf.py, SQLite) on loopback: concurrent
uploads and history reads, and a worker SIGKILLed in the middle of uploads, each request with the API
token of a clinician provisioned by `Gunicorn.start()`. The long versions are `python -m bench.soak`,
`python -m bench.kill_worker` and `python -m bench.serving`."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from tools.load import UPLOAD, run_load
from tools.server import Gunicorn

pytestmark = pytest.mark.slow  # a two-worker gunicorn and its load
WORKERS = 2


@pytest.fixture(scope="module")
def images(chest_png):
    from tests.helpers import SHARED_IMAGES

    shared = sorted(SHARED_IMAGES.glob("*.png"))[::300][:12] if SHARED_IMAGES.is_dir() else []
    return [("chest.png", chest_png)] + [(p.name, p.read_bytes()) for p in shared]


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir):
    server = Gunicorn(
        tmp_path_factory.mktemp("gunicorn"), workers=WORKERS, init_db=False, env={"CXR_MODEL_DIR": str(model_dir)}
    )
    server.start()
    server.wait_workers(WORKERS)
    yield server
    server.stop()


@pytest.fixture
def storage(server, tmp_path, bundle):
    """`check_storage` on the server's database and upload folder (in this process: no second TF start)."""
    from webapp import create_app
    from webapp.storage_check import check_storage

    app = create_app(
        {
            "TESTING": True,
            "SECRET_KEY": "t",
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "SQLALCHEMY_DATABASE_URI": server.database_url,
            "UPLOAD_FOLDER": str(server.upload_folder),
            "MODEL_BUNDLE": bundle,
        }
    )

    def check(clean: bool = False):
        with app.app_context():
            return check_storage(clean=clean, min_age=0)

    return check


def rows(server) -> int:
    status, body = server.get_json("/api/v1/predictions?per_page=1")
    assert status == 200, body
    return body["total"]


def test_concurrent_uploads_and_reads(server, images, storage):
    before = rows(server)
    run = run_load([server.url], images, clients=8, requests_per_client=6, duration=50, reads=0.4, token=server.token)
    assert not run.failures(), [(r.op, r.status, r.error[:200]) for r in run.failures()]  # 401/302 included
    assert not run.locked()
    assert {r.status for r in run.of(UPLOAD)} <= {201, 422}, run.statuses(UPLOAD)
    reads = [r for r in run.results if r.op != UPLOAD]  # list, detail and PNG reads, with the token
    assert reads and all(r.ok for r in reads), [(r.op, r.status, r.error[:200]) for r in reads if not r.ok]
    assert run.created_ids() and rows(server) - before == len(run.created_ids())
    report = storage()
    assert report.consistent, report.lines()
    log = server.log_text().lower()
    assert "database is locked" not in log and "traceback" not in log


def test_sigkill_worker_mid_upload(server, images, storage):
    before = rows(server)
    old_workers = server.worker_pids()
    killed: list[int] = []
    stored: list[int] = []
    lock = threading.Lock()

    def kill_once(result) -> None:  # after the third stored upload, with the other clients' uploads in flight
        with lock:
            if killed or result.op != UPLOAD or result.status != 201:
                return
            stored.append(1)
            if len(stored) == 3:
                victim = server.worker_pids()[0]
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

    run = run_load(
        [server.url], images, clients=6, requests_per_client=8, duration=50, on_step=kill_once, token=server.token
    )
    assert killed, "no worker was killed"
    workers = server.wait_workers(WORKERS, timeout=90, replacing=set(old_workers))
    assert set(workers) - set(old_workers) and server.process.poll() is None
    failures = run.failures()
    # The requests the dead worker held fail as dropped connections, never as a 5xx answer or a bad 201.
    assert all(r.status == 0 for r in failures), [(r.status, r.error[:200]) for r in failures]
    assert {r.status for r in run.of(UPLOAD)} <= {0, 201, 422}
    created = len(run.created_ids())
    extra = rows(server) - before - created  # committed, but the answer died with the worker
    assert 0 <= extra <= len(failures)
    report = storage()
    assert not report.rows_missing_files, report.lines()
    cleaned = storage(clean=True)
    assert len(cleaned.removed) == len(report.orphans)
    assert storage().consistent
    assert server.upload(*images[0])[0] == 201

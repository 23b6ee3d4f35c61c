"""Faults: a full or unwritable upload folder, an unreachable database, a missing model. Each is answered
with a clear 503 (JSON for the API, the error page for forms), logged with its cause, and clears by itself
once the cause is gone. Also `flask check-storage`, and gunicorn surviving a model removed after start.
The long versions against a real gunicorn are `python -m bench.faults` and `python -m bench.kill_worker`."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import pytest

from cxr.bundle import CARD_FILE, HASHED_FILES
from tests.accounts import clinician_client, signed_in
from webapp.db import Prediction, db
from webapp.model_service import model_service
from webapp.storage_check import check_storage

MODEL_FILES = (*HASHED_FILES, CARD_FILE)  # what a model directory holds (no lung crop in the shipped one)


def post(client, data: bytes, name: str = "chest.png"):
    """Upload `data`; force=1 analyses and stores it even when the same film was stored before."""
    return client.post("/api/v1/predictions?force=1", data={"file": (io.BytesIO(data), name)})


def stored(app) -> tuple[int, list[Path]]:
    with app.app_context():
        rows = db.session.scalar(db.select(db.func.count(Prediction.id)))
    folder = Path(app.config["UPLOAD_FOLDER"])
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.is_dir() else []
    return rows, files


def assert_503(response, *words: str) -> str:
    assert response.status_code == 503, response.get_data(as_text=True)[:500]
    assert response.headers.get("Retry-After")
    message = response.get_json()["error"] if response.is_json else response.get_data(as_text=True)
    for word in words:
        assert word.lower() in message.lower(), message
    return message


# -- storage ------------------------------------------------------------------------------------------


def test_disk_full_answers_503_stores_nothing_and_recovers(app, client, chest_png, monkeypatch, caplog):
    write_bytes = Path.write_bytes

    def full_disk(self, data):
        if self.name.endswith("-heat.png"):  # the second of three files: the first must be removed again
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return write_bytes(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with caplog.at_level(logging.ERROR):
        assert_503(post(client, chest_png), "storage is full", "nothing was stored")
    assert "No space left on device" in caplog.text
    assert stored(app) == (0, [])
    monkeypatch.undo()
    assert post(client, chest_png).status_code == 201
    assert stored(app)[0] == 1


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a small tmpfs needs root")
def test_real_full_tmpfs(make_app, chest_png, tmp_path):
    folder = tmp_path / "small"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)]).returncode:
        pytest.skip("mount is not permitted here")
    try:
        app = make_app(UPLOAD_FOLDER=str(folder), STORAGE_MIN_FREE_BYTES=64 * 1024)
        client = clinician_client(app)
        with open(folder / "filler", "wb") as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass
        assert_503(post(client, chest_png), "full")
        health = client.get("/healthz")
        assert health.status_code == 503 and health.get_json()["storage"]["ok"] is False
        assert stored(app) == (0, [folder / "filler"])
        (folder / "filler").unlink()
        assert post(client, chest_png).status_code == 201
        assert client.get("/healthz").status_code == 200
    finally:
        subprocess.run(["umount", "-l", str(folder)])


def test_unwritable_upload_folder_answers_503_on_api_and_form(make_app, chest_png, tmp_path, caplog):
    blocked = tmp_path / "uploads"
    blocked.write_text("a file where the folder should be")  # refuses writes even to root (ENOTDIR)
    app = make_app(UPLOAD_FOLDER=str(blocked))
    client = clinician_client(app)
    with caplog.at_level(logging.ERROR):
        assert_503(post(client, chest_png), "cannot write")
        page = client.post("/", data={"files": [(io.BytesIO(chest_png), "a.png")]})
    assert page.status_code == 503 and b"cannot write" in page.data and b"<html" in page.data.lower()
    assert "Storage failure" in caplog.text
    health = client.get("/healthz")
    assert health.status_code == 503 and health.get_json()["storage"]["writable"] is False
    blocked.unlink()
    assert post(client, chest_png).status_code == 201
    assert client.get("/healthz").status_code == 200


# -- database -----------------------------------------------------------------------------------------


def test_database_locked_elsewhere_answers_503_and_recovers(make_app, chest_png, tmp_path, caplog):
    app = make_app(SQLITE_BUSY_TIMEOUT_MS=200)
    client = clinician_client(app)
    assert post(client, chest_png).status_code == 201
    holder = sqlite3.connect(tmp_path / "test.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # a backup or a migration holding the write lock
    try:
        with caplog.at_level(logging.ERROR):
            assert_503(post(client, chest_png), "database", "nothing was saved")
        assert "Database failure" in caplog.text and "database is locked" in caplog.text
        # Reads are recorded in the audit trail, which needs the write lock: none goes unrecorded.
        assert_503(client.get("/api/v1/predictions"), "database")
        assert client.get("/healthz").status_code == 200  # WAL: what records nothing still reads
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert stored(app)[0] == 1 and len(stored(app)[1]) == 3  # the failed upload left no file behind
    assert post(client, chest_png).status_code == 201


class Answer(NamedTuple):
    # Of the database throughout the request: "up", "down", "back" (started again); else "changing".
    phase: str
    request: str  # "upload" or "read"
    status: int
    retry_after: str | None
    body: str


@pytest.mark.databases("postgres")
def test_postgres_stopped_and_restarted_under_load(app, chest_png, postgres_server, caplog):
    """Clients upload and read on while the PostgreSQL server stops as if it crashed (no shutdown) and
    starts again: meanwhile every answer is a 503 with Retry-After, afterwards they succeed again without a
    restart of the app (pool_pre_ping replaces the dead connections), and every upload answered 201 is
    stored with its files."""
    clients = [clinician_client(app)] + [signed_in(app, "clinician") for _ in range(2)]
    answers: list[Answer] = []
    phase, done = ["up"], threading.Event()

    def uploads(in_phase: str, status: int) -> int:
        return sum(1 for a in list(answers) if (a.phase, a.request, a.status) == (in_phase, "upload", status))

    def keep_going(client) -> None:
        send = {"upload": lambda: post(client, chest_png), "read": lambda: client.get("/api/v1/predictions")}
        while not done.is_set():
            for request, call in send.items():
                began = phase[0]
                response = call()
                during = began if phase[0] == began else "changing"  # in flight at the stop or the start
                answers.append(
                    Answer(during, request, response.status_code, response.headers.get("Retry-After"), response.text)
                )

    def wait_for(condition, seconds: float = 90) -> None:
        deadline = time.perf_counter() + seconds
        while not condition():
            assert time.perf_counter() < deadline, answers[-5:]
            time.sleep(0.05)

    running = True
    with ThreadPoolExecutor(max_workers=len(clients)) as pool, caplog.at_level(logging.ERROR):
        loads = [pool.submit(keep_going, client) for client in clients]
        try:
            wait_for(lambda: uploads("up", 201) >= 3)
            phase[0] = "stopping"
            postgres_server.stop("immediate")
            running, phase[0] = False, "down"
            wait_for(lambda: uploads("down", 503) >= 3)
            health = clients[0].get("/healthz")
            assert health.status_code == 503 and health.get_json()["database"]["reachable"] is False
            phase[0] = "starting"
            postgres_server.start()
            running, phase[0] = True, "back"
            wait_for(lambda: uploads("back", 201) >= 3)
        finally:
            done.set()
            if not running:
                postgres_server.start()
        for load in loads:
            load.result()
    assert "Database failure" in caplog.text
    for served in ("up", "back"):  # the database was up throughout these requests
        assert {a.status for a in answers if a.phase == served} <= {200, 201}, served
    assert {a.status for a in answers} <= {200, 201, 503}, {a.status for a in answers}  # never a 500
    refused = [a for a in answers if a.status == 503]
    assert {a.status for a in answers if a.phase == "down"} == {503}
    assert {a.request for a in refused if a.phase == "down"} == {"upload", "read"}
    assert all(a.retry_after and "database" in a.body.lower() for a in refused), refused[:3]
    created = [json.loads(a.body)["id"] for a in answers if a.status == 201]
    with app.app_context():
        stored = set(db.session.scalars(db.select(Prediction.id)))
        report = check_storage(min_age=0)
    assert len(set(created)) == len(created) and set(created) <= stored  # nothing acknowledged is lost
    assert not report.orphans and not set(report.rows_missing_files) & set(created), report.lines()
    assert clients[0].get("/healthz").status_code == 200


# -- model --------------------------------------------------------------------------------------------


def test_missing_model_answers_503_until_restored(make_app, model_dir, chest_png, tmp_path, caplog):
    empty = tmp_path / "model"
    empty.mkdir()
    app = make_app(MODEL_BUNDLE=None, MODEL_DIR=str(empty), STRICT_STARTUP=False, MODEL_RETRY_SECONDS=0)
    with caplog.at_level(logging.ERROR):
        assert model_service.preload(app) is None  # a gunicorn worker starts anyway
    assert "model cannot be loaded" in caplog.text
    client = clinician_client(app)
    health = client.get("/healthz")
    assert health.status_code == 503 and "lacks cnn.keras" in health.get_json()["model"]["error"]
    assert_503(post(client, chest_png), "model is not available", "lacks cnn.keras")
    assert_503(client.get("/api/v1/predictions"), "model")
    for name in MODEL_FILES:
        shutil.copy2(model_dir / name, empty / name)
    assert post(client, chest_png).status_code == 201
    assert client.get("/healthz").status_code == 200


def test_model_retry_is_rate_limited(make_app, tmp_path, chest_png, monkeypatch):
    from webapp import model_service as service

    attempts = []
    real = service.ModelBundle

    def counting(directory):
        attempts.append(directory)
        return real(directory)

    monkeypatch.setattr(service, "ModelBundle", counting)
    app = make_app(MODEL_BUNDLE=None, MODEL_DIR=str(tmp_path / "none"), STRICT_STARTUP=False, MODEL_RETRY_SECONDS=60)
    client = clinician_client(app)
    for _ in range(3):
        assert post(client, chest_png).status_code == 503
    assert len(attempts) == 1


# -- check-storage ------------------------------------------------------------------------------------


def test_check_storage_reports_and_cleans(app, upload, runner):
    first = upload()
    upload()
    folder = Path(app.config["UPLOAD_FOLDER"])
    result = runner.invoke(args=["check-storage"])
    assert result.exit_code == 0 and "Consistent" in result.output, result.output
    old = folder / "2020" / "01" / "deadbeef-overlay.png"  # what a worker killed before its commit leaves
    old.parent.mkdir(parents=True)
    old.write_bytes(b"png")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    young = folder / "2020" / "01" / "cafe.png"
    young.write_bytes(b"png")
    with app.app_context():
        row = db.session.get(Prediction, first["id"])
        (folder / row.thumbnail_path).unlink()
    result = runner.invoke(args=["check-storage", "--json"])
    report = json.loads(result.output)
    assert result.exit_code == 1
    assert report["orphans"] == ["2020/01/deadbeef-overlay.png"] and report["young_orphans"] == ["2020/01/cafe.png"]
    assert list(report["rows_missing_files"]) == [str(first["id"])]
    result = runner.invoke(args=["check-storage", "--clean"])
    assert result.exit_code == 1 and "removed" in result.output and f"prediction {first['id']}" in result.output
    assert not old.exists() and young.exists()  # young files may belong to an upload in flight
    result = runner.invoke(args=["check-storage", "--clean", "--min-age", "0"])
    assert not young.exists() and "lack files" in result.output and result.exit_code == 1
    with app.app_context():
        db.session.delete(db.session.get(Prediction, first["id"]))
        db.session.commit()
    for leftover in (folder / row.image_path, folder / row.heatmap_path):
        leftover.unlink()
    result = runner.invoke(args=["check-storage"])
    assert result.exit_code == 0, result.output


# -- gunicorn -----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("model_dir", ["nowhere", "empty"])
def test_gunicorn_refuses_to_start_on_a_broken_model_directory(tmp_path, model_dir):
    from tools.server import Gunicorn

    if model_dir == "empty":
        (tmp_path / model_dir).mkdir()
    server = Gunicorn(
        tmp_path,
        workers=1,
        init_db=False,
        provision=False,  # never serves: no account needed
        env={"CXR_MODEL_DIR": str(tmp_path / model_dir)},
    )
    try:
        with pytest.raises(RuntimeError, match="gunicorn exited"):
            server.start(timeout=120)
    finally:
        server.stop()
    log = server.log_text()
    assert "lacks cnn.keras" in log and "python -m training.train" in log
    assert "Booting worker" not in log  # the master checks the files before any worker loads TensorFlow


@pytest.mark.slow
def test_gunicorn_survives_model_removed_after_start(tmp_path, model_dir, chest_png):
    from tools.server import Gunicorn

    model = tmp_path / "model"
    model.mkdir()
    for name in MODEL_FILES:
        shutil.copy2(model_dir / name, model / name)
    server = Gunicorn(
        tmp_path, workers=1, init_db=False, env={"CXR_MODEL_DIR": str(model), "CXR_MODEL_RETRY_SECONDS": "0.5"}
    )
    try:
        server.start()
        assert server.upload("a.png", chest_png)[0] == 201
        model.rename(tmp_path / "away")
        assert server.upload("a.png", chest_png)[0] == 201  # the loaded model stays in memory
        old = set(server.worker_pids())
        os.kill(server.pid, signal.SIGHUP)  # every worker restarts, as after max_requests or a crash
        deadline = time.perf_counter() + 60
        while set(server.worker_pids()) & old or not server.worker_pids():
            assert time.perf_counter() < deadline, server.log_tail()
            time.sleep(0.2)
        status, body, _ = server.upload("a.png", chest_png)
        while status == 0 and time.perf_counter() < deadline:  # the new worker is still importing
            time.sleep(0.2)
            status, body, _ = server.upload("a.png", chest_png)
        assert status == 503 and "lacks cnn.keras" in json.loads(body)["error"]
        assert server.get_json("/healthz")[0] == 503
        assert server.process.poll() is None, "the master must keep running"
        (tmp_path / "away").rename(model)
        deadline = time.perf_counter() + 60
        while (status := server.upload("a.png", chest_png)[0]) != 201 and time.perf_counter() < deadline:
            time.sleep(0.5)
        assert status == 201 and server.get_json("/healthz")[0] == 200
        assert "model cannot be loaded" in server.log_text()
    finally:
        server.stop()

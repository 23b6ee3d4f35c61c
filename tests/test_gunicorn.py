"""Smoke test of the production server: `gunicorn wsgi:app` with the project's gunicorn.conf.py,
two workers on a loopback port, concurrent uploads through the API, then a clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GUNICORN = Path(sys.executable).with_name("gunicorn")
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(tmp_path: Path, model_dir: Path, port: int, workers: int = 2) -> tuple[subprocess.Popen, Path]:
    env = {
        **os.environ,
        "CXR_INSTANCE_PATH": str(tmp_path / "instance"),
        "CXR_UPLOAD_FOLDER": str(tmp_path / "uploads"),
        "CXR_MODEL_DIR": str(model_dir),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gunicorn.sqlite'}",
        "SECRET_KEY": "smoke-test",
    }
    log = tmp_path / "gunicorn.log"
    command = [str(GUNICORN), "wsgi:app", "--config", "gunicorn.conf.py",
               "--bind", f"127.0.0.1:{port}", "--workers", str(workers)]  # fmt: skip
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    return process, log


def _request(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data, headers=headers or {}), timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _multipart(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_gunicorn_serves_uploads_from_two_workers(tmp_path, model_dir, chest_png):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    process, log = _start(tmp_path, model_dir, port)
    try:
        deadline = time.monotonic() + 240  # both workers import TensorFlow and load the model
        while log.read_text(errors="replace").count("Loaded model") < 2:
            assert process.poll() is None, log.read_text(errors="replace")
            assert time.monotonic() < deadline, "gunicorn workers did not start in time:\n" + log.read_text()
            time.sleep(0.5)
        status, body = _request(f"{base}/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"

        def post(index: int) -> tuple[int, dict]:
            body, headers = _multipart({"reference": f"GUNI-{index}"}, f"g{index}.png", chest_png)
            status, answer = _request(f"{base}/api/v1/predictions", body, headers)
            return status, json.loads(answer)

        with ThreadPoolExecutor(max_workers=4) as pool:  # concurrent writers on the SQLite database
            results = list(pool.map(post, range(4)))
        assert [status for status, _ in results] == [201] * 4, results
        for _, created in results:
            status, body = _request(f"{base}/api/v1/predictions/{created['id']}")
            assert status == 200 and json.loads(body)["reference"] == created["reference"]
            status, image = _request(created["overlay_url"])
            assert status == 200 and image.startswith(b"\x89PNG")
        status, body = _request(f"{base}/api/v1/predictions?q=GUNI")
        assert json.loads(body)["total"] == 4
        status, page = _request(f"{base}/history")
        assert status == 200 and b"GUNI-3" in page
    finally:
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=60)
    assert returncode == 0, log.read_text()
    assert '"POST /api/v1/predictions HTTP/1.1" 201' in log.read_text()


def test_gunicorn_refuses_to_start_without_a_model(tmp_path):
    empty = tmp_path / "no-model"
    empty.mkdir()
    process, log = _start(tmp_path, empty, _free_port(), workers=1)
    try:
        returncode = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    output = log.read_text()
    assert returncode != 0
    assert "lacks cnn.keras" in output and "python -m training.train" in output

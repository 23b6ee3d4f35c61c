"""Smoke test of the production server: `gunicorn wsgi:app` with the project's gunicorn.conf.py,
two workers on a loopback port, concurrent uploads through the API with an API token, the history page
for a signed-in user, anonymous and bad-token requests refused, then a clean stop.

The tests share one server (started once: both workers load TensorFlow), in any order; the fixture's
teardown stops it and fails the last of them if the stop is not clean."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tools.load import UPLOAD_PATH, exchange, request, sign_in, upload
from tools.server import Gunicorn

pytestmark = pytest.mark.slow
WORKERS = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir):
    """Gunicorn with two workers, both with the model loaded, and a provisioned clinician with a token;
    stopped cleanly at the end (exit status 0, no traceback in its log)."""
    server = Gunicorn(
        tmp_path_factory.mktemp("gunicorn"), workers=WORKERS, init_db=False, env={"CXR_MODEL_DIR": str(model_dir)}
    )
    try:
        server.start()
        deadline = time.monotonic() + 240  # both workers import TensorFlow and load the model
        while server.log_text().count("Loaded model") < WORKERS:
            assert server.process.poll() is None, server.log_tail()
            assert time.monotonic() < deadline, "gunicorn workers did not start in time:\n" + server.log_tail()
            time.sleep(0.5)
        yield server
    finally:
        status = server.stop()
    assert status == 0, server.log_tail()
    assert "Traceback" not in server.log_text(), server.log_tail()


def test_gunicorn_serves_uploads_from_two_workers(server, chest_png):
    status, health = server.get_json("/healthz")
    assert status == 200 and health["status"] == "ok"

    def post(index: int) -> tuple[int, dict]:
        status, answer, error = server.upload(f"g{index}.png", chest_png, fields={"reference": f"GUNI-{index}"})
        return status, json.loads(answer) if answer else {"error": error}

    with ThreadPoolExecutor(max_workers=4) as pool:  # concurrent writers on the SQLite database
        results = list(pool.map(post, range(4)))
    assert [status for status, _ in results] == [201] * 4, results
    for _, created in results:
        status, body = server.get_json(f"/api/v1/predictions/{created['id']}")
        assert status == 200 and body["reference"] == created["reference"]
        # An API client holds only its token: the image URLs of the API's answer must work with it.
        status, image, _ = server.request("GET", created["overlay_url"].removeprefix(server.url))
        assert status == 200 and image.startswith(b"\xff\xd8"), (status, image[:300])
    status, body = server.get_json("/api/v1/predictions?q=GUNI")
    assert status == 200 and body["total"] == 4
    # The HTML pages take a signed-in session (the sign-in form, its CSRF token, the session cookie),
    # valid on either worker.
    session = sign_in(server.url, server.account.username, server.account.password)
    for _ in range(2 * WORKERS):
        status, page, _ = request(server.url, "GET", "/history", headers=session)
        assert status == 200 and b"GUNI-3" in page
    assert f'"POST {UPLOAD_PATH} HTTP/1.1" 201' in server.log_text()


def test_gunicorn_refuses_anonymous_and_bad_tokens(server, chest_png):
    before = server.get_json("/api/v1/predictions")[1]["total"]
    for token in (None, "cxr_not-a-token", server.token + "x"):
        status, body, _ = request(server.url, "GET", "/api/v1/predictions", token=token)
        assert status == 401 and json.loads(body)["error"], (token, status, body[:300])
        status, body, _ = upload(server.url, "anon.png", chest_png, token=token)
        assert status == 401 and json.loads(body)["error"], (token, status, body[:300])
    status, body, _ = request(server.url, "GET", "/api/v1/predictions", headers={"Authorization": "Basic eDp5"})
    assert status == 401 and json.loads(body)["error"], body[:300]
    assert server.get_json("/api/v1/predictions")[1]["total"] == before  # the refused uploads stored nothing
    assert f'"POST {UPLOAD_PATH} HTTP/1.1" 401' in server.log_text()
    status, _, _, headers = exchange(server.url, "GET", "/history")  # a page: to the sign-in form
    assert status == 302 and "/login?next=" in headers["Location"], (status, dict(headers or {}))
    with pytest.raises(RuntimeError, match="answered 401"):
        sign_in(server.url, server.account.username, "a wrong password")
    assert request(server.url, "GET", "/healthz")[0] == 200  # the load balancer's check stays public


def test_gunicorn_leaves_forwarding_headers_to_the_app(server):
    """A client on loopback claiming HTTPS is not believed (CXR_TRUSTED_PROXIES is 0): no HSTS, no Secure."""
    status, _, _, headers = exchange(server.url, "GET", "/login", headers={"X-Forwarded-Proto": "https"})
    assert status == 200
    assert "Strict-Transport-Security" not in headers
    assert "Secure" not in (headers.get("Set-Cookie") or "")


def test_slow_clients_cannot_take_every_request_slot(server):
    """Clients that dribble their headers or their body (a byte at a time, without end) do not stop the
    health check or a sign-in from answering."""
    stop = threading.Event()
    starts = (
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100000\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
    )

    def dribble(start: bytes) -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(start)
            while not stop.wait(0.3):
                sock.sendall(b"u" if start.startswith(b"POST") else b"X-Slow: 1\r\n")

    clients = [threading.Thread(target=dribble, args=(starts[n % 2],), daemon=True) for n in range(12)]
    try:
        for client in clients:
            client.start()
        time.sleep(1.5)  # every slow request has been accepted by now
        started = time.perf_counter()
        status, body = server.get_json("/healthz")
        assert status == 200 and body["status"] == "ok"
        sign_in(server.url, server.account.username, server.account.password)
        assert time.perf_counter() - started < 5.0
    finally:
        stop.set()
        for client in clients:
            client.join(5)


def test_gunicorn_refuses_to_start_without_a_model(tmp_path):
    empty = tmp_path / "no-model"
    empty.mkdir()
    server = Gunicorn(tmp_path, workers=1, init_db=False, provision=False, env={"CXR_MODEL_DIR": str(empty)})
    try:
        with pytest.raises(RuntimeError, match="gunicorn exited"):
            server.start(timeout=120)
    finally:
        server.stop()
    output = server.log_text()
    assert "lacks cnn.keras" in output and "python -m training.train" in output

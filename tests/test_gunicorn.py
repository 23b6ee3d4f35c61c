"""Smoke test of the production server: `gunicorn wsgi:app` with the project's gunicorn.conf.py,
two workers on a loopback port, concurrent uploads through the API with an API token, the history page
for a signed-in user, anonymous and bad-token requests refused, then a clean stop.

The tests share one server (started once: both workers load TensorFlow), in any order; the fixture's
teardown stops it and fails the last of them if the stop is not clean."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.dicom_bombs import (
    deflated_behind_undefined_meta,
    j2k_larger_than_its_header,
    jpeg_larger_than_its_header,
    more_frames_in_the_offset_table,
    rle_longer_than_its_frame,
)
from tools.load import UPLOAD_PATH, exchange, multipart, request, sign_in, sign_in_attempt, upload
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


def test_concurrent_retries_with_one_idempotency_key_store_one_film(server, chest_png):
    """A client that lost its answer sends the upload again, here twice at once (both workers analyse
    it): one row is stored and every answer names it."""
    before = server.get_json("/api/v1/predictions")[1]["total"]
    body, content_type = multipart("retry.png", chest_png)
    headers = {"Content-Type": content_type, "Idempotency-Key": "gunicorn-retry-7f3a"}

    def post(_: int) -> tuple[int, dict]:
        # force=1: the module's server has seen this film before; only the key may make retries one upload.
        status, answer, error = request(server.url, "POST", UPLOAD_PATH, body, headers, 120, server.token)
        return status, json.loads(answer) if answer else {"error": error}

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(post, range(3)))
    assert sorted(status for status, _ in results) == [200, 200, 201], results
    assert len({answer["id"] for _, answer in results}) == 1, results
    assert server.get_json("/api/v1/predictions")[1]["total"] == before + 1


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
        deadline = time.monotonic() + 60  # a bound on waiting, not on the server's speed
        while server.accepted_connections() < len(clients):  # each slow request holds its connection now
            assert time.monotonic() < deadline, f"{server.accepted_connections()} slow clients accepted"
            time.sleep(0.05)
        # Each answers within its request's own timeout: with every slot taken, neither would answer at all.
        status, body = server.get_json("/healthz", timeout=30)
        assert status == 200 and body["status"] == "ok"
        assert sign_in(server.url, server.account.username, server.account.password, timeout=30)
        assert server.accepted_connections() >= len(clients)  # the slow clients were still connected
    finally:
        stop.set()
        for client in clients:
            client.join(5)


def test_slow_authenticated_uploads_do_not_starve_the_server(server):
    """Thirty signed-in (token) uploads that trickle a 1 MB body a byte at a time hold neither every thread
    nor the database pool: /healthz and a sign-in still answer at once, and the trickles are cut off (408)."""
    stop = threading.Event()
    start = (
        f"POST /api/v1/predictions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {server.token}\r\n"
        "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1048576\r\n\r\n"
        '--x\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
    ).encode()
    answers: list[bytes] = []

    def trickle() -> None:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(start)
            try:
                while not stop.wait(0.5):
                    sock.sendall(b"u")
            except OSError:  # cut off by the server
                pass
            with contextlib.suppress(OSError):
                answers.append(sock.recv(200))

    clients = [threading.Thread(target=trickle, daemon=True) for _ in range(30)]
    try:
        for client in clients:
            client.start()
        deadline = time.monotonic() + 60  # a bound on waiting, not on the server's speed
        while server.accepted_connections() < len(clients):  # every trickle holds its request now
            assert time.monotonic() < deadline, f"{server.accepted_connections()} trickles accepted"
            time.sleep(0.05)
        # Each answers within its own request timeout: with every thread or the pool held, neither would.
        status, body = server.get_json("/healthz", timeout=10)
        assert status == 200 and body["status"] == "ok"
        assert sign_in(server.url, server.account.username, server.account.password, timeout=10)
        deadline = time.monotonic() + 30
        while server.log_text().count('"POST /api/v1/predictions HTTP/1.1" 408') < len(clients):
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.5)
    finally:
        stop.set()
        for client in clients:
            client.join(10)
    assert "QueuePool" not in server.log_text()
    assert all(answer.startswith(b"HTTP/1.1 408") for answer in answers), answers[:3]


def test_decoder_bombs_do_not_grow_the_workers(server):
    """Small DICOM files whose code streams hold far more than their headers say (each grew a worker by
    0.3 to 4 GB before): each upload is answered, stores nothing, and no worker's resident memory grows
    by more than a film's worth, at its peak or after."""
    bombs = {
        "deflate-behind-undefined-meta": (deflated_behind_undefined_meta(300), {400}),
        "jpeg-sof": (jpeg_larger_than_its_header(), {400}),
        "j2k-siz": (j2k_larger_than_its_header(), {400}),
        "rle-segment": (rle_longer_than_its_frame(), {400}),
        "offset-table-frames": (more_frames_in_the_offset_table(), {422}),  # its one blank frame is refused
    }
    before = server.get_json("/api/v1/predictions")[1]["total"]
    server.wait_idle(timeout=60)
    resident = server.rss_per_worker()
    server.peak_rss.clear()
    server.start_sampling(every=0.1)
    try:
        for name, (data, statuses) in bombs.items():
            status, body, _ = server.upload(f"{name}.dcm", data)
            assert status in statuses, (name, status, body[:300])
    finally:
        server.stop_sampling()
    grown = {pid: server.peak_rss.get(pid, rss) - rss for pid, rss in resident.items()}
    assert max(grown.values()) < 400, f"peak growth per worker (MiB): {grown}"
    after = {pid: rss - resident[pid] for pid, rss in server.rss_per_worker().items() if pid in resident}
    assert max(after.values()) < 300, f"growth kept per worker (MiB): {after}"
    assert server.get_json("/api/v1/predictions")[1]["total"] == before


def test_sign_in_back_off_answers_at_once_instead_of_holding_threads(tmp_path, model_dir):
    """Guessing one account's password from 64 addresses (behind a trusted proxy) while the owner signs in:
    the back-off answers 429 with Retry-After at once, so no request thread sleeps and /healthz and the
    owner's sign-in answer within seconds (each guess slept up to the back-off before, holding a thread)."""
    server = Gunicorn(
        tmp_path,
        workers=1,
        init_db=False,
        env={
            "CXR_MODEL_DIR": str(model_dir),
            "CXR_TRUSTED_PROXIES": "1",
            "CXR_SIGN_IN_BACKOFF_SECONDS": "4",
            "CXR_SIGN_IN_BACKOFF_MAX_SECONDS": "8",
        },
    )
    stop = threading.Event()

    def guess(n: int) -> int:
        if stop.is_set():
            return -1
        address = {"X-Forwarded-For": f"198.51.100.{n // 3}"}
        return sign_in_attempt(server.url, server.account.username, "a wrong guess", 60, address)[0]

    try:
        server.start()
        deadline = time.monotonic() + 240
        while "Loaded model" not in server.log_text():
            assert time.monotonic() < deadline, server.log_tail()
            time.sleep(0.5)
        with ThreadPoolExecutor(max_workers=32) as pool:
            guesses = pool.map(guess, range(64 * 3))
            time.sleep(3)  # the guesses are in flight
            started = time.perf_counter()
            status, body = server.get_json("/healthz", timeout=15)
            assert status == 200 and body["status"] == "ok"
            owner = {"X-Forwarded-For": "10.0.0.8"}
            status, page, error, answer, _ = sign_in_attempt(
                server.url, server.account.username, server.account.password, 15, owner
            )
            waited = time.perf_counter() - started
            stop.set()
            statuses = [s for s in guesses if s != -1]
        assert status in (302, 429), (status, error, page[:300])
        if status == 429:
            assert 1 <= int(answer["Retry-After"]) <= 9
        assert waited < 5.0, f"/healthz and the owner's sign-in took {waited:.1f} s"
        assert set(statuses) <= {401, 429} and statuses.count(429) > 0, statuses
    finally:
        stop.set()
        status = server.stop()
    assert status == 0 and "Traceback" not in server.log_text(), server.log_tail()

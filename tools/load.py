"""A bounded concurrent HTTP client for the prediction API (standard library only); `python -m bench.load`
is its command line.

Each client thread sends uploads (`POST /api/v1/predictions`) and, with a given probability, history
reads instead (the paginated list, one stored prediction, or one of its images). Every request carries
the API token as `Authorization: Bearer`: the app answers anonymous requests 401. A run stops after
`requests` requests per client or after `duration` seconds, whichever comes first. Only loopback
addresses are accepted as targets.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import random
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from urllib.parse import urlencode, urlsplit

from cxr.overlay import FILE_FORMATS
from tools.common import percentile, table

# The load sends the same films again and again: force=1 stores each one, as a new film would be (without it
# the app links a repeated file to its first prediction and analyses nothing).
UPLOAD_PATH = "/api/v1/predictions?force=1"
UPLOAD = "upload"
LIST = "list"
DETAIL = "detail"
IMAGE = "image"


@dataclass(frozen=True)
class Result:
    op: str
    target: str
    status: int  # 0: no HTTP answer (refused, reset, timed out)
    started: float  # seconds since the run began
    latency: float  # seconds
    error: str = ""  # transport error, or the start of an error body
    prediction_id: int | None = None

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def not_let_in(self) -> bool:
        """401/403, or a redirect (to the sign-in page): the benchmark's credentials did not work."""
        return self.status in (401, 403) or 300 <= self.status < 400

    @property
    def failed(self) -> bool:
        """A server error, no answer at all, or credentials refused; other 4xx answers are the client's
        business (e.g. 422 refusals)."""
        return self.status == 0 or self.status >= 500 or self.not_let_in


@dataclass
class Run:
    results: list[Result] = field(default_factory=list)
    wall: float = 0.0

    def of(self, op: str | None = None) -> list[Result]:
        return [r for r in self.results if op is None or r.op == op]

    def created_ids(self) -> list[int]:
        return [r.prediction_id for r in self.results if r.op == UPLOAD and r.status == 201 and r.prediction_id]

    def statuses(self, op: str | None = None) -> Counter[int]:
        return Counter(r.status for r in self.of(op))

    def failures(self) -> list[Result]:
        return [r for r in self.results if r.failed]

    def locked(self) -> list[Result]:
        return [r for r in self.results if "database is locked" in r.error.lower()]

    def summary(self, op: str = UPLOAD) -> dict[str, float | int]:
        rows = self.of(op)
        done = [r.latency * 1000.0 for r in rows if r.ok]
        return {
            "requests": len(rows),
            "ok": len(done),
            "refused_4xx": sum(1 for r in rows if 400 <= r.status < 500 and not r.failed),
            "errors": sum(1 for r in rows if r.failed),
            "p50_ms": percentile(done, 50),
            "p95_ms": percentile(done, 95),
            "max_ms": max(done) if done else float("nan"),
            "per_s": len(done) / self.wall if self.wall else float("nan"),
        }


def check_loopback(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror:
        raise SystemExit(f"cannot resolve {host!r}") from None
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SystemExit(f"{url}: load is only ever sent to loopback addresses (127.0.0.0/8, ::1)")
    return host, parts.port or 80


def multipart(filename: str, data: bytes, fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    boundary = f"bench{uuid.uuid4().hex}"
    chunks = []
    for name, value in (fields or {}).items():
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    chunks.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: image/png\r\n\r\n".encode()
    )
    chunks += [data, f"\r\n--{boundary}--\r\n".encode()]
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def auth_headers(token: str | None) -> dict[str, str]:
    """The API's bearer-token header (none without a token)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def exchange(
    base: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
    token: str | None = None,
) -> tuple[int, bytes, str, http.client.HTTPMessage | None]:
    """(status, body, error, response headers); status 0, the exception's text and no headers when no
    HTTP answer came back. `token` is sent as `Authorization: Bearer`."""
    host, port = check_loopback(base)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers={**(headers or {}), **auth_headers(token)})
        response = connection.getresponse()
        payload = response.read()
        return response.status, payload, "", response.headers
    except (OSError, http.client.HTTPException) as exc:
        return 0, b"", f"{type(exc).__name__}: {exc}", None
    finally:
        connection.close()


def request(
    base: str,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
    token: str | None = None,
) -> tuple[int, bytes, str]:
    """(status, body, error); status 0 and the exception's text when no HTTP answer came back."""
    return exchange(base, method, path, body, headers, timeout, token)[:3]


def get_json(base: str, path: str, timeout: float = 30.0, token: str | None = None) -> tuple[int, dict]:
    status, payload, error = request(base, "GET", path, timeout=timeout, token=token)
    try:
        return status, json.loads(payload) if payload else {"error": error}
    except ValueError:
        return status, {"error": payload[:200].decode(errors="replace")}


def upload(
    base: str,
    filename: str,
    data: bytes,
    timeout: float = 120.0,
    fields: dict[str, str] | None = None,
    token: str | None = None,
):
    body, content_type = multipart(filename, data, fields)
    return request(base, "POST", UPLOAD_PATH, body, {"Content-Type": content_type}, timeout, token)


def sign_in(base: str, username: str, password: str, timeout: float = 30.0) -> dict[str, str]:
    """Sign in through the `/login` form, as a browser does (its CSRF token, the session cookie), and
    return the `Cookie` header of the signed-in session, for the HTML pages (the API takes the token)."""
    status, page, error, answer, jar = sign_in_attempt(base, username, password, timeout)
    if status != 302 or "/login" in (answer.get("Location") or ""):
        raise RuntimeError(f"signing in as {username!r} answered {status}: {error or page[:300]!r}")
    return jar


def sign_in_attempt(
    base: str, username: str, password: str, timeout: float = 30.0, headers: dict[str, str] | None = None
) -> tuple[int, bytes, str, http.client.HTTPMessage | None, dict[str, str]]:
    """One sign-in through the `/login` form (GET for its CSRF token and cookie, then POST), sending
    `headers` with both: (status, body, error, response headers of the POST, the `Cookie` header after it)."""
    cookies: SimpleCookie = SimpleCookie()

    def jar() -> dict[str, str]:
        return {"Cookie": "; ".join(f"{name}={m.value}" for name, m in cookies.items())} if cookies else {}

    def send(method: str, body: bytes | None = None, extra: dict[str, str] | None = None):
        sent = {**(headers or {}), **(extra or {}), **jar()}
        status, page, error, answer = exchange(base, method, "/login", body, sent, timeout)
        for value in (answer.get_all("Set-Cookie") or []) if answer is not None else []:
            cookies.load(value)
        return status, page, error, answer

    status, page, error, _ = send("GET")
    if status != 200:
        raise RuntimeError(f"GET /login answered {status}: {error or page[:300]!r}")
    found = re.search(rb'name="csrf_token" type="hidden" value="([^"]+)"', page)  # when CSRF is on
    form = {"username": username, "password": password, **({"csrf_token": found.group(1).decode()} if found else {})}
    status, page, error, answer = send(
        "POST", urlencode(form).encode(), {"Content-Type": "application/x-www-form-urlencoded"}
    )
    return status, page, error, answer, jar()


class Client:
    """One simulated user: its own random stream, the shared list of created ids to read back."""

    def __init__(
        self,
        number: int,
        targets: Sequence[str],
        bodies: Sequence[tuple[bytes, str]],
        reads: float,
        known: list[int],
        lock: threading.Lock,
        seed: int,
        timeout: float,
        token: str | None,
    ) -> None:
        self.targets = targets
        self.token = token
        self.bodies = bodies
        self.reads = reads
        self.known = known
        self.lock = lock
        self.random = random.Random(seed * 1000 + number)
        self.number = number
        self.timeout = timeout

    def one(self, step: int, origin: float) -> Result:
        target = self.targets[(self.number + step) % len(self.targets)]
        with self.lock:
            known = self.known[-200:]
        if known and self.random.random() < self.reads:
            choice = self.random.random()
            if choice < 0.4:
                pages = max(1, min(3, len(known) // 20))  # pages that exist (20 rows a page)
                op, path = LIST, f"/api/v1/predictions?page={self.random.randint(1, pages)}"
            elif choice < 0.8:
                op, path = DETAIL, f"/api/v1/predictions/{self.random.choice(known)}"
            else:
                kind = self.random.choice(("image", "overlay", "thumbnail"))
                op, path = IMAGE, f"/predictions/{self.random.choice(known)}/{kind}.{FILE_FORMATS[kind]}"
            started = time.perf_counter()
            status, payload, error = request(target, "GET", path, timeout=self.timeout, token=self.token)
        else:
            op = UPLOAD
            body, content_type = self.bodies[(self.number * 7919 + step) % len(self.bodies)]
            started = time.perf_counter()
            status, payload, error = request(
                target, "POST", UPLOAD_PATH, body, {"Content-Type": content_type}, self.timeout, self.token
            )
        latency = time.perf_counter() - started
        prediction_id = None
        if op == UPLOAD and status == 201:
            try:
                prediction_id = int(json.loads(payload)["id"])
            except (ValueError, KeyError, TypeError):
                error = "201 without an id: " + payload[:200].decode(errors="replace")
            else:
                with self.lock:
                    self.known.append(prediction_id)
        elif status >= 300 or status == 0:
            error = error or payload[:300].decode(errors="replace")
        return Result(op, target, status, started - origin, latency, error, prediction_id)


def run_load(
    targets: Sequence[str],
    images: Sequence[tuple[str, bytes]],
    clients: int,
    requests_per_client: int,
    duration: float = 600.0,
    reads: float = 0.0,
    seed: int = 0,
    timeout: float = 120.0,
    warmup: int = 0,
    on_step: Callable[[Result], None] | None = None,
    token: str | None = None,
) -> Run:
    """Run the load and return every result; bounded by `requests_per_client` and `duration` seconds.
    Every request carries `token` (an API token of a user of the targets) as `Authorization: Bearer`.

    `warmup` uploads per target are sent (one at a time) and discarded first. `on_step(result)` is
    called from the client threads after each request (e.g. to kill a worker mid-run).
    """
    for target in targets:
        check_loopback(target)
    bodies = [multipart(name, data) for name, data in images]
    for target in targets:
        for body, content_type in bodies[:warmup]:
            request(target, "POST", UPLOAD_PATH, body, {"Content-Type": content_type}, timeout, token)
    known: list[int] = []
    lock = threading.Lock()
    run = Run()
    origin = time.perf_counter()
    deadline = origin + duration

    def client_loop(number: int) -> list[Result]:
        client = Client(number, targets, bodies, reads, known, lock, seed, timeout, token)
        out = []
        for step in range(requests_per_client):
            if time.perf_counter() >= deadline:
                break
            result = client.one(step, origin)
            out.append(result)
            if on_step:
                on_step(result)
        return out

    with ThreadPoolExecutor(clients, thread_name_prefix="client") as pool:
        for results in pool.map(client_loop, range(clients)):
            run.results.extend(results)
    run.wall = time.perf_counter() - origin
    run.results.sort(key=lambda r: r.started)
    return run


def report(run: Run, title: str = "") -> str:
    rows = []
    for op in (UPLOAD, LIST, DETAIL, IMAGE):
        if run.of(op):
            s = run.summary(op)
            rows.append(
                [op, s["requests"], s["ok"], s["refused_4xx"], s["errors"], s["p50_ms"], s["p95_ms"], s["per_s"]]
            )
    text = table(["request", "sent", "2xx", "4xx", "5xx/none", "p50 ms", "p95 ms", "per s"], rows)
    codes = ", ".join(f"{code}: {n}" for code, n in sorted(run.statuses().items()))
    return (
        f"{title}\n{text}\nstatus codes: {codes}; wall {run.wall:.1f}s" if title else f"{text}\nstatus codes: {codes}"
    )

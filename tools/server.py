"""Start and stop gunicorn (the README's deployment: `gunicorn -c gunicorn.conf.py wsgi:app`) on a free
loopback port with a throwaway instance folder, and watch its workers.

    with Gunicorn(tmp_path) as server:        # or server.start() / server.stop()
        print(server.url, server.startup_s, server.worker_pids())
        server.upload("chest.png", data)     # the API, with the server's token
        run_load([server.url], images, 8, 100, token=server.token)

The app answers anonymous requests 401 (API) or with the sign-in page, so before gunicorn starts,
`start()` provisions a clinician with a random password and an API token for it through the CLI
(`flask --app app create-user` / `create-token`; see `provision`). Several servers on one database share
one `Account`: provision it once and pass it as `account=`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools.common import MODEL_DIR, ROOT, children, cpu_seconds, rss_mib
from tools.load import get_json, request, upload

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(
    instance: Path,
    database_url: str | None = None,
    upload_folder: Path | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a server (or a `flask --app app ...` command) using this instance folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CXR_", "GUNICORN_", "WEB_CONCURRENCY"))}
    env.update(
        CXR_INSTANCE_PATH=str(instance),
        DATABASE_URL=database_url or f"sqlite:///{instance / 'cxr.sqlite'}",
        SECRET_KEY="bench-secret-key-not-for-production",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
        CXR_MODEL_DIR=str(MODEL_DIR),  # models/, or CXR_BENCH_MODEL
    )
    if upload_folder is not None:
        env["CXR_UPLOAD_FOLDER"] = str(upload_folder)
    env.update(extra or {})
    return env


def flask_command(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """`flask --app app ARGS` in the project root with this environment."""
    return subprocess.run(
        [str(BIN / "flask"), "--app", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@dataclass(frozen=True)
class Account:
    """A user of the served app and an API token of theirs (see `provision`)."""

    username: str
    password: str = field(repr=False)
    token: str = field(repr=False)


def provision(
    env: dict[str, str], username: str = "bench", role: str = "clinician", label: str = "benchmark"
) -> Account:
    """Create a user with a random password, and an API token for them, with the CLI against the database
    of `env` (see `server_env`), whose schema must exist (`flask init-db`). Takes a few seconds (two `flask`
    processes): call it before anything is timed."""
    password = secrets.token_urlsafe(18)
    created = flask_command(["create-user", username, "--role", role], {**env, "CXR_USER_PASSWORD": password})
    if created.returncode != 0:
        raise RuntimeError(f"flask create-user failed:\n{created.stdout[-1500:]}{created.stderr[-3000:]}")
    issued = flask_command(["create-token", username, "--label", label], env)
    lines = issued.stdout.strip().splitlines()
    if issued.returncode != 0 or not lines or " " in lines[-1]:
        raise RuntimeError(f"flask create-token failed:\n{issued.stdout[-1500:]}{issued.stderr[-3000:]}")
    return Account(username, password, lines[-1])  # the token alone is the last line


class Gunicorn:
    """One gunicorn master with its workers, serving the app from ROOT with its own instance folder.

    `account`: the user whose token the helpers send; by default `start()` provisions one (not with
    `provision=False`, for a server that is not meant to serve, e.g. one that must refuse to start)."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        workers: int | None = None,
        threads: int | None = None,
        worker_class: str | None = None,
        database_url: str | None = None,
        upload_folder: Path | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        instance: Path | None = None,
        init_db: bool = True,
        extra_args: list[str] | None = None,
        account: Account | None = None,
        provision: bool = True,
    ) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="cxr-bench-")
        self.workdir = Path(workdir or self._tmp.name)
        self.instance = instance or self.workdir / "instance"
        self.instance.mkdir(parents=True, exist_ok=True)
        self.upload_folder = upload_folder or self.instance / "uploads"
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url or f"sqlite:///{self.instance / 'cxr.sqlite'}"
        extra = dict(env or {})
        extra["CXR_BIND"] = f"127.0.0.1:{self.port}"
        if workers is not None:
            extra["WEB_CONCURRENCY"] = str(workers)
        self.env = server_env(self.instance, self.database_url, self.upload_folder, extra)
        self.args = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"]
        if threads is not None:
            self.args += ["--threads", str(threads)]
        if worker_class is not None:
            self.args += ["--worker-class", worker_class]
        self.args += extra_args or []
        self.init_db = init_db
        self.account = account
        self.provision = provision
        self.provision_s = 0.0  # seconds spent creating the account (not part of startup_s)
        self.log_path = self.workdir / f"gunicorn-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.startup_s = float("nan")
        self.launched_at = float("nan")
        self.peak_rss: dict[int, float] = {}
        self._sampling = threading.Event()
        self._sampler: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------------------------------
    def start(self, timeout: float = 240.0) -> float:
        """Provision the account (unless given), launch gunicorn; return the seconds from launch to the
        first `/healthz` 200 (the CLI commands before the launch are not counted)."""
        provisioning = self.account is None and self.provision
        if self.init_db or provisioning:  # as `make run` does before it starts gunicorn; users need the schema
            done = flask_command(["init-db"], self.env)
            if done.returncode != 0:
                raise RuntimeError(f"flask init-db failed:\n{done.stderr[-3000:]}")
        if provisioning:
            began = time.perf_counter()
            self.account = provision(self.env)
            self.provision_s = time.perf_counter() - began
        log = self.log_path.open("ab")
        started = self.launched_at = time.perf_counter()
        self.process = subprocess.Popen(
            self.args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.startup_s = self.wait_healthy(timeout, started)
        return self.startup_s

    def wait_healthy(self, timeout: float = 240.0, started: float | None = None) -> float:
        started = started if started is not None else time.perf_counter()
        deadline = started + timeout
        while time.perf_counter() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log_tail()}")
            status, _ = get_json(self.url, "/healthz", timeout=5)  # public: anonymous, as a load balancer
            if status == 200:
                return time.perf_counter() - started
            time.sleep(0.05)
        raise TimeoutError(f"{self.url}/healthz did not answer 200 within {timeout:.0f}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 40.0) -> int | None:
        self.stop_sampling()
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        pids = self.worker_pids()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        for pid in pids:  # never leave a worker behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return self.process.returncode

    def __enter__(self) -> Gunicorn:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- talking to it, as the provisioned user ------------------------------------------------------
    @property
    def token(self) -> str | None:
        """The API token sent by the helpers below and to be given to `run_load` (None before `start()`)."""
        return self.account.token if self.account else None

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 60.0,
    ) -> tuple[int, bytes, str]:
        return request(self.url, method, path, body, headers, timeout, self.token)

    def get_json(self, path: str, timeout: float = 30.0) -> tuple[int, dict]:
        return get_json(self.url, path, timeout, self.token)

    def upload(
        self, filename: str, data: bytes, timeout: float = 120.0, fields: dict[str, str] | None = None
    ) -> tuple[int, bytes, str]:
        return upload(self.url, filename, data, timeout, fields, self.token)

    # -- watching ---------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def worker_pids(self) -> list[int]:
        return children(self.pid) if self.process and self.process.poll() is None else []

    def wait_workers(self, count: int, timeout: float = 120.0, replacing: set[int] | None = None) -> list[int]:
        """Wait until `count` workers run (at least one of them not in `replacing`) and /healthz answers 200."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            pids = self.worker_pids()
            if len(pids) >= count and (not replacing or set(pids) - replacing):
                self.wait_healthy(max(1.0, deadline - time.perf_counter()))
                return pids
            time.sleep(0.1)
        raise TimeoutError(f"fewer than {count} new workers after {timeout:.0f}s:\n{self.log_tail()}")

    def accepted_connections(self) -> int:
        """Open TCP connections on the server's port that its workers have accepted (Linux /proc): a
        connection still in the listen backlog belongs to no process yet."""
        sockets = set()
        for pid in self.worker_pids():
            with contextlib.suppress(OSError):  # a worker that exits meanwhile
                for fd in os.scandir(f"/proc/{pid}/fd"):
                    with contextlib.suppress(OSError):
                        target = os.readlink(fd.path)
                        if target.startswith("socket:["):
                            sockets.add(target[len("socket:[") : -1])
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    fields = line.split()  # sl, local address:port (hex), remote, state, ..., inode (10th)
                    established = fields[3] == "01"
                    if established and int(fields[1].rsplit(":", 1)[1], 16) == self.port and fields[9] in sockets:
                        count += 1
        return count

    def wait_idle(self, timeout: float = 120.0, window: float = 1.0, busy_below: float = 0.05) -> bool:
        """Wait until no worker used more than `busy_below` CPU seconds in `window` seconds: every worker
        has finished loading the model (TensorFlow) and waits for requests. False on timeout."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            pids = self.worker_pids()
            before = {pid: cpu_seconds(pid) for pid in pids}
            time.sleep(window)
            used = [cpu_seconds(pid) - before[pid] for pid in pids]
            if pids and all(u == u and u < busy_below for u in used):
                return True
        return False

    def rss_per_worker(self) -> dict[int, float]:
        return {pid: rss_mib(pid) for pid in self.worker_pids()}

    def start_sampling(self, every: float = 0.5) -> None:
        """Record each worker's peak resident memory in the background until `stop_sampling`."""
        self._sampling.clear()

        def sample() -> None:
            while True:
                for pid, rss in self.rss_per_worker().items():
                    if rss == rss:  # not NaN
                        self.peak_rss[pid] = max(self.peak_rss.get(pid, 0.0), rss)
                if self._sampling.wait(every):
                    break

        self._sampler = threading.Thread(target=sample, daemon=True)
        self._sampler.start()

    def stop_sampling(self) -> None:
        self._sampling.set()
        if self._sampler is not None:
            self._sampler.join(5)
            self._sampler = None
            for pid, rss in self.rss_per_worker().items():  # a last sample, for runs shorter than `every`
                if rss == rss:
                    self.peak_rss[pid] = max(self.peak_rss.get(pid, 0.0), rss)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_text()[-chars:]

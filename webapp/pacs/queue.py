"""The queue between receiving an instance and analysing it.

- Without QUEUE_URL, the *local* queue: a folder of received instances (`instance/dicom-inbox/`) that the
  listener's own process works through (`LocalQueue.work`), so that `make run` needs nothing else. A file
  is claimed by renaming it into `claimed/` with the claiming process's id (one rename: two processes never
  claim the same file) and removed once analysed, so instances received while a process was down, or
  claimed by one that died, are analysed when a listener starts. A file's name starts with the time from
  which it may be taken: a failed job goes back with a time RETRY_SECONDS ahead.
- With QUEUE_URL=redis://..., RQ on Redis: `flask --app app analysis-worker` runs workers on any host
  that reaches Redis, the database and the upload folder. A job carries the instance's bytes; a failed
  job, or one whose worker died (RQ's abandoned jobs), is retried QUEUE_RETRIES times.

Either way the job is `webapp.pacs.jobs.analyse_instance`, which is idempotent (analysed once).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from flask import Flask, current_app

from webapp.pacs.jobs import analyse_instance

log = logging.getLogger("cxr.pacs")
QUEUE_NAME = "cxr-analysis"
INBOX = "dicom-inbox"
RETRY_SECONDS = 60  # a failed local job (the PACS down, the database unreachable) waits this long


class LocalQueue:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.claimed = folder / "claimed"
        self.claimed.mkdir(parents=True, exist_ok=True)
        self.arrived = threading.Event()

    def put(self, data: bytes, origin: str) -> None:
        # Written under a temporary name and renamed: a worker never claims half a file.
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex}-{origin.encode().hex()}.dcm"
        partial = self.folder / f".{name}.part"
        partial.write_bytes(data)
        partial.rename(self.folder / name)
        self.arrived.set()

    def recover(self) -> int:
        """Return the files claimed by processes that no longer run to the queue; how many."""
        count = 0
        for path in self.claimed.glob("*.dcm"):
            pid, _, name = path.name.partition("-")
            if pid.isdigit() and not _running(int(pid)):
                path.rename(self.folder / name)
                count += 1
        return count

    def claims(self) -> Iterator[tuple[Path, str]]:
        """Claim queued files oldest first (path, origin), until the queue is empty."""
        while True:
            now = time.time_ns()
            for path in sorted(self.folder.glob("*.dcm")):
                if int(path.name.split("-", 1)[0]) > now:  # a failed job waiting for its retry time
                    continue
                claimed = self.claimed / f"{os.getpid()}-{path.name}"
                try:
                    path.rename(claimed)
                except FileNotFoundError:  # another process claimed it first
                    continue
                yield claimed, bytes.fromhex(path.stem.rsplit("-", 1)[1]).decode()
                break
            else:
                return

    def drain(self) -> int:
        """Analyse every queued instance in this process (with an app context); how many were taken."""
        count = 0
        for path, origin in self.claims():
            try:
                analyse_instance(path.read_bytes(), origin)
            except Exception:  # noqa: BLE001 (e.g. the PACS does not take the results: back in the queue)
                log.exception("Analysing %s failed; it is retried in %d s", path.name, RETRY_SECONDS)
                self.retry_later(path)
                continue
            path.unlink()
            count += 1
        return count

    def retry_later(self, claimed: Path) -> None:
        """Return a claimed file to the queue, not to be taken before RETRY_SECONDS from now."""
        _pid, _queued, rest = claimed.name.split("-", 2)
        claimed.rename(self.folder / f"{time.time_ns() + RETRY_SECONDS * 10**9:020d}-{rest}")

    def work(self, app: Flask, stop: threading.Event) -> None:
        """Analyse queued instances until `stop` is set (a thread of the listener's process)."""
        while not stop.is_set():
            self.arrived.clear()
            with app.app_context():
                self.drain()
            self.arrived.wait(timeout=1.0)  # files another process put in the folder are found by the poll


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RedisQueue:
    def __init__(self, url: str, config) -> None:
        from redis import Redis
        from rq import Queue

        self.connection = Redis.from_url(url)
        self.queue = Queue(QUEUE_NAME, connection=self.connection)
        self.timeout = int(config["QUEUE_JOB_TIMEOUT"])
        self.retries = int(config["QUEUE_RETRIES"])

    def put(self, data: bytes, origin: str) -> None:
        from rq import Retry

        self.queue.enqueue(
            analyse_instance,
            data,
            origin,
            job_timeout=self.timeout,
            retry=Retry(max=self.retries),
            result_ttl=3600,
            failure_ttl=7 * 24 * 3600,  # failed jobs stay a week for `rq info` and a retry by hand
        )


def analysis_queue(app: Flask | None = None) -> LocalQueue | RedisQueue:
    """The queue the configuration names (QUEUE_URL, else the instance folder's local queue)."""
    app = app or current_app
    url = app.config.get("QUEUE_URL")
    if url:
        return RedisQueue(url, app.config)
    return LocalQueue(Path(app.instance_path, INBOX))

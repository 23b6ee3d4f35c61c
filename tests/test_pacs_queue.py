"""The Redis queue (a real redis-server, tools/redis_server.py) with two RQ workers
(`flask --app app analysis-worker`): 50 instances sent to the listener in a burst are each analysed
exactly once, also when a worker is killed in the middle of a job (its job is retried by the other)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.helpers import missing
from tests.test_pacs import chest_instance, predictions, wait_for
from tools.server import free_port, server_env
from webapp.pacs import listener
from webapp.pacs.queue import RedisQueue, analysis_queue

BURST = 50
JOB_TIMEOUT = 12  # seconds (an analysis takes well under one): a killed worker's job is retried this long
# plus ABANDONED_AFTER_SECONDS after it started


@pytest.fixture
def redis_url():
    from tools.redis_server import RedisServer, RedisUnavailable

    try:
        server = RedisServer()
    except RedisUnavailable as exc:
        missing(str(exc))
    with server:
        yield server.url


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as handle:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "flask"), "--app", "app", "analysis-worker"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parent.parent,
        )


def test_burst_with_two_workers_each_analysed_once_when_one_is_killed(make_app, tmp_path, redis_url, chest_png):
    from pynetdicom import AE
    from pynetdicom.sop_class import ComputedRadiographyImageStorage
    from rq import Worker
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    port = free_port()
    settings = {
        "DICOM_PORT": port,
        "QUEUE_URL": redis_url,
        "QUEUE_JOB_TIMEOUT": JOB_TIMEOUT,
        "QUEUE_MAINTENANCE_SECONDS": 2,
    }
    app = make_app(**settings)
    queue = analysis_queue(app)
    assert isinstance(queue, RedisQueue)
    server = listener.serve(app, queue, block=False)
    env = server_env(
        Path(app.instance_path),
        database_url=app.config["SQLALCHEMY_DATABASE_URI"],
        upload_folder=Path(app.config["UPLOAD_FOLDER"]),
        extra={f"CXR_{key}": str(value) for key, value in settings.items()},
    )
    workers = [start_worker(env, tmp_path / f"worker{n}.log") for n in range(2)]
    try:
        _, template = chest_instance(chest_png)
        sent = set()
        sender = AE(ae_title="MODALITY")
        sender.add_requested_context(ComputedRadiographyImageStorage)
        association = sender.associate("127.0.0.1", port, ae_title="CXR_TRIAGE")
        assert association.is_established
        for _ in range(BURST):
            template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            assert association.send_c_store(template).Status == 0x0000
            sent.add(template.SOPInstanceUID)
        association.release()

        # Kill a worker in the middle of a job, once both are working.
        def busy() -> tuple[int, str] | None:
            for worker in Worker.all(connection=queue.connection):
                job_id = worker.get_current_job_id()
                if job_id and worker.pid in {w.pid for w in workers} and len(predictions(app)) >= 2:
                    return worker.pid, job_id
            return None

        pid, killed_job = wait_for(busy, timeout=300, what="a worker in the middle of a job")
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: len(predictions(app)) >= BURST, timeout=600, what=f"{BURST} predictions")
        wait_for(
            lambda: Job.fetch(killed_job, connection=queue.connection).get_status() == "finished",
            timeout=120,
            what="the killed worker's job to be retried",
        )
        rows = predictions(app)
        assert len(rows) == BURST
        assert {row.sop_instance_uid for row in rows} == sent  # each instance once, none lost
        assert {row.origin for row in rows} == {"MODALITY"}
        assert FailedJobRegistry(queue=queue.queue).count == 0
        assert len(queue.queue) == 0
    finally:
        server.shutdown()
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=60)

"""`flask --app app dicom-listen`, `analysis-worker` and `pacs-pull --since DATE` (README, "PACS")."""

from __future__ import annotations

import io
import logging
import threading
from datetime import datetime

import click
import pydicom
from flask import current_app
from flask.cli import with_appcontext

from webapp.model_service import model_service
from webapp.pacs.instances import ACCEPTED_MODALITIES, Refused, screen
from webapp.pacs.jobs import analysed
from webapp.pacs.listener import serve
from webapp.pacs.queue import LocalQueue, RedisQueue, analysis_queue

log = logging.getLogger("cxr.pacs")
PULL_ORIGIN = "DICOMweb"
# A worker that died mid-job is noticed this long after the job's own time limit (QUEUE_JOB_TIMEOUT).
ABANDONED_AFTER_SECONDS = 10


def _logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s"
        )


@click.command("dicom-listen")
@with_appcontext
def dicom_listen_command() -> None:
    """Receive DICOM instances (C-STORE, C-ECHO) and queue CR/DX chest images for analysis; without
    CXR_QUEUE_URL this process also analyses them."""
    _logging()
    app = current_app._get_current_object()
    queue = analysis_queue(app)
    if isinstance(queue, LocalQueue):
        model_service.preload(app)  # before the first association: the model is loaded once
        recovered = queue.recover()
        if recovered:
            log.info("%d instance(s) left by a stopped listener are queued again", recovered)
        threading.Thread(target=queue.work, args=(app, threading.Event()), name="analysis", daemon=True).start()
    serve(app, queue)


@click.command("analysis-worker")
@with_appcontext
@click.option("--burst", is_flag=True, help="stop once the queue is empty")
def analysis_worker_command(burst: bool) -> None:
    """Analyse queued instances from Redis (CXR_QUEUE_URL); run as many as wanted, on any host."""
    from rq import SimpleWorker

    _logging()
    app = current_app._get_current_object()
    queue = analysis_queue(app)
    if not isinstance(queue, RedisQueue):
        raise click.ClickException("Set CXR_QUEUE_URL (redis://host:port/db): without it, dicom-listen analyses.")
    model_service.preload(app)

    class AnalysisWorker(SimpleWorker):
        # A SimpleWorker runs the job in its own process (TensorFlow is not fork-safe) and sends no heartbeat
        # during it, so its claim on a job lasts the job's time limit and a little more; after that the job
        # counts as abandoned and another worker's maintenance retries it.
        def get_heartbeat_ttl(self, job) -> int:
            return int(job.timeout or app.config["QUEUE_JOB_TIMEOUT"]) + ABANDONED_AFTER_SECONDS

    maintenance = int(app.config["QUEUE_MAINTENANCE_SECONDS"])
    # An idle worker waits on Redis for worker_ttl - 15 s before it looks at the registries again: so that
    # jobs of dead workers are retried within the maintenance interval even when the queue is otherwise empty.
    worker = AnalysisWorker(
        [queue.queue], connection=queue.connection, maintenance_interval=maintenance, worker_ttl=maintenance + 15
    )
    worker.work(burst=burst, logging_level="INFO")


@click.command("pacs-pull")
@with_appcontext
@click.option("--since", required=True, type=click.DateTime(formats=["%Y-%m-%d"]), help="study date (YYYY-MM-DD)")
@click.option("--url", help="the DICOMweb root (default CXR_DICOMWEB_URL)")
def pacs_pull_command(since: datetime, url: str | None) -> None:
    """Fetch CR/DX instances of studies from SINCE on (QIDO-RS, WADO-RS) and queue those not yet analysed;
    without CXR_QUEUE_URL they are analysed before the command ends."""
    from dicomweb_client.api import DICOMwebClient

    _logging()
    url = url or current_app.config.get("DICOMWEB_URL")
    if not url:
        raise click.ClickException("Name the DICOMweb server: --url or CXR_DICOMWEB_URL.")
    client = DICOMwebClient(url)
    queue = analysis_queue()
    queued = skipped = 0
    for modality in sorted(ACCEPTED_MODALITIES):
        filters = {"StudyDate": f"{since:%Y%m%d}-", "Modality": modality}
        for series in client.search_for_series(search_filters=filters):
            study_uid, series_uid = (series[tag]["Value"][0] for tag in ("0020000D", "0020000E"))
            for instance in client.search_for_instances(study_uid, series_uid):
                sop_uid = instance["00080018"]["Value"][0]
                if analysed(sop_uid) is not None:
                    skipped += 1
                    continue
                dataset = client.retrieve_instance(study_uid, series_uid, sop_uid)
                buffer = io.BytesIO()
                pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
                try:
                    screen(dataset)
                except Refused as exc:
                    log.warning("Refused instance %s from %s: %s", sop_uid, PULL_ORIGIN, exc)
                    continue
                queue.put(buffer.getvalue(), PULL_ORIGIN)
                queued += 1
    click.echo(f"Queued {queued} instance(s); {skipped} already analysed.")
    if isinstance(queue, LocalQueue) and queued:
        click.echo(f"Analysed {queue.drain()} instance(s).")


COMMANDS = (dicom_listen_command, analysis_worker_command, pacs_pull_command)

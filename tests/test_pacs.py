"""The PACS connection against a real Orthanc (tools/orthanc.py; never mocked): Orthanc forwards a chest
film over C-STORE to the listener, or the app pulls it over DICOMweb; it is analysed; the SR and the
secondary capture appear in Orthanc under the same study with the right references; a non-chest and a
non-image instance are refused and logged. The Redis queue with two workers is in tests/test_pacs_queue.py.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from tests.helpers import dicom_bytes, gray_pixels, missing
from tools.server import free_port
from webapp.db import Prediction, db
from webapp.pacs import listener
from webapp.pacs.queue import INBOX, LocalQueue, analysis_queue
from webapp.pacs.results import NOTICE

APP_AET = "CXR_TRIAGE"


def wait_for(condition: Callable[[], object], timeout: float = 120.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"Timed out after {timeout:.0f} s waiting for {what}")


def chest_instance(chest_png: bytes, modality: str = "CR", view: str = "AP", **extra) -> tuple[bytes, pydicom.Dataset]:
    """A chest film as a Part 10 file with the study metadata a PACS sends."""
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(gray_pixels(chest_png), modality=modality)))
    if modality == "CR":
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # CR Image Storage
    ds.PatientID, ds.PatientName = "TEST-0001", "Test^Patient"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20261205", "101500", "ACC123"
    ds.ViewPosition, ds.ImageLaterality = view, ""
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue(), ds


def report_instance() -> bytes:
    """A DICOM instance without an image (a Basic Text SR)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = generate_uid(), generate_uid(), "TEST-0002"
    ds.Modality = "SR"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.fixture
def pacs():
    """Orthanc knowing the app (AE CXR_TRIAGE on a free loopback port) as the modality 'cxr'."""
    from tools.orthanc import Orthanc, OrthancUnavailable

    port = free_port()
    try:
        server = Orthanc(modalities={"cxr": (APP_AET, "127.0.0.1", port)})
    except OrthancUnavailable as exc:
        missing(str(exc))
    with server:
        server.app_port = port
        yield server


@pytest.fixture
def listening(make_app, pacs):
    """The app's listener (in this process, on the local queue, with its analysis thread) accepting only
    Orthanc, and sending results back to it by C-STORE."""
    app = make_app(
        DICOM_PORT=pacs.app_port,
        DICOM_ALLOWED=pacs.aet,
        PACS_DESTINATION=f"{pacs.aet}@127.0.0.1:{pacs.dicom_port}",
    )
    queue = analysis_queue(app)
    assert isinstance(queue, LocalQueue)
    stop = threading.Event()
    worker = threading.Thread(target=queue.work, args=(app, stop), daemon=True)
    worker.start()
    server = listener.serve(app, queue, block=False)
    yield app
    server.shutdown()
    stop.set()
    queue.arrived.set()  # the analysis thread looks at `stop` now, not after its poll interval
    worker.join(timeout=60)


def predictions(app) -> list[Prediction]:
    with app.app_context():
        rows = db.session.scalars(db.select(Prediction).order_by(Prediction.id)).all()
        db.session.remove()
        return list(rows)


def study_instances(pacs, study_uid: str) -> list[pydicom.Dataset]:
    found = pacs.post(
        "/tools/find",
        f'{{"Level": "Instance", "Query": {{"StudyInstanceUID": "{study_uid}"}}}}'.encode(),
        "application/json",
    )
    return [pydicom.dcmread(io.BytesIO(pacs.get(f"/instances/{oid}/file"))) for oid in found]


def content(sr: pydicom.Dataset) -> dict[str, pydicom.Dataset]:
    return {item.ConceptNameCodeSequence[0].CodeMeaning: item for item in sr.ContentSequence}


def check_results(pacs, source: pydicom.Dataset, record: Prediction) -> None:
    """The SR and the secondary capture are in Orthanc, in new series of the source's study, and refer to it."""
    instances = wait_for(
        lambda: (found := study_instances(pacs, source.StudyInstanceUID)) and len(found) == 3 and found,
        what="the SR and the secondary capture in Orthanc",
    )
    by_modality = {ds.Modality: ds for ds in instances}
    assert set(by_modality) == {source.Modality, "SR", "OT"}
    sr, sc = by_modality["SR"], by_modality["OT"]
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sc.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    series = {source.SeriesInstanceUID, sr.SeriesInstanceUID, sc.SeriesInstanceUID}
    assert len(series) == 3  # each result in a new series of the same study
    assert sr.StudyInstanceUID == sc.StudyInstanceUID == source.StudyInstanceUID
    assert sr.PatientID == sc.PatientID == source.PatientID
    items = content(sr)
    assert items["Decision"].TextValue.startswith(
        {"covid": "COVID-19 features", "indeterminate": "Indeterminate"}.get(record.decision, "No COVID-19 features")
    )
    p_covid = float(items["Probability of COVID-19 (calibrated)"].MeasuredValueSequence[0].NumericValue)
    assert p_covid == pytest.approx(record.positive_probability, abs=1e-6)
    threshold = float(items["Operating threshold on p(COVID-19)"].MeasuredValueSequence[0].NumericValue)
    assert threshold == pytest.approx(record.threshold, abs=1e-6)
    assert items["Algorithm Version"].TextValue == record.model_version
    assert NOTICE in items["Comment"].TextValue
    assert ("Indeterminate reason" in items) == (record.decision == "indeterminate")
    source_ref = items["Source"].ReferencedSOPSequence[0]
    assert (source_ref.ReferencedSOPClassUID, source_ref.ReferencedSOPInstanceUID) == (
        source.SOPClassUID,
        source.SOPInstanceUID,
    )
    assert (
        items["Grad-CAM overlay (secondary capture)"].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        == sc.SOPInstanceUID
    )
    evidence = {
        ref.ReferencedSOPInstanceUID
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for ref in series.ReferencedSOPSequence
    }
    assert evidence == {source.SOPInstanceUID, sc.SOPInstanceUID}
    # The notice is burned into a band across the top of the capture: black with yellow text.
    pixels = sc.pixel_array
    band = pixels[: max(24, pixels.shape[0] // 20)]
    yellow = (band[..., 0] > 200) & (band[..., 1] > 200) & (band[..., 2] < 80)
    assert yellow.sum() > 100 and (band.sum(axis=-1) == 0).mean() > 0.5
    assert "research use" in sc.SeriesDescription.lower()


def test_forwarded_by_orthanc_analysed_and_results_back(listening, pacs, chest_png, caplog):
    data, source = chest_instance(chest_png)
    stored = pacs.post("/instances", data)
    with caplog.at_level(logging.INFO, logger="cxr.pacs"):
        job = pacs.post("/modalities/cxr/store", stored["ID"].encode(), "text/plain")
        assert job["FailedInstancesCount"] == 0 and job["InstancesCount"] == 1
        record = wait_for(lambda: predictions(listening), what="the prediction")[0]
        check_results(pacs, source, record)
        wait_for(lambda: queue_empty(listening), what="the job to finish")
    [record] = predictions(listening)
    assert record.origin == pacs.aet
    assert (record.study_instance_uid, record.series_instance_uid, record.sop_instance_uid) == (
        source.StudyInstanceUID,
        source.SeriesInstanceUID,
        source.SOPInstanceUID,
    )
    assert (record.accession_number, record.view_position, record.modality) == ("ACC123", "AP", "CR")
    assert record.study_date.isoformat() == "2026-12-05" and record.portable
    assert record.reference is None  # the patient ID is not stored
    assert record.results_sent_at is not None
    assert f"Queued an instance from {pacs.aet}" in caplog.text

    # Sent again (a PACS retrying), it is not analysed twice and its results are not sent twice.
    again = pacs.post("/modalities/cxr/store", stored["ID"].encode(), "text/plain")
    assert again["FailedInstancesCount"] == 0
    wait_for(lambda: queue_empty(listening), what="the repeated instance to be taken from the queue")
    assert [r.id for r in predictions(listening)] == [record.id]
    assert len(study_instances(pacs, source.StudyInstanceUID)) == 3


def queue_empty(app) -> bool:
    """No instance waits in the local queue or is being analysed."""
    inbox = Path(app.instance_path, INBOX)
    return not any(inbox.glob("*.dcm")) and not any((inbox / "claimed").glob("*.dcm"))


def test_non_chest_and_non_image_refused_and_logged(listening, pacs, chest_png, caplog):
    ct, _ = chest_instance(chest_png, modality="CT")
    knee, _ = chest_instance(chest_png, BodyPartExamined="KNEE")
    ids = [pacs.post("/instances", data)["ID"] for data in (ct, knee, report_instance())]
    with caplog.at_level(logging.WARNING, logger="cxr.pacs"):
        for oid in ids:
            job = pacs.post("/modalities/cxr/store", oid.encode(), "text/plain", check=False)
            assert job["HttpStatus"] == 500 and "failed with DIMSE status 0xC000" in job["Details"]  # refused
    assert "Refused an instance from ORTHANC: modality CT, not CR or DX" in caplog.text
    assert "Refused an instance from ORTHANC: This DICOM file shows the body part 'Knee'" in caplog.text
    assert "Refused an instance from ORTHANC: modality SR, not CR or DX" in caplog.text
    assert queue_empty(listening) and predictions(listening) == []


def test_unknown_calling_title_and_malformed_data_leave_the_listener_serving(listening, pacs, chest_png, caplog):
    from pynetdicom import AE
    from pynetdicom.sop_class import ComputedRadiographyImageStorage, Verification

    stranger = AE(ae_title="STRANGER")
    stranger.add_requested_context(Verification)
    association = stranger.associate("127.0.0.1", pacs.app_port, ae_title=APP_AET)
    assert not association.is_established  # DICOM_ALLOWED names Orthanc only

    orthanc = AE(ae_title=pacs.aet)
    orthanc.add_requested_context(Verification)
    orthanc.add_requested_context(ComputedRadiographyImageStorage)
    association = orthanc.associate("127.0.0.1", pacs.app_port, ae_title=APP_AET)
    assert association.is_established
    assert association.send_c_echo().Status == 0x0000
    data, _ = chest_instance(chest_png)
    truncated = pydicom.dcmread(io.BytesIO(data))
    truncated.PixelData = truncated.PixelData[:1000]  # pixels that do not fill Rows × Columns
    with caplog.at_level(logging.WARNING, logger="cxr.pacs"):
        status = association.send_c_store(truncated)
        assert status.Status == 0x0000  # the header is a chest film: queued; the job refuses the pixels
        wait_for(lambda: "Refused instance" in caplog.text, what="the job's refusal")
    association.release()
    assert "could not be decoded" in caplog.text or "truncated or corrupt" in caplog.text
    assert predictions(listening) == []
    echo = orthanc.associate("127.0.0.1", pacs.app_port, ae_title=APP_AET)
    assert echo.is_established and echo.send_c_echo().Status == 0x0000  # still serving
    echo.release()


def test_dicomweb_pull_analyses_and_stows_results(make_app, pacs, chest_png):
    app = make_app(PACS_STOW_URL=pacs.dicomweb)
    data, source = chest_instance(chest_png, modality="DX", view="PA")
    pacs.post("/instances", data)
    pacs.post("/instances", chest_instance(chest_png, modality="CT")[0])  # not pulled: not CR/DX
    result = app.test_cli_runner().invoke(args=["pacs-pull", "--since", "2026-12-01", "--url", pacs.dicomweb])
    assert result.exit_code == 0, result.output
    assert "Queued 1 instance(s); 0 already analysed." in result.output
    assert "Analysed 1 instance(s)." in result.output
    [record] = predictions(app)
    assert (record.origin, record.sop_instance_uid, record.view_position) == ("DICOMweb", source.SOPInstanceUID, "PA")
    check_results(pacs, source, record)
    again = app.test_cli_runner().invoke(args=["pacs-pull", "--since", "2026-12-01", "--url", pacs.dicomweb])
    assert "Queued 0 instance(s); 1 already analysed." in again.output
    later = app.test_cli_runner().invoke(args=["pacs-pull", "--since", "2026-12-06", "--url", pacs.dicomweb])
    assert "Queued 0 instance(s); 0 already analysed." in later.output


def echo(port: int) -> bool:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="ECHOSCU")
    ae.add_requested_context(Verification)
    association = ae.associate("127.0.0.1", port, ae_title=APP_AET)
    if not association.is_established:
        return False
    status = association.send_c_echo()
    association.release()
    return bool(status) and status.Status == 0x0000


@pytest.mark.slow
def test_gunicorn_starts_the_listener_which_analyses_on_its_own(tmp_path, model_dir, chest_png):
    """`make run`'s one command: gunicorn starts `dicom-listen` (CXR_DICOM_LISTEN), which analyses what it
    receives in its own process (no Redis), and stops it when gunicorn stops."""
    from pynetdicom import AE
    from pynetdicom.sop_class import ComputedRadiographyImageStorage

    from tools.server import Gunicorn

    port = free_port()
    env = {"CXR_DICOM_LISTEN": "1", "CXR_DICOM_PORT": str(port), "CXR_MODEL_DIR": str(model_dir)}
    with Gunicorn(tmp_path, workers=1, env=env) as server:
        wait_for(lambda: echo(port), timeout=240, what="the listener started by gunicorn")
        _, film = chest_instance(chest_png)
        sender = AE(ae_title="MODALITY")
        sender.add_requested_context(ComputedRadiographyImageStorage)
        association = sender.associate("127.0.0.1", port, ae_title=APP_AET)
        assert association.send_c_store(film).Status == 0x0000
        association.release()
        listing = wait_for(
            # `items`, not `total`: the page's rows and its count are two queries, and the listener's
            # process may commit between them.
            lambda: (answer := server.get_json("/api/v1/predictions"))[1].get("items") and answer[1],
            timeout=300,
            what="the prediction in the API",
        )
        [item] = listing["items"]
        assert item["study"]["origin"] == "MODALITY"
        assert item["study"]["sop_instance_uid"] == film.SOPInstanceUID
    assert server.process.returncode == 0
    assert not echo(port)  # stopped with gunicorn


@pytest.fixture
def own_listener(make_app):
    """A listener on the local queue with its analysis thread, without a PACS; `start(**config)`."""
    running = []

    def start(**config):
        app = make_app(DICOM_PORT=free_port(), **config)
        queue = analysis_queue(app)
        stop = threading.Event()
        worker = threading.Thread(target=queue.work, args=(app, stop), daemon=True)
        worker.start()
        running.append((listener.serve(app, queue, block=False), queue, stop, worker))
        return app

    yield start
    for server, queue, stop, worker in running:
        server.shutdown()
        stop.set()
        queue.arrived.set()  # the analysis thread looks at `stop` now, not after its poll interval
        worker.join(timeout=60)


def store(port: int, dataset: pydicom.Dataset) -> int:
    from pynetdicom import AE

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID)
    association = ae.associate("127.0.0.1", port, ae_title=APP_AET)
    assert association.is_established
    status = association.send_c_store(dataset)
    association.release()
    return status.Status


def test_too_large_instance_refused_and_decoder_bomb_refused_within_the_upload_budget(own_listener, chest_png, caplog):
    app = own_listener(DICOM_MAX_BYTES=100_000)
    _, film = chest_instance(chest_png)  # about 200 kB of pixels
    with caplog.at_level(logging.WARNING, logger="cxr.pacs"):
        assert store(app.config["DICOM_PORT"], film) == listener.OUT_OF_RESOURCES
    assert "more than the 100000 accepted" in caplog.text

    app = own_listener()
    bomb = pydicom.dcmread(io.BytesIO(chest_instance(chest_png)[0]))
    bomb.Rows = bomb.Columns = 30_000  # 900 MP announced: refused from the header, nothing decoded
    with caplog.at_level(logging.WARNING, logger="cxr.pacs"):
        assert store(app.config["DICOM_PORT"], bomb) == listener.SUCCESS  # the header passes the screen
        wait_for(lambda: queue_empty(app) and "Refused instance" in caplog.text, what="the job's refusal")
    assert "more than the 40 megapixels accepted" in caplog.text
    assert predictions(app) == []


def test_results_not_delivered_leave_the_job_queued_for_a_later_retry(own_listener, chest_png, caplog):
    app = own_listener(PACS_DESTINATION=f"ORTHANC@127.0.0.1:{free_port()}")  # nobody listens there
    _, film = chest_instance(chest_png)
    with caplog.at_level(logging.WARNING, logger="cxr.pacs"):
        assert store(app.config["DICOM_PORT"], film) == listener.SUCCESS
        wait_for(lambda: "it is retried in 60 s" in caplog.text, what="the failed delivery")
    [record] = predictions(app)
    assert record.sop_instance_uid == film.SOPInstanceUID and record.results_sent_at is None
    [waiting] = Path(app.instance_path, INBOX).glob("*.dcm")
    assert int(waiting.name.split("-")[0]) > time.time_ns()  # not taken again before its retry time
    assert LocalQueue(Path(app.instance_path, INBOX)).drain() == 0

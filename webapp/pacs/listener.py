"""The DICOM listener (pynetdicom): C-ECHO, and C-STORE of any storage SOP class in any transfer syntax,
of which CR and DX chest images are queued and everything else refused with a logged reason.

Limits: calling AE titles (DICOM_ALLOWED), associations at once (DICOM_MAX_ASSOCIATIONS), timeouts
(DICOM_TIMEOUT_SECONDS) and the size of one instance (DICOM_MAX_BYTES). Received data sets are spooled to
a temporary file, not held in memory, while they arrive; their pixels are decoded later, by the job,
within the same memory budget as an upload (cxr.imaging). A handler never raises: malformed data is
answered with a failure status and logged.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import Verification

from webapp.pacs.instances import Refused, read_header, screen
from webapp.pacs.queue import LocalQueue, RedisQueue

log = logging.getLogger("cxr.pacs")
# C-STORE statuses (PS3.4 B.2.3)
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000  # the instance is refused (not a CR/DX chest image, malformed)
PROCESSING_FAILURE = 0x0110


def allowed_titles(value: Any) -> list[str] | None:
    """DICOM_ALLOWED as a list of AE titles: a list, or a comma-separated string; None or empty: any."""
    if not value:
        return None
    titles = value.split(",") if isinstance(value, str) else list(value)
    return [title.strip() for title in titles if title.strip()] or None


def build_ae(config) -> AE:
    # pynetdicom's documented switch (pynetdicom._config): data sets are written to a temporary file as they
    # arrive instead of being gathered in memory, so that a large or endless one cannot exhaust memory.
    _config.STORE_RECV_CHUNKED_DATASET = True
    ae = AE(ae_title=config["DICOM_AE_TITLE"])
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(Verification)
    ae.require_calling_aet = allowed_titles(config.get("DICOM_ALLOWED")) or []
    ae.maximum_associations = int(config["DICOM_MAX_ASSOCIATIONS"])
    timeout = float(config["DICOM_TIMEOUT_SECONDS"])
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    return ae


def handle_store(event: evt.Event, queue: LocalQueue | RedisQueue, max_bytes: int) -> int:
    origin = str(event.assoc.requestor.ae_title).strip() or "unknown"
    try:
        size = event.dataset_path.stat().st_size
        if size > max_bytes:
            log.warning("Refused an instance from %s: %d bytes, more than the %d accepted", origin, size, max_bytes)
            return OUT_OF_RESOURCES
        data = event.dataset_path.read_bytes()  # the Part 10 file pynetdicom spooled (removed after this)
        screen(read_header(data))
        queue.put(data, origin)
    except Refused as exc:
        log.warning("Refused an instance from %s: %s", origin, exc)
        return CANNOT_UNDERSTAND
    except Exception:  # noqa: BLE001 (the listener keeps serving; the sender sees a failure)
        log.exception("Could not take an instance from %s", origin)
        return PROCESSING_FAILURE
    log.info("Queued an instance from %s", origin)
    return SUCCESS


def serve(app: Flask, queue: LocalQueue | RedisQueue, block: bool = True):
    """Listen on DICOM_HOST:DICOM_PORT; blocks unless `block` is false (then returns the server)."""
    config = app.config
    ae = build_ae(config)
    handlers = [(evt.EVT_C_STORE, handle_store, [queue, int(config["DICOM_MAX_BYTES"])])]
    address = (config["DICOM_HOST"], int(config["DICOM_PORT"]))
    log.info("DICOM listener %s on %s:%d", config["DICOM_AE_TITLE"], *address)
    return ae.start_server(address, block=block, evt_handlers=handlers)

"""A throwaway Orthanc PACS (Debian's `orthanc` and `orthanc-dicomweb`) for the PACS tests, on free
loopback ports with a temporary configuration and storage.

    with Orthanc(modalities={"cxr": ("CXR_TRIAGE", "127.0.0.1", 11112)}) as pacs:
        pacs.url, pacs.dicomweb, pacs.aet, pacs.dicom_port
        pacs.post("/instances", data)           # store a Part 10 file; Orthanc's JSON answer

Orthanc 1.10 has no bind-address setting: its HTTP server refuses clients other than the local machine
(RemoteAccessAllowed false) and its DICOM server accepts only the modalities declared here, from their
host (DicomAlwaysAllowStore/Echo off, DicomCheckModalityHost on).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tools.server import free_port

BINARY = "Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
AET = "ORTHANC"


class OrthancUnavailable(RuntimeError):
    """Orthanc or its DICOMweb plugin is not installed; the message says how to install them."""


def require() -> str:
    binary = shutil.which(BINARY) or shutil.which(BINARY, path="/usr/sbin")
    if binary is None or not DICOMWEB_PLUGIN.exists():
        raise OrthancUnavailable("Orthanc is not installed: apt-get install -y orthanc orthanc-dicomweb (make test)")
    return binary


class Orthanc:
    def __init__(self, modalities: dict[str, tuple[str, str, int]]) -> None:
        self.binary = require()
        self._tmp = tempfile.TemporaryDirectory(prefix="cxr-orthanc-")
        self.root = Path(self._tmp.name)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.dicomweb = f"{self.url}/dicom-web"
        self.aet = AET
        self.log = self.root / "orthanc.log"
        config = {
            "Name": "cxr-test",
            "StorageDirectory": str(self.root / "storage"),
            "IndexDirectory": str(self.root / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": AET,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "DicomCheckCalledAet": False,
            "DicomModalities": {name: list(value) for name, value in modalities.items()},
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False, "StudiesMetadata": "Full"},
            "StableAge": 1,
            "SaveJobs": False,
        }
        self.config = self.root / "orthanc.json"
        self.config.write_text(json.dumps(config))
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen(
            [self.binary, "--no-jobs", str(self.config)], stdout=self._log_file, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({self.process.returncode}): {self.log_text()[-2000:]}")
            try:
                self.get("/system")
                return
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not answer in {timeout:.0f} s: {self.log_text()[-2000:]}")

    def stop(self) -> None:
        # A throwaway instance: its storage is deleted with it (`__exit__`), so nothing needs Orthanc's clean
        # shutdown, which takes seconds.
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.process is not None:
            self._log_file.close()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def request(
        self, method: str, path: str, data: bytes | None = None, content_type: str = "application/dicom", check=True
    ):
        """Orthanc's answer (JSON decoded); with `check` false, an error answer's JSON body instead of an
        exception."""
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                body, kind = response.read(), response.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            if check:
                raise
            return json.loads(exc.read())  # Orthanc's error answers are JSON, labelled text/plain
        return json.loads(body) if kind == "application/json" else body

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, data: bytes, content_type: str = "application/dicom", check: bool = True):
        return self.request("POST", path, data, content_type, check)

    def __enter__(self) -> Orthanc:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
        self._tmp.cleanup()

"""Every kind of upload through the JSON API and the HTML form: the right status and message, and
nothing stored unless the upload was accepted (then exactly one row and its files: the film, heatmap and
thumbnail, and a grayscale DICOM's full-depth PNG)."""

from __future__ import annotations

import html
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxr.imaging import decode_image
from tests.accounts import clinician_client
from tests.upload_cases import CASES, Case, dicom, encode, gray, levels, mutations
from webapp.db import Prediction, db

STATUSES = {201, 302, 400, 413, 415, 422}  # 302: the form's redirect to the stored result


def stored(app) -> tuple[int, int]:
    """(prediction rows, files under the upload folder)."""
    with app.app_context():
        rows = db.session.scalar(db.select(db.func.count(Prediction.id)))
    folder = app.config["UPLOAD_FOLDER"]
    return rows, sum(p.is_file() for p in folder.rglob("*")) if folder.exists() else 0


def named_files(app) -> int:
    """How many files the prediction rows name (three each, four for a grayscale DICOM)."""
    with app.app_context():
        return sum(3 + (depth is not None) for depth in db.session.scalars(db.select(Prediction.depth_path)))


def post(client, route: str, data: bytes, filename: str):
    """(status, message or '') of one upload through the API or the upload page; a file sent before is
    analysed and stored again (force), as each upload here is a case of its own."""
    if route == "api":
        response = client.post("/api/v1/predictions?force=1", data={"file": (io.BytesIO(data), filename)})
        return response.status_code, (response.get_json() or {}).get("error", "")
    response = client.post("/", data={"files": [(io.BytesIO(data), filename)], "force": "y"})
    return response.status_code, html.unescape(response.get_data(as_text=True))


@pytest.fixture
def base(chest_png):
    """A chest X-ray the model's gate accepts: every accepted kind is made from it."""
    return decode_image(chest_png).pixels


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("route", ["api", "html"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_kind_of_upload(app, client, base, case: Case, route: str) -> None:
    status, message = post(client, route, case.make(base), case.filename)
    if case.status is None:
        assert status == (201 if route == "api" else 303), message
        depth = decode_image(case.make(base)).depth is not None  # a grayscale DICOM keeps its full depth
        assert stored(app) == (1, 4 if depth else 3) == (1, named_files(app))
    else:
        assert status == case.status
        assert case.message.lower() in message.lower()
        assert stored(app) == (0, 0)


@pytest.mark.parametrize("route", ["api", "html"])
def test_upload_over_the_size_limit(make_app, chest_png, route: str) -> None:
    app = make_app(MAX_CONTENT_LENGTH=len(chest_png) // 2)
    status, message = post(clinician_client(app), route, chest_png, "big.png")
    assert status == 413 and "larger than" in message
    assert stored(app) == (0, 0)


@pytest.mark.parametrize(
    ("route", "url", "message"),
    [
        ("api", "/api/v1/predictions", "multipart field 'file'"),
        ("html", "/", "Choose at least one image."),
    ],
)
def test_no_file(app, client, route: str, url: str, message: str) -> None:
    response = client.post(url, data={"reference": "x"})
    assert response.status_code == 400 and message in html.unescape(response.get_data(as_text=True))
    assert stored(app) == (0, 0)


@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(choice=st.data())
@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about the corrupt EXIF it skips
def test_mutated_uploads_never_fail_or_leave_anything_behind(app, client, base, chest_png, choice) -> None:
    seeds = {
        "png": chest_png,
        "jpeg": encode(gray(base), "JPEG", quality=90),
        "dicom": dicom(levels(base, 12), 12, WindowCenter=2048.0, WindowWidth=4096.0),
    }
    data = choice.draw(st.sampled_from(sorted(seeds)).flatmap(lambda name: mutations(seeds[name])))
    route = choice.draw(st.sampled_from(["api", "html"]))
    rows, files = stored(app)
    status, _ = post(client, route, data, "upload.bin")  # an unexpected exception propagates under TESTING
    assert status in STATUSES
    accepted = status in (201, 302)
    assert stored(app)[0] == (rows + 1 if accepted else rows)
    assert stored(app)[1] == named_files(app) >= files + 3 * accepted

"""The clinician's workflow around a result: priors (other studies with the same reference) and their
side-by-side view, the one-page PDF report, local-time markup, and the API's documentation page."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from webapp.db import AuditEvent, Prediction, db
from webapp.openapi import openapi_document


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def tags(html: str, tag: str, **wanted: str) -> list[dict[str, str | None]]:
    """The attributes of every `tag` element whose attributes include `wanted` (class_ for class; None for an
    attribute without a value)."""
    parser = _Tags()
    parser.feed(html)
    wanted = {key.rstrip("_"): value for key, value in wanted.items()}
    return [
        attrs
        for name, attrs in parser.tags
        if name == tag and all(k in attrs and attrs[k] == v for k, v in wanted.items())
    ]


def page_count(pdf: bytes) -> int:
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf))


def audit_actions(app, action: str) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(db.select(AuditEvent.target).where(AuditEvent.action == action)))


def test_priors_list_the_other_studies_with_the_same_reference_newest_first(client, upload):
    first, second, third = (upload(reference="MRN-7") for _ in range(3))
    other = upload(reference="MRN-70")  # a longer reference that starts the same: not the same patient
    html = client.get(f"/predictions/{third['id']}").get_data(as_text=True)
    links = [a["href"] for a in tags(html, "a", class_="compare")]
    assert links == [
        f"/predictions/{third['id']}/compare/{second['id']}",
        f"/predictions/{third['id']}/compare/{first['id']}",
    ]
    thumbnails = [img["src"] for img in tags(html, "img", class_="thumb")]
    assert thumbnails == [f"/predictions/{second['id']}/thumbnail.jpg", f"/predictions/{first['id']}/thumbnail.jpg"]
    assert len(tags(html, "section", id="priors")) == 1

    alone = client.get(f"/predictions/{other['id']}").get_data(as_text=True)
    assert tags(alone, "section", id="priors") and tags(alone, "a", class_="compare") == []
    assert "No other study has this reference." in alone


def test_no_priors_section_without_a_reference(client, upload):
    upload()
    unreferenced = upload()
    html = client.get(f"/predictions/{unreferenced['id']}").get_data(as_text=True)
    assert tags(html, "section", id="priors") == [] and tags(html, "a", class_="compare") == []


def test_compare_shows_two_viewers_and_records_both_views(app, client, upload):
    first, second = upload(reference="MRN-8"), upload(reference="MRN-8")
    response = client.get(f"/predictions/{second['id']}/compare/{first['id']}")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    viewers = tags(html, "div", class_="viewer")
    assert [v["data-film"] for v in viewers] == [
        f"/predictions/{second['id']}/image.png",
        f"/predictions/{first['id']}/image.png",
    ]
    assert [v["data-heat"] for v in viewers] == [
        f"/predictions/{second['id']}/heatmap.png",
        f"/predictions/{first['id']}/heatmap.png",
    ]
    assert tags(html, "script", src="/static/viewer.js")
    assert audit_actions(app, "view") == [f"prediction:{second['id']}", f"prediction:{first['id']}"]


def test_compare_refuses_what_cannot_be_compared(client, upload):
    first, second = upload(reference="MRN-9"), upload(reference="MRN-10")
    unreferenced = upload()
    for path, status, message in (
        (f"/predictions/{first['id']}/compare/{first['id']}", 400, "Choose two different studies to compare."),
        (
            f"/predictions/{first['id']}/compare/{second['id']}",
            400,
            "Only studies with the same reference can be compared side by side.",
        ),
        (
            f"/predictions/{unreferenced['id']}/compare/{first['id']}",
            400,
            "Only studies with the same reference can be compared side by side.",
        ),
        (f"/predictions/{first['id']}/compare/999999", 404, "Nothing was found at this address."),
    ):
        response = client.get(path)
        assert response.status_code == status, path
        assert f'<p class="error" role="alert">{message}</p>' in response.get_data(as_text=True), path


def test_report_pdf_is_one_a4_page_downloaded_and_audited(app, client, upload):
    prediction = upload(reference="MRN-11", note="cough")
    url = f"/predictions/{prediction['id']}/report.pdf"
    for reading in ("typical", "other"):  # readings with long comments and "$" signs still fit, as text
        saved = client.post(
            f"/predictions/{prediction['id']}/reviews",
            data={
                "reading": reading,
                "status": "final",
                "comment": "Costs $5 and $\\frac{1}{0}$ " + "very long comment " * 80,
            },
        )
        assert saved.status_code == 302
    response = client.get(url)
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    assert response.headers["Content-Disposition"] == f'attachment; filename="cxr-prediction-{prediction["id"]}.pdf"'
    assert response.data.startswith(b"%PDF") and page_count(response.data) == 1
    mediabox = re.search(rb"/MediaBox\s*\[\s*0 0 ([\d.]+) ([\d.]+)\s*\]", response.data)
    assert mediabox and (float(mediabox[1]), float(mediabox[2])) == pytest.approx((595.4, 841.7), abs=1)  # A4
    assert audit_actions(app, "export") == [f"prediction:{prediction['id']}"]
    html = client.get(f"/predictions/{prediction['id']}").get_data(as_text=True)
    assert tags(html, "a", href=url, download=None)  # linked from the result page


def test_report_pdf_of_unknown_prediction_and_signed_out(client, anon, upload):
    assert client.get("/predictions/999999/report.pdf").status_code == 404
    prediction = upload()
    response = anon.get(f"/predictions/{prediction['id']}/report.pdf")
    assert response.status_code == 302 and response.location.startswith("/login")


def test_timestamps_are_time_elements_in_utc(app, client, upload):
    prediction = upload()
    with app.app_context():
        created = db.session.get(Prediction, prediction["id"]).created_at
    html = client.get(f"/predictions/{prediction['id']}").get_data(as_text=True)
    iso = created.isoformat(timespec="seconds")
    assert f'<time datetime="{iso}Z" data-local>{created:%Y-%m-%d %H:%M} UTC</time>' in html


def test_api_documentation_lists_every_operation_of_the_openapi_document(client, anon, bundle):
    response = client.get("/docs/api")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    document = openapi_document(bundle.classes)
    documented = re.findall(r'<span class="method">(\w+)</span> <code class="api-path">([^<]+)</code>', html)
    expected = [(method, "/api/v1" + path) for path, item in document["paths"].items() for method in item]
    assert documented == expected
    for name in document["components"]["schemas"]:
        assert tags(html, "div", id=f"schema-{name}"), name
    assert tags(html, "a", href="/api/v1/openapi.json")
    assert '<th scope="row"><code>file</code> (required)</th>' in html  # the upload's body field
    assert anon.get("/docs/api").status_code == 302  # like every page, for signed-in users

"""The site check before go-live: a hospital's known-negative films through the model, compared with the
cross-validation estimate; stored as counts only, audited, and shown on the monitoring page."""

from __future__ import annotations

import io

import numpy as np
import pytest
from sqlalchemy import func, select

from tests.accounts import csrf_token
from tests.helpers import png_bytes
from webapp import audit, site_check
from webapp.db import AuditEvent, Prediction, SiteCheck, db

UNIFORM = png_bytes(np.full((320, 320), 128, dtype=np.uint8))  # decodes, and the gate refuses it ("almost uniform")


def test_command_counts_outcomes_stores_no_film_and_is_audited(runner, app, tmp_path, chest_png):
    folder = tmp_path / "negatives"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.png").write_bytes(chest_png)
    (folder / "sub" / "b.png").write_bytes(chest_png)
    (folder / "flat.png").write_bytes(UNIFORM)
    (folder / "notes.txt").write_text("not an image")
    (folder / ".hidden.png").write_bytes(chest_png)
    result = runner.invoke(args=["site-check", str(folder), "--label", "Room 2, 2019 normals"])
    assert result.exit_code == 0, result.output
    assert "4 films, 2 analysed, 1 refused by the gate, 1 unreadable" in result.output
    with app.app_context():
        row = db.session.scalars(select(SiteCheck)).one()
        assert (row.label, row.films, row.refused, row.unreadable, row.analysed) == ("Room 2, 2019 normals", 4, 1, 1, 2)
        assert row.covid + row.indeterminate + row.normal == 2
        assert sum(row.p_covid["histogram"]) == 2 and set(row.p_covid["quantiles"]) == {
            "0.05",
            "0.25",
            "0.5",
            "0.75",
            "0.95",
        }
        # Both films are the same: every quantile is their p(covid).
        assert len(set(row.p_covid["quantiles"].values())) == 1
        assert db.session.scalar(select(func.count(Prediction.id))) == 0
        event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == audit.SITE_CHECK)).one()
        assert event.target == f"site_check:{row.id}" and "4 films (2 analysed)" in event.detail
    assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").rglob("*.*"))


def test_command_refuses_an_empty_folder(runner, tmp_path):
    (tmp_path / "empty").mkdir()
    result = runner.invoke(args=["site-check", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "holds no files" in result.output


def test_admin_page_runs_a_check_and_the_monitoring_page_lists_it(app, admin_client, client, chest_png):
    page = admin_client.get("/admin/site-check")
    assert page.status_code == 200 and b"Run the site check" in page.data
    token = csrf_token(admin_client, "/admin/site-check")
    missing_label = admin_client.post(
        "/admin/site-check",
        data={"csrf_token": token, "label": "", "files": [(io.BytesIO(chest_png), "a.png")]},
        content_type="multipart/form-data",
    )
    assert missing_label.status_code == 400 and b"Say what these films are" in missing_label.data
    response = admin_client.post(
        "/admin/site-check",
        data={
            "csrf_token": token,
            "label": "CR room, 2019",
            "files": [(io.BytesIO(chest_png), "a.png"), (io.BytesIO(UNIFORM), "flat.png")],
        },
        content_type="multipart/form-data",
    )
    assert response.status_code == 303
    with app.app_context():
        row = db.session.scalars(select(SiteCheck)).one()
    assert response.headers["Location"].endswith(f"/admin/site-check/{row.id}")
    detail = admin_client.get(f"/admin/site-check/{row.id}")
    text = detail.get_data(as_text=True)
    assert detail.status_code == 200 and "Site check: CR room, 2019" in text
    assert "2 films" in text and "1 analysed" in text and "1 refused by the out-of-distribution gate" in text
    assert text.count("<meter") == site_check.HISTOGRAM_BINS
    assert client.get("/admin/site-check").status_code == 403
    assert client.get(f"/admin/site-check/{row.id}").status_code == 403
    monitoring = client.get("/monitoring").get_data(as_text=True)
    assert "CR room, 2019" in monitoring and "1 of 2" in monitoring
    listed = client.get("/api/v1/monitoring").get_json()["site_checks"]
    assert [(c["label"], c["films"], c["analysed"], c["refused"]) for c in listed] == [("CR room, 2019", 2, 1, 1)]


def test_rates_are_compared_with_the_cross_validation_estimate():
    card = {
        "version": "v1",
        "crossval": {
            "estimate": {
                "all": {
                    "specificity": 0.85,
                    "normal_called_normal": 0.70,
                    "indeterminate_normals": 0.15,
                    "interval": {
                        "specificity": [0.80, 0.90],
                        "normal_called_normal": [0.62, 0.78],
                        "indeterminate_normals": [0.10, 0.20],
                    },
                }
            }
        },
    }
    row = SiteCheck(
        label="x", model_version="v1", films=100, refused=0, unreadable=0, covid=40, indeterminate=15, normal=45
    )
    by_outcome = {c.outcome: c for c in site_check.compare(row, card)}
    covid = by_outcome["covid"]
    assert covid.rate == 0.40 and covid.expected == pytest.approx(0.15)
    assert covid.expected_interval == pytest.approx((0.10, 0.20))
    assert covid.verdict == "higher than expected"
    assert by_outcome["indeterminate"].verdict == "as expected"
    assert by_outcome["normal"].verdict == "lower than expected"
    low, high = by_outcome["normal"].interval
    assert low < 0.45 < high and high < 0.62
    # Another model's check is not compared with this card's estimate.
    other = SiteCheck(
        label="x", model_version="v0", films=1, refused=0, unreadable=0, covid=0, indeterminate=0, normal=1
    )
    assert {c.verdict for c in site_check.compare(other, card)} == {"no estimate"}


def test_monitoring_gives_the_monthly_p_covid_distribution(client, upload):
    first, second = upload(), upload()
    period = client.get("/api/v1/monitoring").get_json()["periods"][0]
    quantiles = period["p_covid_quantiles"]
    assert list(quantiles) == ["0.05", "0.25", "0.5", "0.75", "0.95"]
    expected = first["probabilities"]["covid"]
    assert second["probabilities"]["covid"] == expected
    assert all(abs(v - expected) < 1e-9 for v in quantiles.values())
    page = client.get("/monitoring").get_data(as_text=True)
    assert "Distribution of p(covid)" in page and f"{expected:.3f}" in page

"""The indeterminate outcome, end to end: the API, the result page, the history and its CSV."""

from __future__ import annotations

import csv
import io
import re

import pytest

from cxr.decision import INDETERMINATE, Rule


@pytest.fixture
def undecided(bundle, monkeypatch):
    """The loaded model with a rule that never calls covid and never calls a film normal either."""
    monkeypatch.setattr(bundle, "threshold", 1.01)
    monkeypatch.setattr(bundle, "rule", Rule(tuple(bundle.classes), 1.01, indeterminate_below=0.0))
    return bundle


def test_indeterminate_film_in_api_page_history_and_csv(undecided, client, upload):
    stored = upload(reference="IND-1")
    assert stored["decision"] == INDETERMINATE and stored["class"] == "normal"
    assert stored["indeterminate_reasons"] == ["near_threshold"]
    assert client.get(f"/api/v1/predictions/{stored['id']}").get_json()["decision"] == INDETERMINATE

    page = client.get(f"/predictions/{stored['id']}")
    assert page.status_code == 200
    heading = re.search(
        r'<span class="label label-[a-z]+" id="decision" data-decision="([a-z]+)">([^<]+)</span>',
        page.get_data(as_text=True),
    )
    assert heading is not None and heading.groups() == (INDETERMINATE, "Indeterminate — read it yourself")

    listed = client.get("/history?decision=indeterminate")
    assert listed.status_code == 200 and f'href="/predictions/{stored["id"]}"' in listed.get_data(as_text=True)
    other = client.get("/history?decision=covid")
    assert other.status_code == 200 and f'href="/predictions/{stored["id"]}"' not in other.get_data(as_text=True)
    assert client.get("/history?decision=maybe").status_code == 400

    api = client.get("/api/v1/predictions?decision=indeterminate").get_json()
    assert [item["id"] for item in api["items"]] == [stored["id"]]

    exported = client.get("/history.csv")
    assert exported.status_code == 200
    rows = list(csv.DictReader(io.StringIO(exported.get_data(as_text=True))))
    assert [(r["id"], r["decision"], r["predicted_class"]) for r in rows] == [
        (str(stored["id"]), INDETERMINATE, "normal")
    ]


def test_decision_is_the_class_when_the_rule_calls_it(bundle, upload):
    stored = upload()
    assert stored["decision"] in (stored["class"], INDETERMINATE)
    assert stored["decision"] != INDETERMINATE or stored["class"] != "covid"


def test_openapi_lists_the_decision(client, bundle):
    spec = client.get("/api/v1/openapi.json").get_json()
    schema = spec["components"]["schemas"]["Prediction"]
    assert "decision" in schema["required"]
    assert schema["properties"]["decision"]["enum"] == [*bundle.classes, INDETERMINATE]
    listing = spec["paths"]["/predictions"]["get"]["parameters"]
    assert {
        "name": "decision",
        "in": "query",
        "schema": {"type": "string", "enum": [*bundle.classes, INDETERMINATE]},
    } in listing

"""Two hosts: two gunicorn instances (the README's "Several hosts") on one PostgreSQL database and one
shared upload folder, with uploads and reads through both (tools/scaleout.py, the short version of
`python -m bench.scaleout`)."""

from __future__ import annotations

import pytest

from tools.scaleout import scale_out

pytestmark = pytest.mark.postgres


def test_two_instances_share_one_postgres_and_one_upload_folder(tmp_path, postgres_server, chest_png):
    postgres_server.create_database("scaleout")
    result = scale_out(
        tmp_path,
        postgres_server,
        [("chest.png", chest_png)],
        clients=4,
        duration=60,
        reads=0.3,
        workers=1,
        requests_per_client=4,
        database="scaleout",
    )
    assert result["failures"] == [] and set(result["statuses"]) <= {200, 201}, result["statuses"]
    assert all(result["created_by_instance"].values()), result["created_by_instance"]  # both took uploads
    assert result["rows_in_postgres"] == result["created_201"] > 0
    assert result["rows_by_instance"] == [result["created_201"]] * 2
    assert result["same_history"] and result["history_matches_201s"]
    assert result["cross_fetch_ok"] == result["cross_fetch"] > 0  # each serves the files the other stored
    assert result["storage_consistent"]
    assert [log["tracebacks"] + log["access_5xx"] for log in result["log"]] == [0, 0], result["log"]

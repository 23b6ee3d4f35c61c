"""The test helpers' own contract: a test whose data is absent skips on a workstation and fails under CI=true."""

from __future__ import annotations

import pytest

from tests import helpers


@pytest.mark.parametrize("ci, outcome", [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_absent_shared_films_skip_or_fail_in_ci(monkeypatch, tmp_path, ci, outcome):
    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(helpers, "SHARED_IMAGES", tmp_path / "no-shared")
    with pytest.raises(outcome, match="are absent"):
        helpers.shared_manifest()


def test_present_shared_films_are_found(monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "true")
    (tmp_path / "manifest.csv").write_text("file,label\n")
    monkeypatch.setattr(helpers, "SHARED_IMAGES", tmp_path)
    assert helpers.shared_manifest() == tmp_path / "manifest.csv"

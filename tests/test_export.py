"""A model directory is replaced whole: a reader sees the old model or the new one, never a mix."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.export import write_model_directory


def listing(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_the_new_directory_replaces_the_old_one_whole(tmp_path) -> None:
    target = tmp_path / "models"
    (target / "checkpoint").mkdir(parents=True)
    (target / "cnn.keras").write_text("old")
    (target / "stale_report.png").write_text("of the old model")
    (target / "checkpoint" / "progress.json").write_text("{}")
    target.chmod(0o750)

    def write(directory: Path) -> str:
        assert directory.parent == tmp_path and directory != target and not any(directory.iterdir())
        assert listing(target)["cnn.keras"] == "old", "the old model stays in place while the new one is written"
        (directory / "cnn.keras").write_text("new")
        return "version"

    assert write_model_directory(target, write) == "version"
    assert listing(target) == {"cnn.keras": "new"}
    assert target.stat().st_mode & 0o777 == 0o750
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"], "nothing left beside it"


def test_a_failed_write_leaves_the_old_model_as_it_was(tmp_path) -> None:
    target = tmp_path / "models"
    target.mkdir()
    (target / "cnn.keras").write_text("old")

    def write(directory: Path) -> None:
        (directory / "cnn.keras").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_model_directory(target, write)
    assert listing(target) == {"cnn.keras": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]


def test_a_first_model_directory_is_created(tmp_path) -> None:
    target = tmp_path / "out" / "models"
    write_model_directory(target, lambda directory: (directory / "card.json").write_text("{}"))
    assert listing(target) == {"card.json": "{}"}

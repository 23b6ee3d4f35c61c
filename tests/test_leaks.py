"""The leak guard: copies of one film (same bytes, or the same radiograph re-encoded and resized) are
found, kept in one split by the patient split, and a split that separates them is named pair by pair."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from tests.test_training import synthetic_xray
from training.data import UNSEEN, Sample, patient_split
from training.films import survey
from training.leaks import copies, crossing, describe, groups


def film(path: Path, seed: int) -> Path:
    synthetic_xray("normal", np.random.default_rng(seed)).save(path)
    return path


def sample(path: Path, patient: str, source: str = "src", label: str = "normal") -> Sample:
    return Sample(path, path.name, label, patient, source, path.name)


def test_same_bytes_and_a_resized_jpeg_are_copies_and_distinct_films_are_not(tmp_path) -> None:
    films = [film(tmp_path / f"f{i}.png", i) for i in range(6)]
    (tmp_path / "same.png").write_bytes(films[0].read_bytes())
    buffer = io.BytesIO()
    Image.open(films[1]).resize((230, 230)).save(buffer, "JPEG", quality=80)
    (tmp_path / "resized.jpg").write_bytes(buffer.getvalue())
    paths = [*films, tmp_path / "same.png", tmp_path / "resized.jpg"]
    pairs = copies(survey([sample(p, p.name) for p in paths]))
    assert [(i, j) for i, j, _ in pairs] == [(0, 6), (1, 7)]
    assert pairs[0][2] == "same file" and pairs[1][2].startswith("near-duplicate (")
    assert groups(pairs) == [[0, 6], [1, 7]]


def test_crossing_names_the_pairs_in_two_splits() -> None:
    samples = [sample(Path(f"f{i}.png"), f"p{i}") for i in range(4)]
    pairs = [(0, 1, "same file"), (2, 3, "near-duplicate (3 bits)")]
    split = {"train": [0, 2, 3], "test": [1]}
    assert crossing(pairs, split) == [(0, 1, "same file")]
    assert describe(crossing(pairs, split), samples, split) == "  f0.png (train) and f1.png (test): same file"
    assert crossing(pairs, {"train": [0, 2], "val": [3]}) == [(2, 3, "near-duplicate (3 bits)")]
    assert crossing(pairs, {"train": [0, 2, 3]}) == [], "a film in no split is not used"


def test_patient_split_keeps_copies_with_their_patients_in_one_split() -> None:
    # 40 patients of 2 films each; films 0 and 41 (patients 0 and 20) are one radiograph.
    samples = [sample(Path(f"f{i}.png"), f"p{i // 2}") for i in range(80)]
    plain = patient_split(samples, (0.5, 0.3, 0.2), seed=3)
    together = patient_split(samples, (0.5, 0.3, 0.2), seed=3, together=[[0, 41]])
    where = {i: name for name, indices in together.items() for i in indices}
    assert where[0] == where[1] == where[40] == where[41]
    assert sorted(sum(together.values(), [])) == list(range(80))
    moved = {i for name in plain for i in plain[name] if i not in together[name]}
    assert moved <= {0, 1, 40, 41}, "nothing but the copies' patients moves"
    assert patient_split(samples, (0.5, 0.3, 0.2), seed=3, together=[]) == plain


def test_copies_of_held_out_films_are_left_out_of_training() -> None:
    samples = [sample(Path(f"f{i}.png"), f"p{i}") for i in range(30)]
    samples.append(sample(Path("held.png"), "h0", source="held"))
    split = patient_split(samples, (0.7, 0.2, 0.1), seed=1, holdout_sources=["held"], together=[[4, 30]])
    assert split[UNSEEN] == [30]
    assert 4 not in sum(split.values(), [])
    assert len(sum(split.values(), [])) == 30

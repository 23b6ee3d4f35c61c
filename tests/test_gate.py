"""The OOD gate: non-X-rays are refused, real chest X-rays pass.

The image checks are tested without a model (a stand-in prediction at distance 0), with limits fitted
as training fits them: on synthetic chests, or on the shared X-rays of a training split, and then
judged on films they were not fitted on; the whole gate with the model in models/. Each is skipped
where what it needs is absent (failed under CI=true).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from cxr.bundle import ModelOutput
from cxr.gate import assess, percentiles
from cxr.gate_statistics import REFUSED_SHARE, FilmStatistics, GateLimits, box_histograms, histogram, measure
from cxr.imaging import DecodedImage, decode_image
from tests.helpers import missing, png_bytes, shared_manifest, synthetic_chest
from tools.nonxray import colour_photos, documents, gray_photos, noise, screenshots
from training.data import KNOWN_LABELS, load_dataset, patient_split

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "models"
SHARED = ROOT.parent / "shared" / "data" / "cxr"


def stand_in(score: float = 0.0) -> ModelOutput:
    """A prediction whose only relevant part is the out-of-distribution score."""
    return ModelOutput(
        label="normal",
        probabilities={},
        decision="normal",
        indeterminate_reasons=(),
        cnn_probabilities={},
        threshold=None,
        heatmap=np.zeros((1, 1)),
        box=(0, 1, 0, 1),
        features=np.zeros(64),
        ood_score=score,
        model_version="test",
    )


def shared_split() -> tuple[list[Path], list[Path]]:
    """(training films, test films) of the shared X-rays in the default split of `training.train`."""
    samples, _ = load_dataset(shared_manifest(), KNOWN_LABELS)
    split = patient_split(samples, (0.7, 0.2, 0.1), seed=42)
    return [samples[i].path for i in split["train"]], [samples[i].path for i in split["test"]]


def spread(items: list, count: int) -> list:
    return items[:: max(1, len(items) // count)][:count]


def statistics_of(paths: list[Path]) -> list[FilmStatistics]:
    return [measure(decode_image(p.read_bytes())) for p in paths]


@pytest.fixture(scope="module")
def synthetic_limits() -> GateLimits:
    """Limits fitted on synthetic chests (near copies of one template, so the limits are tight): what
    the image checks refuse, without the shared data."""
    return GateLimits.fit([measure(decode_image(png_bytes(synthetic_chest(seed)))) for seed in range(12)])


@pytest.fixture(scope="module")
def fitted() -> tuple[GateLimits, list[Path]]:
    """Limits fitted on 400 training films of the shared X-rays, and the test films they never saw."""
    train, test = shared_split()
    return GateLimits.fit(statistics_of(spread(train, 400))), test


# kind → (the file, the check that must refuse it)
OBVIOUS = {
    "colour-photo": (lambda: next(colour_photos())[1], "colour"),
    "text-page": (lambda: next(documents(count=1))[1], "edges"),
    "screenshot": (lambda: next(screenshots(count=1))[1], "flat-areas"),
    "uniform-noise": (lambda: dict(noise())["uniform.png"], "edges"),
    "grayscale-photo": (lambda: next(gray_photos())[1], "layout"),
}


@pytest.mark.parametrize("shape", [(1, 1), (3, 2), (320, 300)])
def test_percentiles_from_the_histogram_equal_numpys(shape) -> None:
    gray = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    for qs in ((5, 95), (0, 50, 100)):
        np.testing.assert_allclose(percentiles(histogram(gray), qs), np.percentile(gray, qs) / 255, atol=1e-12)


@pytest.mark.parametrize("kind", sorted(OBVIOUS))
def test_image_checks_refuse_obvious_non_xrays(kind: str, synthetic_limits) -> None:
    make, check = OBVIOUS[kind]
    result = assess(decode_image(make()), stand_in(), synthetic_limits)
    assert not result.accepted and check in result.failed
    assert len(result.reasons) == len(result.failed)


def test_limits_refuse_the_chosen_share_of_the_films_they_are_fitted_on() -> None:
    rng = np.random.default_rng(0)
    statistics = [FilmStatistics(rng.uniform(0, 0.1), rng.uniform(0, 0.05), rng.random((8, 8))) for _ in range(2000)]
    limits = GateLimits.fit(statistics)
    assert np.mean([s.flat_fraction > limits.max_flat_fraction for s in statistics]) == pytest.approx(REFUSED_SHARE)
    assert np.mean([s.edge_strength > limits.max_edge_strength for s in statistics]) == pytest.approx(REFUSED_SHARE)
    layouts = [limits.layout(s) for s in statistics]
    assert np.mean([x < limits.min_chest_layout for x in layouts]) == pytest.approx(REFUSED_SHARE)
    np.testing.assert_allclose(limits.mean_chest, np.mean([s.blocks for s in statistics], axis=0))


def test_limits_survive_the_file_they_ship_in(synthetic_limits, tmp_path) -> None:
    synthetic_limits.save(tmp_path / "gate.json")
    loaded = GateLimits.load(tmp_path / "gate.json")
    np.testing.assert_allclose(loaded.mean_chest, synthetic_limits.mean_chest, atol=1e-6)
    assert (loaded.max_flat_fraction, loaded.max_edge_strength, loaded.min_chest_layout, loaded.films) == (
        synthetic_limits.max_flat_fraction,
        synthetic_limits.max_edge_strength,
        synthetic_limits.min_chest_layout,
        12,
    )


def test_image_checks_pass_real_xrays_they_were_not_fitted_on(fitted) -> None:
    limits, test = fitted
    failed = {p.name: assess(decode_image(p.read_bytes()), stand_in(), limits).failed for p in spread(test, 40)}
    assert not {name: checks for name, checks in failed.items() if checks}


def test_upside_down_xray_is_refused_by_its_layout(fitted) -> None:
    limits, test = fitted
    image = decode_image(test[0].read_bytes())
    upside_down = DecodedImage(np.ascontiguousarray(image.pixels[::-1]), image.format)
    assert "layout" in assess(upside_down, stand_in(), limits).failed


def test_feature_distance_over_its_threshold_refuses_with_the_score(fitted) -> None:
    limits, test = fitted
    result = assess(decode_image(test[0].read_bytes()), stand_in(score=1.7), limits)
    assert result.failed == ("features",) and result.score == pytest.approx(1.7)
    assert "1.70" in result.reasons[0]


@pytest.fixture(scope="module")
def bundle():
    if not (MODEL_DIR / "model_card.json").is_file():
        missing(f"no trained model in {MODEL_DIR} (train one with python -m training.train)")
    from cxr.bundle import ModelBundle

    return ModelBundle(MODEL_DIR)


@pytest.mark.slow
def test_model_gate_refuses_a_colour_photo_and_a_text_page(bundle) -> None:
    for name, data in (next(colour_photos()), next(documents(count=1))):
        decoded = decode_image(data)
        result = assess(decoded, bundle.predict(decoded.pixels), bundle.gate)
        assert not result.accepted, name
        assert result.reasons


@pytest.mark.slow
def test_model_gate_accepts_held_out_xrays(bundle) -> None:
    split_file = MODEL_DIR / "split.csv"
    shared_manifest()  # skipped, or failed under CI=true, without the shared films
    with split_file.open(newline="") as handle:  # the model's own test split: films its gate was not fitted on
        test = [SHARED / row["file"] for row in csv.DictReader(handle) if row["split"] == "test"]
    results = {}
    for path in spread(test, 20):
        decoded = decode_image(path.read_bytes())
        results[path.name] = assess(decoded, bundle.predict(decoded.pixels), bundle.gate)
    refused = {name: r.failed for name, r in results.items() if not r.accepted}
    assert len(refused) <= 2, refused  # the gate is calibrated to pass ≥ 99%; 2 of 20 is already far off


@pytest.mark.parametrize("box", [(0, 300, 0, 200), (10, 290, 7, 193), (0, 150, 100, 200), (299, 300, 0, 1)])
def test_box_histograms_count_the_box_and_the_whole_film(box):
    gray = np.random.default_rng(5).integers(0, 256, (300, 200), dtype=np.uint8)
    top, bottom, left, right = box
    inside, whole = box_histograms(gray, box)
    np.testing.assert_array_equal(inside, np.bincount(gray[top:bottom, left:right].ravel(), minlength=256))
    np.testing.assert_array_equal(whole, np.bincount(gray.ravel(), minlength=256))
    np.testing.assert_array_equal(histogram(gray), whole)

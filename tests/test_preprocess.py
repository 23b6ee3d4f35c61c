"""The shared preprocessing: histogram equalisation gives exactly what its textbook definition gives."""

from __future__ import annotations

import numpy as np
import pytest

from cxr.preprocess import PARAMETERS, equalise, preprocess
from tests.helpers import synthetic_chest


def textbook_equalise(image: np.ndarray) -> np.ndarray:
    """np.histogram and np.interp, as the model was first trained with."""
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low)
    hist, edges = np.histogram(scaled, bins=int(PARAMETERS["equalisation_bins"]), range=(0.0, 1.0))
    cdf = np.cumsum(hist).astype(np.float64)
    cdf = (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1.0)
    return np.interp(scaled, edges[1:], cdf).astype(np.float32)


@pytest.mark.parametrize(
    "image",
    [
        np.random.default_rng(0).random((128, 128), dtype=np.float32),
        (np.random.default_rng(1).integers(0, 256, (128, 96)) / 255).astype(np.float32),  # many ties, bin edges
        np.linspace(0, 1, 128 * 128, dtype=np.float32).reshape(128, 128),
        np.array([[0.2, 0.2], [0.2, 0.9]], dtype=np.float32),  # two values: one bin each end
        synthetic_chest(3, 128).astype(np.float32) / 255,
    ],
    ids=["random", "8-bit levels", "ramp", "two values", "chest"],
)
def test_equalise_matches_histogram_and_interp(image):
    fast = equalise(image)
    assert fast.dtype == np.float32 and fast.shape == image.shape
    np.testing.assert_array_equal(fast, textbook_equalise(image))
    assert fast.min() == 0.0 and fast.max() == 1.0


def test_a_flat_image_equalises_to_zeros():
    assert not equalise(np.full((16, 16), 0.4, np.float32)).any()


def test_preprocess_gives_the_model_input_and_its_crop_box():
    pixels = synthetic_chest(0, 320).astype(np.float32) / 255
    prepared = preprocess(pixels, 128)
    assert prepared.tensor.shape == (128, 128, 1) and prepared.tensor.dtype == np.float32
    top, bottom, left, right = prepared.box
    assert 0 <= top < bottom <= 320 and 0 <= left < right <= 320


def full_resolution(monkeypatch) -> None:
    import cxr.preprocess

    monkeypatch.setattr(cxr.preprocess, "working_frame", lambda pixels, size: (pixels, 1))


def test_films_under_eight_times_the_input_size_are_not_reduced(monkeypatch):
    pixels = synthetic_chest(2, 1000).astype(np.float32) / 255  # 1000 < 8 × 128: the whole film is used
    reduced = preprocess(pixels, 128)
    full_resolution(monkeypatch)
    full = preprocess(pixels, 128)
    assert reduced.box == full.box and np.array_equal(reduced.tensor, full.tensor)


def test_a_detector_sized_film_is_preprocessed_from_its_working_frame(monkeypatch):
    from cxr.preprocess import working_frame

    pixels = synthetic_chest(2, 2048).astype(np.float32) / 255
    frame, factor = working_frame(pixels, 128)
    assert factor == 4 and frame.shape == (512, 512)
    np.testing.assert_allclose(frame[10, 20], pixels[40:44, 80:84].mean(), rtol=1e-5)  # each block's mean
    reduced = preprocess(pixels, 128)
    full_resolution(monkeypatch)
    full = preprocess(pixels, 128)
    assert reduced.tensor.shape == full.tensor.shape == (128, 128, 1)
    assert all(abs(a - b) <= factor for a, b in zip(reduced.box, full.box)), (reduced.box, full.box)
    assert np.abs(reduced.tensor - full.tensor).mean() < 0.005  # 0.003 here; bench.large_film_agreement: decisions


@pytest.mark.parametrize("shape,factor", [((2048, 2048), 4), ((1537, 1030), 2), ((2100, 2050), 4), ((700, 650), 17)])
def test_block_means_of_8_bit_levels_are_pillows_reduce_of_the_float_film(shape, factor):
    from PIL import Image

    from cxr.preprocess import block_means

    levels = np.random.default_rng(factor).integers(0, 256, shape, dtype=np.uint8)
    pixels = levels.astype(np.float32) / 255
    expected = np.asarray(Image.fromarray(pixels, mode="F").reduce(factor))  # partial edge blocks included
    means = block_means(levels, factor) / np.float32(255)
    assert means.shape == expected.shape and means.dtype == np.float32
    np.testing.assert_allclose(means, expected, rtol=0, atol=1e-6)  # 17² × 255 needs 32-bit sums


@pytest.mark.parametrize("side", [320, 2048])
def test_an_8_bit_frame_is_preprocessed_as_its_float_pixels(side):
    levels = synthetic_chest(4, side)
    from_levels = preprocess(levels, 128)
    from_pixels = preprocess(levels.astype(np.float32) / 255, 128)
    assert from_levels.box == from_pixels.box
    if side < 8 * 128:  # not reduced: the very same floats
        np.testing.assert_array_equal(from_levels.tensor, from_pixels.tensor)
    else:  # reduced in integers: block means within float rounding, so at most a bin of equalisation apart
        assert np.abs(from_levels.tensor - from_pixels.tensor).max() < 2e-3

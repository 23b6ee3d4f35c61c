"""The Grad-CAM overlay: the film outside the crop box, matplotlib's 'jet' blended inside it."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps

from cxr.imaging import to_uint8
from cxr.overlay import heatmap_full_size, overlay_rgb


def reference_overlay(pixels, heatmap, box, alpha=0.45):
    """The straightforward full-image computation the fast version must match."""
    full = heatmap_full_size(heatmap, box, pixels.shape)
    colours = colormaps["jet"](full)[..., :3]
    weight = alpha * full[..., np.newaxis] ** 0.5
    base = np.repeat(pixels[..., np.newaxis], 3, axis=2)
    return to_uint8(base * (1.0 - weight) + colours * weight)


@pytest.mark.parametrize("box", [(10, 290, 20, 300), (0, 320, 0, 320), (100, 101, 50, 60)])
def test_matches_the_reference_computation(box):
    rng = np.random.default_rng(1)
    pixels = rng.random((320, 330), dtype=np.float32)
    heatmap = np.clip(rng.random((16, 16), dtype=np.float32) * 1.2, 0, 1)
    heatmap[0, 0], heatmap[1, 1] = 1.0, 0.0
    fast, slow = overlay_rgb(pixels, heatmap, box), reference_overlay(pixels, heatmap, box)
    assert fast.shape == slow.shape == (320, 330, 3) and fast.dtype == np.uint8
    assert np.abs(fast.astype(int) - slow.astype(int)).max() <= 1  # float32 vs float64 rounding only
    assert (fast == overlay_rgb(pixels, heatmap, box, gray=to_uint8(pixels))).all()


def test_outside_the_box_is_the_film():
    pixels = np.linspace(0, 1, 200 * 200, dtype=np.float32).reshape(200, 200)
    out = overlay_rgb(pixels, np.ones((8, 8), np.float32), (50, 150, 60, 160))
    gray = to_uint8(pixels)
    assert (out[:50] == gray[:50, :, np.newaxis]).all() and (out[:, :60] == gray[:, :60, np.newaxis]).all()
    assert (out[60:140, 70:150] != gray[60:140, 70:150, np.newaxis]).any()
    assert (overlay_rgb(pixels, np.ones((8, 8), np.float32), (5, 5, 10, 10)) == gray[..., np.newaxis]).all()  # empty box


@pytest.mark.parametrize("shape", [(320, 305), (1, 1), (1, 500), (400, 1), (320, 305, 3), (1, 7, 3), (9, 1, 3)])
def test_png_bytes_is_lossless(shape):
    import io

    from PIL import Image

    from cxr.overlay import png_bytes

    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    decoded = Image.open(io.BytesIO(png_bytes(array)))
    decoded.load()
    assert decoded.format == "PNG" and decoded.mode == ("L" if len(shape) == 2 else "RGB")
    assert (np.asarray(decoded) == array).all()


def test_png_bytes_leaves_other_arrays_to_pillow():
    import io

    from PIL import Image

    from cxr.overlay import png_bytes

    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = 255
    assert np.asarray(Image.open(io.BytesIO(png_bytes(rgba)))).shape == (4, 5, 4)

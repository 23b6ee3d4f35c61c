"""The Grad-CAM overlay: the film outside the crop box, matplotlib's 'jet' blended inside it."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps

from cxr.imaging import DecodedImage, decode_image, to_uint8
from cxr.overlay import (
    FEATHER,
    OVERLAY_MAX_SIDE,
    display_overlay,
    film_png,
    heatmap_full_size,
    overlay_rgb,
    png_bytes,
    stored_files,
)


def feather(box, shape):
    """The fade towards the crop box's edges, per pixel of the full image (0 outside the box)."""
    top, bottom, left, right = box
    width = max(1.0, FEATHER * min(bottom - top, right - left))
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    distance_y = np.minimum(y - top, bottom - y)
    distance_x = np.minimum(x - left, right - x)

    def smoothstep(d):
        t = np.clip(d / width, 0.0, 1.0)
        return t * t * (3 - 2 * t)

    return smoothstep(distance_y) * smoothstep(distance_x)


def reference_overlay(pixels, heatmap, box, alpha=0.45):
    """The straightforward full-image computation the fast version must match."""
    full = heatmap_full_size(heatmap, box, pixels.shape)
    colours = colormaps["jet"](full)[..., :3]
    weight = alpha * (full**0.5 * feather(box, pixels.shape))[..., np.newaxis]
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
    # An 8-bit film, colour table and blending mask against float64 throughout: rounding only.
    assert np.abs(fast.astype(int) - slow.astype(int)).max() <= 1
    assert (fast == overlay_rgb(pixels, heatmap, box, gray=to_uint8(pixels))).all()


def test_outside_the_box_is_the_film():
    pixels = np.linspace(0, 1, 200 * 200, dtype=np.float32).reshape(200, 200)
    out = overlay_rgb(pixels, np.ones((8, 8), np.float32), (50, 150, 60, 160))
    gray = to_uint8(pixels)
    assert (out[:50] == gray[:50, :, np.newaxis]).all() and (out[:, :60] == gray[:, :60, np.newaxis]).all()
    assert (out[60:140, 70:150] != gray[60:140, 70:150, np.newaxis]).any()
    empty_box = (5, 5, 10, 10)
    assert (overlay_rgb(pixels, np.ones((8, 8), np.float32), empty_box) == gray[..., np.newaxis]).all()


def test_the_colour_fades_in_from_the_box_edges_without_a_hard_rectangle():
    pixels = np.full((200, 200), 0.5, np.float32)
    box = (40, 160, 20, 180)
    out = overlay_rgb(pixels, np.ones((8, 8), np.float32), box).astype(int)
    tint = np.abs(out - out[..., :1]).max(axis=2) + np.abs(out[..., 0] - 128)  # how far from the gray film
    row = tint[100, 20:100]  # from the left edge of the box to its middle
    assert row[0] <= 2  # next to the edge: almost the film itself
    assert (np.diff(row) >= 0).all()  # rising without a step ...
    assert np.abs(np.diff(row)).max() <= 0.25 * row[-1]  # ... and smoothly
    assert row[-1] >= 40 and row[-1] == tint[100, 100]  # full strength well inside the box
    column = tint[40:100, 100]  # and the same from the top edge
    assert column[0] <= 2 and (np.diff(column) >= 0).all()


@pytest.mark.parametrize("shape", [(320, 305), (1, 1), (1, 500), (400, 1), (320, 305, 3), (1, 7, 3), (9, 1, 3)])
def test_png_bytes_is_lossless(shape):
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, shape, dtype=np.uint8)
    decoded = Image.open(io.BytesIO(png_bytes(array)))
    decoded.load()
    assert decoded.format == "PNG" and decoded.mode == ("L" if len(shape) == 2 else "RGB")
    assert (np.asarray(decoded) == array).all()


def test_png_bytes_leaves_other_arrays_to_pillow():
    import io

    from PIL import Image

    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = 255
    assert np.asarray(Image.open(io.BytesIO(png_bytes(rgba)))).shape == (4, 5, 4)


def test_large_films_get_an_overlay_of_display_size_small_ones_their_own():
    heat = np.zeros((8, 8), np.float32)
    heat[2:6, 2:6] = 1.0
    small = np.full((320, 300), 0.5, np.float32)
    assert (display_overlay(small, heat, (0, 320, 0, 300)) == overlay_rgb(small, heat, (0, 320, 0, 300))).all()
    film = np.full((2400, 2000), 0.5, np.float32)
    box = (400, 2000, 200, 1800)  # the crop the model saw, in film pixels
    out = display_overlay(film, heat, box)
    assert out.shape == (800, 667, 3)  # reduced 3 × 3 → 1: the long side at most OVERLAY_MAX_SIDE, over half of it
    assert OVERLAY_MAX_SIDE / 2 < 800 <= OVERLAY_MAX_SIDE
    coloured = np.argwhere((out != out[..., :1]).any(axis=2))  # where the colour map shows
    scale = 1 / 3
    assert coloured[:, 0].min() >= 400 * scale - 1 and coloured[:, 0].max() <= 2000 * scale + 1
    assert coloured[:, 1].min() >= 200 * scale - 1 and coloured[:, 1].max() <= 1800 * scale + 1


def test_stored_files_keep_the_film_at_full_size_and_lossless():
    import io

    from PIL import Image

    film = np.random.default_rng(0).random((1500, 1200), dtype=np.float32)
    heat = np.zeros((8, 8), np.float32)
    heat[3:5, 3:5] = 1.0
    files = stored_files(DecodedImage(film, "TIFF"), heat, (0, 1500, 0, 1200), 256)
    opened = {kind: Image.open(io.BytesIO(data)) for kind, data in files.items()}
    assert {kind: image.size for kind, image in opened.items()} == {
        "image": (1200, 1500),
        "overlay": (600, 750),
        "thumbnail": (205, 256),
    }
    formats = {kind: image.format for kind, image in opened.items()}
    assert formats == {"image": "PNG", "overlay": "JPEG", "thumbnail": "JPEG"}
    assert (np.asarray(opened["image"]) == to_uint8(film)).all()
    # The JPEG overlay stays close to the exact overlay: a colour map, not a diagnostic image.
    exact = display_overlay(film, heat, (0, 1500, 0, 1200)).astype(int)
    assert np.abs(np.asarray(opened["overlay"], dtype=int) - exact).mean() < 8


def _png_with_metadata(gray: np.ndarray, **options) -> bytes:
    import io

    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Patient", "Doe^Jane")
    info.add_itxt("Comment", "MRN 12345", zip=True)
    exif = Image.Exif()
    exif[0x010E] = "Jane Doe, born 1970"  # ImageDescription
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="PNG", pnginfo=info, exif=exif, icc_profile=b"\0" * 200, **options)
    return buffer.getvalue()


def _chunk_types(png: bytes) -> list[bytes]:
    import struct

    kinds, position = [], 8
    while position < len(png):
        length, kind = struct.unpack(">I4s", png[position : position + 8])
        kinds.append(kind)
        position += 12 + length
    return kinds


def test_an_uploaded_grayscale_png_is_kept_as_it_came_without_its_metadata():
    import io

    from PIL import Image

    gray = np.random.default_rng(2).integers(0, 256, (300, 280), dtype=np.uint8)
    upload = _png_with_metadata(gray, compress_level=9)
    assert {b"tEXt", b"iTXt", b"eXIf", b"iCCP"} <= set(_chunk_types(upload))
    image = decode_image(upload)
    assert image.source_png == upload
    stored = film_png(image)
    assert set(_chunk_types(stored)) == {b"IHDR", b"IDAT", b"IEND"}
    assert b"Doe" not in stored and b"12345" not in stored
    assert stored != png_bytes(gray)  # the upload's own compressed data, not compressed again
    decoded = Image.open(io.BytesIO(stored))
    decoded.load()  # checks every chunk's checksum
    assert decoded.mode == "L" and (np.asarray(decoded) == gray).all() and (image.gray == gray).all()


@pytest.mark.parametrize("kind", ["16-bit", "rgb", "rotated", "transparent", "jpeg"])
def test_other_uploads_get_their_film_encoded_from_the_decoded_pixels(kind):
    import io

    from PIL import Image

    gray = np.random.default_rng(3).integers(0, 256, (200, 240), dtype=np.uint8)
    picture, options = Image.fromarray(gray), {}
    if kind == "16-bit":
        picture = Image.fromarray(gray.astype(np.uint16) * 257)
    elif kind == "rgb":
        picture = picture.convert("RGB")
    elif kind == "rotated":
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90° clockwise to view
        options["exif"] = exif
    elif kind == "transparent":
        options["transparency"] = 0
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG" if kind == "jpeg" else "PNG", **options)
    image = decode_image(buffer.getvalue())
    assert image.source_png is None
    stored = Image.open(io.BytesIO(film_png(image)))
    assert stored.format == "PNG" and (np.asarray(stored) == image.gray).all()

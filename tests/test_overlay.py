"""The Grad-CAM overlay: the film outside the crop box, matplotlib's 'jet' blended inside it; the small heatmap
stored for each prediction, and the overlay rendered from it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from cxr.imaging import DecodedImage, decode_image, to_uint8
from cxr.overlay import (
    FEATHER,
    HEATMAP_SIDE,
    OVERLAY_MAX_SIDE,
    display_film,
    film_png,
    heatmap_full_size,
    heatmap_png,
    overlay_from_files,
    overlay_rgb,
    png_bytes,
    stored_files,
)
from tests.helpers import SHARED_IMAGES, shared_manifest


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


def display_overlay(gray: np.ndarray, heatmap: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The overlay as every upload stored it before the heatmap was: `overlay_rgb` on the film reduced for
    display (`display_film`), the crop box reduced with it."""
    small = np.asarray(display_film(Image.fromarray(gray)))
    factor = -(-max(gray.shape) // OVERLAY_MAX_SIDE)
    box = tuple(round(v / factor) for v in box)
    return overlay_rgb(small.astype(np.float32) / np.float32(255), heatmap, box, gray=small)


def stored(tmp_path: Path, gray: np.ndarray, heatmap: np.ndarray, box: tuple[int, int, int, int]) -> tuple[Path, Path]:
    """The film PNG and heatmap PNG of a prediction, written as an upload writes them."""
    film, heat = tmp_path / "film.png", tmp_path / "film-heat.png"
    film.write_bytes(png_bytes(gray))
    heat.write_bytes(heatmap_png(heatmap, box, gray.shape))
    return film, heat


def decoded_png(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize(
    ("shape", "box", "size"),
    [
        ((2048, 2048), (100, 1950, 160, 1900), (HEATMAP_SIDE, HEATMAP_SIDE)),
        ((1500, 1200), (0, 1500, 0, 1200), (102, HEATMAP_SIDE)),  # the film's aspect ratio, (width, height)
        ((60, 90), (5, 55, 10, 80), (90, 60)),  # smaller than HEATMAP_SIDE: the film's own size
    ],
)
def test_the_heatmap_file_is_small_rgb_with_strength_and_weight_inside_the_box(shape, box, size):
    rng = np.random.default_rng(2)
    heatmap = rng.random((8, 8), dtype=np.float32)
    image = decoded_png(heatmap_png(heatmap, box, shape))
    assert image.format == "PNG" and image.mode == "RGB" and image.size == size  # no alpha channel
    rgb = np.asarray(image).astype(int)
    # Each stored pixel holds the film-sized map where its centre falls on the film.
    centres_y, centres_x = ((np.arange(n) + 0.5) * film / n for n, film in zip(rgb.shape[:2], shape))
    on_film = np.ix_(centres_y.astype(int), centres_x.astype(int))
    strength = heatmap_full_size(heatmap, box, shape)[on_film]  # 0 outside the box
    weight = (np.sqrt(heatmap_full_size(heatmap, box, shape)) * feather(box, shape))[on_film]
    assert np.abs(rgb[..., 0] - np.rint(strength * 255)).max() <= 2
    assert np.abs(rgb[..., 1] - np.rint(weight * 255)).max() <= 2
    assert (rgb[..., 2] == 0).all()
    top, bottom, left, right = box
    inside = np.outer((centres_y > top) & (centres_y < bottom), (centres_x > left) & (centres_x < right))
    assert (rgb[~inside] == 0).all() and rgb[inside, 0].max() > 200 and rgb[inside, 1].max() > 200


def test_an_empty_box_gives_an_empty_heatmap():
    image = decoded_png(heatmap_png(np.ones((8, 8), np.float32), (40, 40, 10, 90), (100, 100)))
    assert image.size == (100, 100) and not np.asarray(image).any()


def real_film() -> np.ndarray:
    """A shared film as 8-bit gray (the shared films are needed: `missing` without them)."""
    shared_manifest()
    return to_uint8(decode_image(sorted(SHARED_IMAGES.glob("*.png"))[0].read_bytes()).pixels)


@pytest.mark.parametrize("side", [None, 2048])
def test_the_overlay_rendered_from_the_files_looks_like_the_stored_one_did(tmp_path, bundle, side):
    """On a real film and its real Grad-CAM, at its own size and scaled to a 2048 px detector film: the
    overlay rendered from the film and the small heatmap is within a few levels of the one every upload
    rendered and stored before, over the whole film."""
    gray = real_film()
    if side:
        gray = np.asarray(Image.fromarray(gray).resize((side, side), Image.BICUBIC))
    output = bundle.predict(gray.astype(np.float32) / np.float32(255))
    rendered = overlay_from_files(*stored(tmp_path, gray, output.heatmap, output.box))
    before = display_overlay(gray, output.heatmap, output.box)
    assert rendered.shape == before.shape and rendered.dtype == np.uint8
    assert max(rendered.shape[:2]) <= OVERLAY_MAX_SIDE
    difference = np.abs(rendered.astype(int) - before.astype(int))
    assert (before != before[..., :1]).any(axis=2).mean() > 0.05  # the map shows on the film
    assert difference.mean() < 1 and np.percentile(difference, 99.9) <= 6 and difference.max() <= 16


def test_large_films_get_an_overlay_of_display_size_small_ones_their_own(tmp_path):
    heat = np.zeros((8, 8), np.float32)
    heat[2:6, 2:6] = 1.0
    small = np.full((320, 300), 128, np.uint8)
    assert overlay_from_files(*stored(tmp_path, small, heat, (0, 320, 0, 300))).shape == (320, 300, 3)
    film = np.full((2400, 2000), 128, np.uint8)
    box = (400, 2000, 200, 1800)  # the crop the model saw, in film pixels
    out = overlay_from_files(*stored(tmp_path, film, heat, box))
    assert out.shape == (800, 667, 3)  # reduced 3 × 3 → 1: the long side at most OVERLAY_MAX_SIDE, over half of it
    assert OVERLAY_MAX_SIDE / 2 < 800 <= OVERLAY_MAX_SIDE
    coloured = np.argwhere((out != out[..., :1]).any(axis=2))  # where the colour map shows
    scale, cell = 1 / 3, 2400 / HEATMAP_SIDE / 3  # one stored heatmap pixel, in overlay pixels
    assert coloured[:, 0].min() >= 400 * scale - cell and coloured[:, 0].max() <= 2000 * scale + cell
    assert coloured[:, 1].min() >= 200 * scale - cell and coloured[:, 1].max() <= 1800 * scale + cell


def test_stored_files_keep_the_film_at_full_size_and_lossless_and_the_heatmap_small():
    film = np.random.default_rng(0).random((1500, 1200), dtype=np.float32)
    heat = np.zeros((8, 8), np.float32)
    heat[3:5, 3:5] = 1.0
    files = stored_files(DecodedImage(film, "TIFF"), heat, (0, 1500, 0, 1200), 256)
    opened = {kind: decoded_png(data) for kind, data in files.items()}
    assert {kind: image.size for kind, image in opened.items()} == {
        "image": (1200, 1500),
        "heatmap": (102, HEATMAP_SIDE),
        "thumbnail": (205, 256),
    }
    formats = {kind: image.format for kind, image in opened.items()}
    assert formats == {"image": "PNG", "heatmap": "PNG", "thumbnail": "JPEG"}
    assert (np.asarray(opened["image"]) == to_uint8(film)).all()
    assert files["heatmap"] == heatmap_png(heat, (0, 1500, 0, 1200), (1500, 1200))


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

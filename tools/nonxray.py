"""A generated set of uploads that are not frontal chest X-rays, by category, as encoded files.

Everything comes from packages already installed (scikit-image's sample photos and textures,
pydicom's CT/MR/NM/US test files, matplotlib's sample photo and MR head) or is drawn here
(text pages, UI screenshots, noise), so the benchmark and the gate tests need no download.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

Sample = tuple[str, bytes]  # (name, file bytes)
WORDS = (  # noqa: SIM905 (a sentence is easier to read and edit than a list of words)
    "patient report findings the lung field is clear no acute cardiopulmonary process heart size normal "
    "invoice total amount due date reference please pay within thirty days of receipt account number "
    "meeting agenda minutes action items review budget quarter results project timeline owner status"
).split()


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _u8(values: np.ndarray) -> Image.Image:
    values = np.asarray(values, dtype=np.float64)
    low, high = np.percentile(values, [0.5, 99.5])
    return Image.fromarray(np.clip((values - low) / max(high - low, 1e-9) * 255, 0, 255).astype(np.uint8))


def _fit(image: Image.Image, long_side: int = 512) -> Image.Image:
    """Upscale small sources so the decoder's size check does not refuse them before the gate sees them."""
    scale = long_side / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.BICUBIC)


def _skimage_rgb() -> dict[str, np.ndarray]:
    from skimage import data

    images = {
        "astronaut": data.astronaut(),
        "chelsea": data.chelsea(),
        "coffee": data.coffee(),
        "rocket": data.rocket(),
        "motorcycle": data.stereo_motorcycle()[0],
        "hubble": data.hubble_deep_field(),
        "retina": data.retina(),
        "immunohistochemistry": data.immunohistochemistry(),
        "colorwheel": data.colorwheel(),
    }
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        images["grace_hopper"] = np.asarray(Image.open(handle).convert("RGB"))
    return images


def colour_photos() -> Iterator[Sample]:
    from skimage import data

    for name, rgb in _skimage_rgb().items():
        image = _fit(Image.fromarray(rgb))
        yield f"{name}.jpg", encode(image, "JPEG", quality=90)
    yield "logo_rgba.png", encode(_fit(Image.fromarray(data.logo())))


def gray_photos() -> Iterator[Sample]:
    """Grayscale photographs: colourfulness cannot catch these, only their content can."""
    from skimage import data

    for name in ("camera", "coins", "moon", "clock", "cell", "horse"):
        pixels = getattr(data, name)()
        yield f"{name}.png", encode(_fit(_u8(pixels)))
    for name, rgb in _skimage_rgb().items():
        yield f"{name}_gray.jpg", encode(_fit(Image.fromarray(rgb).convert("L")), "JPEG", quality=90)


def textures() -> Iterator[Sample]:
    from skimage import data

    for name in ("brick", "grass", "gravel", "checkerboard", "microaneurysms"):
        yield f"{name}.png", encode(_fit(_u8(getattr(data, name)())))
    for seed, fraction in enumerate((0.2, 0.35, 0.5, 0.65)):
        blobs = data.binary_blobs(length=384, blob_size_fraction=0.05 + 0.05 * seed, volume_fraction=fraction, rng=seed)
        yield f"binary_blobs_{seed}.png", encode(_u8(blobs))


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _sentence(rng: np.random.Generator, words: int) -> str:
    return " ".join(rng.choice(WORDS, words))


def documents(count: int = 20, seed: int = 1) -> Iterator[Sample]:
    """Rendered text pages: letters, reports, two-column and dark-mode pages, some scanned (blur, noise, tilt)."""
    from skimage import data

    rng = np.random.default_rng(seed)
    for index in range(count):
        width, height = (850, 1100) if index % 3 else (1100, 850)
        dark = index % 7 == 6
        page = Image.new("L", (width, height), 30 if dark else 255)
        draw = ImageDraw.Draw(page)
        size = int(rng.integers(12, 30))
        font, ink = _font(size), 220 if dark else int(rng.integers(0, 60))
        columns = 2 if index % 4 == 1 else 1
        margin = int(rng.integers(40, 120))
        column_width = (width - 2 * margin) // columns
        draw.text((margin, margin // 2), _sentence(rng, 4).title(), fill=ink, font=_font(size * 2))
        for column in range(columns):
            left, y = margin + column * column_width, margin + size * 3
            while y < height - margin:
                if rng.random() < 0.12:  # paragraph break or a table rule
                    if rng.random() < 0.5:
                        draw.line((left, y, left + column_width - size, y), fill=ink, width=2)
                    y += size
                    continue
                words = [str(rng.choice(WORDS))]
                while draw.textlength(" ".join(words), font=font) < column_width - 2 * size:
                    words.append(str(rng.choice(WORDS)))
                draw.text((left, y), " ".join(words[:-1]), fill=ink, font=font)
                y += int(size * 1.5)
        if index % 2:  # a scan or a phone photo of the page
            page = page.rotate(float(rng.uniform(-3, 3)), fillcolor=200, expand=True)
            page = page.filter(ImageFilter.GaussianBlur(1))
            noisy = np.asarray(page, dtype=np.float32) + rng.normal(0, 8, (page.height, page.width))
            page = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        yield f"page_{index}.{'jpg' if index % 2 else 'png'}", encode(page, "JPEG" if index % 2 else "PNG")
    yield "skimage_page.png", encode(_fit(_u8(data.page())))
    yield "skimage_text.png", encode(_fit(_u8(data.text())))


def screenshots(count: int = 20, seed: int = 2) -> Iterator[Sample]:
    """UI-like screens: a window with title bar, side menu, buttons, text rows and picture placeholders."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        width, height = [(1280, 800), (1440, 900), (1024, 768), (800, 1280)][index % 4]

        def colour() -> tuple[int, ...]:
            return tuple(int(v) for v in rng.integers(0, 256, 3))

        screen = Image.new("RGB", (width, height), colour())
        draw = ImageDraw.Draw(screen)
        draw.rectangle((0, 0, width, 36), fill=colour())
        draw.text((12, 8), _sentence(rng, 3), fill=(255, 255, 255), font=_font(18))
        sidebar = int(rng.integers(150, 300))
        draw.rectangle((0, 36, sidebar, height), fill=colour())
        for y in range(60, height - 40, 36):
            draw.text((16, y), _sentence(rng, 2), fill=(20, 20, 20), font=_font(16))
        y = 60
        while y < height - 60:
            kind = rng.random()
            if kind < 0.25:  # a picture placeholder or chart
                box = (sidebar + 20, y, int(rng.integers(sidebar + 200, width - 20)), y + int(rng.integers(80, 220)))
                draw.rectangle(box, fill=colour(), outline=(0, 0, 0))
                y = box[3] + 16
            elif kind < 0.45:  # a row of buttons
                x = sidebar + 20
                for _ in range(int(rng.integers(2, 5))):
                    draw.rounded_rectangle((x, y, x + 120, y + 34), radius=8, fill=colour())
                    draw.text((x + 12, y + 8), _sentence(rng, 1), fill=(255, 255, 255), font=_font(16))
                    x += 140
                y += 50
            else:
                text = _sentence(rng, int(rng.integers(4, 14)))
                draw.text((sidebar + 20, y), text, fill=(30, 30, 30), font=_font(16))
                y += 26
        yield f"screenshot_{index}.png", encode(screen.convert("L") if index % 3 == 2 else screen)  # a third grayscale


def noise(seed: int = 3) -> Iterator[Sample]:
    """Noise, flat fields, gradients and stripes: nothing a model should ever be asked about."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    shape = (384, 384)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]] / shape[0]
    fields = {
        "uniform": rng.random(shape),
        "gaussian": rng.normal(0.5, 0.15, shape),
        "salt_pepper": rng.random(shape) < 0.5,
        "gradient": x,
        "radial": np.hypot(x - 0.5, y - 0.5),
        "stripes": np.sin(x * 40) > 0,
    }
    for sigma in (2, 6, 16, 40):
        fields[f"smooth_noise_{sigma}"] = gaussian_filter(rng.normal(size=shape), sigma)
        fields[f"smooth_noise_{sigma}_grainy"] = fields[f"smooth_noise_{sigma}"] * 5 * sigma + rng.normal(size=shape)
    for name, values in fields.items():
        yield f"{name}.png", encode(_u8(values))
    for name, value in (("black", 0), ("gray", 128), ("white", 255)):
        yield f"constant_{name}.png", encode(Image.new("L", shape, value))
    yield "colour_noise.png", encode(Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)))


CT_MR_FILES = (
    "CT_small.dcm",
    "693_J2KI.dcm",
    "J2K_pixelrep_mismatch.dcm",
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_jp2klossless.dcm",
    "examples_overlay.dcm",
    "JPEG2000.dcm",
    "examples_ybr_color.dcm",
    "examples_palette.dcm",
)


def ct_mr_dicoms() -> Iterator[Sample]:
    """pydicom's CT, MR, NM and US test files as uploaded: the decoder refuses them by modality."""
    from pydicom.data import get_testdata_file

    for name in CT_MR_FILES:
        yield name, Path(get_testdata_file(name, download=False)).read_bytes()


def _slices() -> dict[str, np.ndarray]:
    import matplotlib.cbook
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.pixels import apply_modality_lut, apply_voi_lut
    from skimage import data

    slices = {}
    for name in ("CT_small.dcm", "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm", "MR_small.dcm", "examples_overlay.dcm"):
        ds = pydicom.dcmread(get_testdata_file(name, download=False))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slices[name.removesuffix(".dcm")] = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    with matplotlib.cbook.get_sample_data("s1045.ima.gz") as handle:
        slices["mr_head_s1045"] = np.frombuffer(handle.read(), np.uint16).reshape(256, 256)
    slices["shepp_logan_phantom"] = data.shepp_logan_phantom()
    return slices


def ct_mr_images() -> Iterator[Sample]:
    """The same CT/MR slices exported as PNG or JPEG: no DICOM header to give them away, only the gate."""
    for name, pixels in _slices().items():
        image = _fit(_u8(pixels))
        yield f"{name}.png", encode(image)
        yield f"{name}_flipped.jpg", encode(image.transpose(Image.FLIP_LEFT_RIGHT), "JPEG", quality=90)


CATEGORIES: dict[str, Callable[[], Iterator[Sample]]] = {
    "colour photos": colour_photos,
    "grayscale photos": gray_photos,
    "textures": textures,
    "documents (text pages)": documents,
    "screenshots (UI)": screenshots,
    "noise and flat fields": noise,
    "CT/MR/NM/US DICOM files": ct_mr_dicoms,
    "CT/MR slices as PNG/JPEG": ct_mr_images,
}

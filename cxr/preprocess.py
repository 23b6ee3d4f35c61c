"""The one preprocessing path from a decoded radiograph to the CNN's input tensor.

Training, evaluation and serving all call `preprocess`. Its steps are chosen against shortcut
learning: public COVID sets differ by source in borders, burned-in text, resolution and exposure, so
  1. uniform borders (black or white frames, padding) are trimmed,
  2. a fixed margin is cut from every side, where markers and text usually sit,
  3. the rest is resized to a square input (downsampling also hides resolution differences),
  4. the histogram is equalised, which makes any monotonic exposure or windowing change irrelevant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from cxr.imaging import to_float

# Stored in the model card; serving refuses a model trained with other values.
PARAMETERS: dict[str, float | int | str] = {
    "version": 1,
    "border_std": 0.02,  # a row/column whose std is below this (of [0,1] pixels) is border
    "max_border_trim": 0.25,  # never trim more than this fraction of a side as "border"
    "margin": 0.06,  # then cut this fraction from every side
    "equalisation_bins": 1024,
    "resample": "bilinear (antialiased)",
}


@dataclass(frozen=True)
class Prepared:
    """The model input (size × size × 1, float32 in [0, 1]) and the crop box it came from.

    `box` is (top, bottom, left, right) in pixels of the decoded image: the Grad-CAM map covers
    only that region when it is drawn over the original.
    """

    tensor: np.ndarray
    box: tuple[int, int, int, int]


# A film whose short side is at least 2 × WORKING_SCALE × the output size is first reduced by an integer
# factor (the mean of each factor × factor block), keeping at least WORKING_SCALE pixels per output pixel
# and a lung box (≥ 40 % of the frame, `cxr.lungs`) above the output size. The border trim and the resize
# then work on ~16× fewer pixels of a 2-4k px detector film (bench/README.md, "Large films"); smaller films
# (for a 128 px input: under 1024 px, every shared film among them) are not reduced, so training sees
# exactly what it did.
WORKING_SCALE = 4


def preprocess(pixels: np.ndarray, size: int, region: tuple[int, int, int, int] | None = None) -> Prepared:
    """Turn a 2-D radiograph, float32 in [0, 1] or 8-bit levels (`DecodedImage.frame`: the same film gives
    the same input either way, to float rounding), into the CNN input of `size` × `size` pixels: of
    `region` (top, bottom, left, right; the lung box of `cxr.lungs`) when given, else of `crop_box`. The
    box is in pixels of `pixels` either way."""
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {pixels.shape}")
    frame, factor = working_frame(pixels, size)
    height, width = pixels.shape
    if region is None:
        top, bottom, left, right = crop_box(frame)
        region = top * factor, min(bottom * factor, height), left * factor, min(right * factor, width)
    top, bottom, left, right = region
    # The blocks of the working frame that hold the region (all of it: a partial block is included).
    cut = frame[top // factor : -(-bottom // factor), left // factor : -(-right // factor)]
    resized = np.asarray(
        Image.fromarray(cut.astype(np.float32, copy=False), mode="F").resize((size, size), Image.BILINEAR)
    )
    tensor = equalise(resized)[..., np.newaxis]
    return Prepared(tensor=tensor.astype(np.float32, copy=False), box=(top, bottom, left, right))


def working_frame(pixels: np.ndarray, size: int) -> tuple[np.ndarray, int]:
    """`pixels` (float32 [0, 1], or 8-bit levels) as float32 [0, 1], reduced by the largest integer factor that
    keeps the short side at least WORKING_SCALE × `size` (each factor × factor block's mean; a partial block
    at the edge is the mean of what it holds), and that factor; the pixels themselves, and 1, when no
    reduction is due."""
    factor = min(pixels.shape) // (WORKING_SCALE * size)
    if factor < 2:
        return to_float(pixels), 1
    if pixels.dtype == np.uint8:
        return block_means(pixels, factor) / np.float32(255), factor
    reduced = Image.fromarray(pixels.astype(np.float32, copy=False), mode="F").reduce(factor)
    return np.asarray(reduced), factor


def block_means(levels: np.ndarray, factor: int) -> np.ndarray:
    """float32 means of the `factor` × `factor` blocks of 8-bit `levels` (Pillow's `reduce`, whose "F" mode
    would need a float copy of the whole film first): integer sums of every factor-th row, then of every
    factor-th column; a partial block at the edge (zero-padded here) is the mean of what it holds."""
    height, width = levels.shape
    rows, columns = -(-height // factor), -(-width // factor)
    if (rows * factor, columns * factor) != (height, width):
        levels = np.pad(levels, ((0, rows * factor - height), (0, columns * factor - width)))
    wide = np.uint16 if 255 * factor * factor <= np.iinfo(np.uint16).max else np.uint32
    row_sums = levels[0::factor].astype(wide)
    for offset in range(1, factor):
        row_sums += levels[offset::factor]
    sums = row_sums[:, 0::factor].copy()
    for offset in range(1, factor):
        sums += row_sums[:, offset::factor]
    means = sums.astype(np.float32)
    means /= np.float32(factor * factor)
    # A partial block's sum is of fewer pixels: its mean is the full block's divisor over its own count.
    means[-1, :] *= factor / (height - factor * (rows - 1))
    means[:, -1] *= factor / (width - factor * (columns - 1))
    return means


def crop_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) after trimming uniform borders and the fixed margin."""
    height, width = pixels.shape
    top, bottom = _content_span(pixels.std(axis=1), height)
    left, right = _content_span(pixels.std(axis=0), width)
    margin = float(PARAMETERS["margin"])
    dy, dx = int(round((bottom - top) * margin)), int(round((right - left) * margin))
    return top + dy, bottom - dy, left + dx, right - dx


def _content_span(line_std: np.ndarray, length: int) -> tuple[int, int]:
    limit = int(length * float(PARAMETERS["max_border_trim"]))
    content = np.flatnonzero(line_std > float(PARAMETERS["border_std"]))
    if content.size == 0:
        return 0, length
    start = min(int(content[0]), limit)
    end = max(int(content[-1]) + 1, length - limit)
    return start, end


def equalise(image: np.ndarray) -> np.ndarray:
    """Histogram equalisation to [0, 1]; a flat image maps to all zeros rather than NaN."""
    low, high = float(image.min()), float(image.max())
    if high - low < 1e-6:
        return np.zeros_like(image, dtype=np.float32)
    scaled = (image - low) / (high - low)
    bins = int(PARAMETERS["equalisation_bins"])
    # np.histogram(scaled, bins, range=(0, 1)) and np.interp(scaled, edges[1:], cdf), computed from each
    # pixel's bin: with a power-of-two bin count the bins are exact, so this gives the same values
    # (tests/test_preprocess.py) without np.interp's binary search per pixel, which took most of the time.
    index = np.minimum((scaled * bins).astype(np.intp), bins - 1)  # the last bin includes 1.0
    cdf = np.cumsum(np.bincount(index.ravel(), minlength=bins)).astype(np.float64)
    cdf = (cdf - cdf[0]) / max(cdf[-1] - cdf[0], 1.0)
    # In bin i the curve rises linearly from cdf[i - 1] at its left edge i / bins; below edge 1 it is cdf[0].
    start = np.concatenate(([cdf[0]], cdf[:-1]))
    slope = np.concatenate(([0.0], np.diff(cdf))) * bins
    return (start[index] + (scaled - index / bins) * slope[index]).astype(np.float32)

"""Where the model looks: a grid of Grad-CAM overlays and the share of Grad-CAM mass on the lungs.

    python -m training.gradcam_report --model models/ --data ../shared/data/cxr/manifest.csv \
        --lungs ../shared/data/cxr-lungs

* The grid: 16 films of the model's test split (8 per class of the two first classes, chosen with
  `--seed`), each the film with the Grad-CAM map of its decided class, as the app draws it; written to
  `MODEL/report/gradcam_grid.png`.
* The lung share: for every film with a lung mask in `--lungs/masks`, the Grad-CAM map (of the decided
  class) is put back on the film as the app does, and its mass inside the mask is divided by its total
  mass. For comparison, the share a map spread evenly over the analysed region would have (the lungs'
  share of that region's area). Per source, and whether the film was trained on.

Both go into the model card (`gradcam`), which the model page shows.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cxr.bundle import CARD_FILE, ModelBundle
from cxr.imaging import decode_image
from cxr.overlay import heatmap_full_size, overlay_rgb
from training.data import KNOWN_LABELS, SPLIT_FILE, load_dataset, read_split

TILE = 240


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models"))
    parser.add_argument("--data", type=Path, required=True, help="the manifest the model was trained from")
    parser.add_argument("--lungs", type=Path, required=True, help="folder with masks/<file>.png (255 = lung)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def lung_share(bundle: ModelBundle, pixels: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(Grad-CAM mass inside the lung mask ÷ all of it, lung area ÷ analysed area) for one film."""
    prediction = bundle.predict(pixels)
    heat = heatmap_full_size(prediction.heatmap, prediction.box, pixels.shape)
    top, bottom, left, right = prediction.box
    region = np.zeros(pixels.shape, dtype=bool)
    region[top:bottom, left:right] = True
    total = float(heat.sum())
    share = float(heat[mask].sum() / total) if total > 0 else float("nan")
    return share, float((mask & region).sum() / max(region.sum(), 1))


def grid(bundle: ModelBundle, films: list[tuple[str, str, np.ndarray]], path: Path) -> None:
    columns = 4
    rows = (len(films) + columns - 1) // columns
    canvas = Image.new("RGB", (columns * TILE, rows * (TILE + 18)), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (file, label, pixels) in enumerate(films):
        prediction = bundle.predict(pixels)
        tile = Image.fromarray(overlay_rgb(pixels, prediction.heatmap, prediction.box))
        tile.thumbnail((TILE, TILE))
        x, y = (k % columns) * TILE, (k // columns) * (TILE + 18)
        canvas.paste(tile, (x + (TILE - tile.width) // 2, y))
        draw.text((x + 4, y + TILE + 2), f"{file}: {label} -> {prediction.decision}", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bundle = ModelBundle(args.model)
    saved = read_split(args.model / SPLIT_FILE)
    samples, _ = load_dataset(args.data, KNOWN_LABELS, known_labels=None)
    by_file = {s.file: s for s in samples}

    rng = np.random.default_rng(args.seed)
    films = []
    for label in bundle.classes[:2]:
        candidates = sorted(s.file for s in samples if s.label == label and saved.get(s.file) == "test")
        for file in rng.choice(candidates, size=min(8, len(candidates)), replace=False):
            films.append((file, label, decode_image(by_file[file].path.read_bytes()).pixels))
    grid_path = args.model / "report" / "gradcam_grid.png"
    grid(bundle, films, grid_path)

    groups: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for mask_path in sorted((args.lungs / "masks").glob("*.png")):
        sample = by_file.get(mask_path.name)
        if sample is None:
            continue
        pixels = decode_image(sample.path.read_bytes()).pixels
        mask = np.asarray(Image.open(mask_path).convert("L")) > 127
        if mask.shape != pixels.shape:
            continue
        share = lung_share(bundle, pixels, mask)
        if np.isfinite(share[0]):
            trained = "trained on" if saved.get(sample.file) in ("train", "val") else "not trained on"
            groups[f"{sample.source} ({trained})"].append(share)
            groups["all"].append(share)
    summary = {
        name: {
            "n": len(values),
            "gradcam_mass_in_lungs": float(np.mean([v[0] for v in values])),
            "lung_share_of_analysed_area": float(np.mean([v[1] for v in values])),
        }
        for name, values in sorted(groups.items())
    }
    for name, row in summary.items():
        print(
            f"{name:<36} n={row['n']:>4}  Grad-CAM mass in lungs {row['gradcam_mass_in_lungs']:.3f}  "
            f"(lungs' share of the analysed area {row['lung_share_of_analysed_area']:.3f})"
        )
    card_path = args.model / CARD_FILE
    card = json.loads(card_path.read_text())
    card["gradcam"] = {
        "grid": "report/gradcam_grid.png",
        "grid_films": [f for f, _, _ in films],
        "seed": args.seed,
        "lung_mass": summary,
        "method": "Grad-CAM of the decided class on the film, mass inside the lung mask ÷ total; "
        "masks: montgomery drawn by people, ieee8023 from the lungVAE model",
    }
    card_path.write_text(json.dumps(card, indent=1, ensure_ascii=False) + "\n")
    print(f"grid written to {grid_path}; card updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())

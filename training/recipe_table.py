"""The recipe search as one table: each recipe's leave-source-out cross-validation, seed by seed.

    python -m training.recipe_table baseline=reports/crossval acquisition=reports/recipes/acquisition \\
        --write reports/recipes/README.md

Every recipe directory is a `training.crossval --out` directory (its results.json, from the same folds
and seeds). A row per recipe and seed gives the cross-fitted pooled figures with their 95 % bootstrap
intervals; the spread between one recipe's seeds is the noise a difference between recipes must exceed,
so the table also gives each recipe's change against the first one, seed by seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.crossval import MEAN_OF_SEEDS

COLUMNS = {  # results.json key: column title
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "normal_called_normal": "normal called normal",
    "indeterminate_normals": "normals indeterminate",
    "roc_auc": "ROC AUC",
    "ece": "ECE",
}
COMPARED = ("specificity", "normal_called_normal", "roc_auc")  # what the search is after, at sensitivity ≥ 0.90


def recipe_rows(directory: Path) -> tuple[list[str], dict[str, dict]]:
    """(the training arguments of the recipe, {seed row name: pooled cross-fitted figures})."""
    results = json.loads((directory / "results.json").read_text())
    rows = {name: summary["all"] for name, summary in results["recipes_cross_fitted"].items()}
    return results.get("train_args", []), rows


def cell(figures: dict, key: str) -> str:
    low, high = figures["interval"][key]
    return f"{figures[key]:.3f} ({low:.2f}–{high:.2f})"


def table(recipes: dict[str, Path]) -> str:
    loaded = {name: recipe_rows(directory) for name, directory in recipes.items()}
    baseline = next(iter(loaded.values()))[1]
    lines = [
        "| recipe | training arguments | seed | " + " | ".join(COLUMNS.values()) + " | change against "
        f"{next(iter(loaded))} ({', '.join(COLUMNS[k] for k in COMPARED)}) |",
        "|" + "---|" * (len(COLUMNS) + 4),
    ]
    for name, (arguments, rows) in loaded.items():
        for seed, figures in rows.items():
            reference = baseline.get(seed)
            change = (
                " / ".join(f"{figures[k] - reference[k]:+.3f}" for k in COMPARED)
                if reference and rows is not baseline
                else ""
            )
            cells = " | ".join(cell(figures, key) for key in COLUMNS)
            lines.append(f"| {name} | `{' '.join(arguments) or '(defaults)'}` | {seed} | {cells} | {change} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipes", nargs="+", metavar="NAME=DIR", help="the first is the baseline")
    parser.add_argument("--write", type=Path, help="also write the table (with a heading) to this file")
    args = parser.parse_args(argv)
    recipes = {}
    for item in args.recipes:
        name, _, directory = item.partition("=")
        if not directory or not (Path(directory) / "results.json").is_file():
            parser.error(f"{item}: expected NAME=DIR with DIR/results.json from `python -m training.crossval`")
        recipes[name] = Path(directory)
    text = table(recipes)
    print(text)
    if args.write:
        heading = (
            "# Recipe search under leave-source-out cross-validation\n\nWritten by `python -m training.recipe_table "
            + " ".join(args.recipes)
            + f" --write {args.write}`; do not edit. Cross-fitted operating point, pooled over the held-out "
            f"sources; '{MEAN_OF_SEEDS}' is the recipe's two-seed ensemble. 95 % bootstrap intervals over films.\n\n"
        )
        args.write.write_text(heading + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Leave-source-out cross-validation: what a hospital the model never saw would get.

    python -m training.crossval --data ../shared/data/cxr/manifest.csv --out crossval/ --models runs/cv \\
        --seeds 42,7 -- --epochs 12 --patience 4
    python -m training.crossval --out crossval/ --report-only      # tables from the recorded predictions

Folds are groups of sources (`--folds`, groups separated by ';'). Every source but the dominant
`radiography` is held out in exactly one fold; `radiography` trains in every fold (its files do not
say which sub-collection a film came from). For each seed and fold, `training.train` is run with the
fold's sources as `--holdout-sources` (arguments after `--` go to it as they are), and every film of
the held-out sources gets an out-of-source prediction, written to OUT/predictions/seed<S>_fold<K>.csv.
Those small files are the record of the sweep (commit them; the fold models under --models are not):
a stopped sweep continues from them and from the fold's checkpoint (`training.train --resume`).

From the pooled out-of-source predictions the command fits the operating point
(`training.operating_point`) and writes OUT/operating_point.json, OUT/results.json and OUT/README.md:
sensitivity, specificity (not called COVID), the share of normals called normal outright, the
indeterminate rate, ROC AUC and ECE per source and pooled, each with a 95 % bootstrap interval.
The figures that estimate an unseen hospital are *cross-fitted*: each fold's films are judged by the
operating point fitted on the other folds' predictions, so the rule never sees the films it is scored on.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from training.checkpoint import CHECKPOINT_DIR
from training.data import SPLIT_FILE, UNSEEN, DataError, load_dataset, read_split
from training.operating_point import (
    PREDICTION_FIELDS,
    OperatingPoint,
    cross_fitted,
    fit_operating_point,
    markdown_table,
    read_predictions,
    summarise,
)

DEFAULT_FOLDS = "cxnet,tbx11k;ieee8023,figure1;covid19imgds,chexpert;montgomery"
DOMINANT_SOURCE = "radiography"  # trains in every fold
PREDICTIONS_DIR = "predictions"
# OUT/RECIPE_FILE records the arguments after `--` that trained OUT's fold models: one recipe per OUT.
RECIPE_FILE = "recipe.json"
MEAN_OF_SEEDS = "mean of the seeds' p(covid)"


def parse_folds(text: str) -> list[list[str]]:
    folds = [[s.strip() for s in group.split(",") if s.strip()] for group in text.split(";")]
    folds = [fold for fold in folds if fold]
    seen: dict[str, int] = {}
    for number, fold in enumerate(folds, 1):
        for source in fold:
            if source in seen:
                raise ValueError(f"source {source} is in folds {seen[source]} and {number}; each source once")
            seen[source] = number
    return folds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        help="manifest CSV with a source per film (required to train; with --report-only, held-out films with a "
        "copy in a fold's training sources are left out of the tables)",
    )
    parser.add_argument("--out", type=Path, required=True, help="predictions, operating point and tables (commit)")
    parser.add_argument("--models", type=Path, default=Path("runs/cv"), help="fold models (not committed)")
    parser.add_argument("--folds", default=DEFAULT_FOLDS, help=f"';'-separated source groups (default {DEFAULT_FOLDS})")
    parser.add_argument("--seeds", default="42,7", help="comma-separated seeds, each a full sweep (default 42,7)")
    parser.add_argument("--report-only", action="store_true", help="no training: tables from OUT/predictions")
    parser.add_argument(
        "--tables", type=Path, help="write the tables and the operating point here instead of OUT (e.g. one seed's)"
    )
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples per interval")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: arguments for training.train")
    return parser


def fold_name(seed: int, number: int) -> str:
    return f"seed{seed}_fold{number}"


def train_fold(data: Path, directory: Path, sources: Sequence[str], seed: int, train_args: Sequence[str]) -> None:
    """Run (or resume, or leave alone when finished) `training.train` for one fold."""
    if (directory / "model_card.json").is_file() and not (directory / CHECKPOINT_DIR).exists():
        return
    if (directory / CHECKPOINT_DIR).exists():
        command = ["-m", "training.train", "--resume", str(directory)]
    else:
        command = [
            "-m",
            "training.train",
            "--data",
            str(data),
            "--out",
            str(directory),
            "--holdout-sources",
            ",".join(sources),
            "--seed",
            str(seed),
            *train_args,
        ]
    print(f"$ python {' '.join(command)}", flush=True)
    subprocess.run([sys.executable, *command], check=True)


def predict_fold(data: Path, directory: Path, number: int, seed: int, target: Path) -> None:
    """Out-of-source predictions of one fold model for every film of its held-out sources."""
    from cxr.bundle import ModelBundle
    from cxr.calibration import apply_temperature
    from cxr.decision import POSITIVE_CLASS
    from training.images import load_inputs

    bundle = ModelBundle(directory)
    if POSITIVE_CLASS not in bundle.classes or len(bundle.classes) != 2:
        raise DataError(f"cross-validation scores covid against the rest; {directory} has classes {bundle.classes}")
    negatives = bundle.card["data"]["trained_as_normal"]
    saved = read_split(directory / SPLIT_FILE)
    samples, _ = load_dataset(data, bundle.classes + negatives)
    samples = [s for s in samples if saved.get(s.file) == UNSEEN]
    images, kept = load_inputs(samples, bundle.input_size, bundle.localiser)
    samples = [samples[i] for i in kept]
    features, _ = bundle.embed(images)
    positive = bundle.classes.index(POSITIVE_CLASS)
    probabilities = bundle.ensemble.predict_proba(features)  # before any temperature: what the fit needs
    raw = probabilities[:, positive]
    ood = bundle.ood.distance(features) / bundle.ood.threshold
    own = apply_temperature(probabilities, bundle.temperature)  # as the fold model serves them
    own_outcomes = bundle.rule.outcomes(own, ood)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(PREDICTION_FIELDS)
        for sample, p, score, p_own, outcome in zip(samples, raw, ood, own[:, positive], own_outcomes):
            writer.writerow(
                [sample.file, sample.label, sample.source, number, seed, bundle.version]
                + [f"{p:.6f}", f"{score:.4f}", f"{p_own:.6f}", outcome]
            )
    partial.replace(target)  # a fold's record is complete or absent
    print(f"{target}: {len(samples)} out-of-source predictions", flush=True)


def copies_of_trained_films(data: Path, folds: list[list[str]]) -> dict[int, set[str]]:
    """Per fold, the held-out films that have a copy (the same file, or a near-duplicate: `training.leaks`)
    among the sources that train in that fold. Runs made before the leak guard trained on such copies, and
    runs made since leave them out of training; either way the report leaves these films out, so that every
    seed is scored on the same films and none was seen in another collection's copy."""
    from training.data import KNOWN_LABELS
    from training.films import survey
    from training.leaks import copies

    samples, _ = load_dataset(data, KNOWN_LABELS)
    pairs = copies(survey(samples, cache_dir=Path(".cache")))
    result = {}
    for number, fold in enumerate(folds, 1):
        held = set(fold)
        result[number] = {
            samples[i if samples[i].source in held else j].file
            for i, j, _ in pairs
            if (samples[i].source in held) != (samples[j].source in held)
        }
    return result


def report(
    out: Path,
    folds: list[list[str]],
    resamples: int,
    command: str | None,
    data: Path | None = None,
    seeds: Sequence[int] | None = None,
    tables: Path | None = None,
) -> OperatingPoint:
    """The tables and the operating point from OUT's predictions of `seeds` (all when None), written to
    `tables` (default OUT)."""
    rows = read_predictions(sorted((out / PREDICTIONS_DIR).glob("*.csv")))
    if seeds is not None:
        rows = [r for r in rows if r["seed"] in seeds]
    if not rows:
        raise DataError(f"no predictions in {out / PREDICTIONS_DIR}")
    excluded: dict[int, set[str]] = copies_of_trained_films(data, folds) if data is not None else {}
    rows = [r for r in rows if r["file"] not in excluded.get(r["fold"], set())]
    point = fit_operating_point(rows)
    estimate = summarise(cross_fitted(rows), resamples)
    fitted = summarise(point.apply(rows), resamples)
    internal = summarise([r | {"outcome": r["own_outcome"], "p": r["p_own"]} for r in rows], resamples)
    seeds = sorted({r["seed"] for r in rows})
    recipes = {
        f"seed {seed}": summarise(cross_fitted([r for r in rows if r["seed"] == seed]), resamples, False)
        for seed in seeds
    }
    if len(seeds) > 1:
        recipes[MEAN_OF_SEEDS] = summarise(cross_fitted(seed_mean(rows)), resamples, sources=False)
    results = {
        "folds": {str(k): fold for k, fold in enumerate(folds, 1)},
        "seeds": seeds,
        "films": len({r["file"] for r in rows}),
        "left_out_as_copies_of_trained_films": {str(k): sorted(v) for k, v in excluded.items() if v}
        if data is not None
        else "not checked (no --data)",
        "predictions": len(rows),
        "models": sorted({r["model_version"] for r in rows}),
        "command": command,
        "train_args": recorded_recipe(out),
        "operating_point": point.as_dict(),
        "cross_fitted": estimate,
        "fitted_on_all": fitted,
        "fold_models_own_rule": internal,
        "recipes_cross_fitted": {name: summary for name, summary in recipes.items() if summary},
    }
    tables = tables or out
    tables.mkdir(parents=True, exist_ok=True)
    (tables / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (tables / "operating_point.json").write_text(json.dumps(point.as_dict() | {"estimate": estimate}, indent=1) + "\n")
    (tables / "README.md").write_text(markdown_table(results))
    print((tables / "README.md").read_text())
    return point


def recorded_recipe(out: Path) -> list[str] | None:
    """The training arguments OUT's fold models were trained with (None where not recorded)."""
    path = out / RECIPE_FILE
    return json.loads(path.read_text())["train_args"] if path.is_file() else None


def record_recipe(out: Path, train_args: list[str]) -> None:
    """Record `train_args` as OUT's recipe, or refuse when OUT holds predictions of another recipe (a table
    mixing two recipes' folds would describe neither)."""
    recorded = recorded_recipe(out)
    if recorded is not None and recorded != train_args:
        raise DataError(
            f"{out} holds the predictions of the recipe {' '.join(recorded) or '(defaults)'}; "
            f"train {' '.join(train_args) or '(defaults)'} into another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / RECIPE_FILE).write_text(json.dumps({"train_args": train_args}) + "\n")


def seed_mean(rows: list[dict]) -> list[dict]:
    """One row per film whose every seed predicted it: the mean of the seeds' raw p(covid) and OOD scores
    (an ensemble of the seeds' models, as far as their predictions can tell without serving it)."""
    seeds = {r["seed"] for r in rows}
    by_film: dict[str, list[dict]] = {}
    for row in rows:
        by_film.setdefault(row["file"], []).append(row)
    return [
        group[0]
        | {
            "seed": 0,
            "p_covid_raw": sum(r["p_covid_raw"] for r in group) / len(group),
            "ood_score": sum(r["ood_score"] for r in group) / len(group),
        }
        for group in by_film.values()
        if {r["seed"] for r in group} == seeds
    ]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    train_args = [a for a in args.train_args if a != "--"] if args.train_args else []
    try:
        folds = parse_folds(args.folds)
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if DOMINANT_SOURCE in {s for fold in folds for s in fold}:
        print(f"error: {DOMINANT_SOURCE} trains in every fold; leave it out of --folds", file=sys.stderr)
        return 2
    command = " ".join(["python -m training.crossval", *(argv if argv is not None else sys.argv[1:])])
    try:
        if not args.report_only:
            if args.data is None:
                print("error: --data is required unless --report-only", file=sys.stderr)
                return 2
            record_recipe(args.out, train_args)
            for seed in seeds:
                for number, sources in enumerate(folds, 1):
                    target = args.out / PREDICTIONS_DIR / f"{fold_name(seed, number)}.csv"
                    if target.is_file():
                        continue
                    directory = args.models / fold_name(seed, number)
                    train_fold(args.data, directory, sources, seed, train_args)
                    predict_fold(args.data, directory, number, seed, target)
                    report(args.out, folds, args.bootstrap, command, args.data, seeds)
        report(args.out, folds, args.bootstrap, command, args.data, seeds, args.tables)
    except (DataError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

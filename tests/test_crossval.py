"""Leave-source-out cross-validation and the operating point fitted on its out-of-source predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cxr.decision import INDETERMINATE
from tests.test_training import TINY, synthetic_xray, write_manifest
from training import crossval, recipe_table, train
from training.crossval import MEAN_OF_SEEDS
from training.operating_point import (
    MIN_COVID_PER_SOURCE,
    cross_fitted,
    fit_operating_point,
    group_metrics,
    read_predictions,
)
from training.unseen import NORMAL


def synthetic_predictions(seed: int = 0) -> list[dict]:
    """Three folds of out-of-source predictions: COVID films score higher than normals, each source
    with its own shift (what a new hospital does to p(covid))."""
    rng = np.random.default_rng(seed)
    rows = []
    for fold, (source, shift) in enumerate((("a", 0.0), ("b", 0.8), ("c", -0.5)), 1):
        for label, centre, n in (("covid", 1.5, 60), ("normal", -1.0, 50), ("other", 0.0, 20)):
            for i in range(n):
                logit = centre + shift + rng.normal(0, 1.0)
                rows.append(
                    {
                        "file": f"{source}_{label}_{i}.png",
                        "label": label,
                        "source": source,
                        "fold": fold,
                        "seed": 42,
                        "model_version": f"m{fold}",
                        "p_covid_raw": float(1 / (1 + np.exp(-logit))),
                        "ood_score": float(rng.gamma(4, 0.2)),
                    }
                )
    return rows


def test_operating_point_keeps_sensitivity_at_every_source_and_leaves_most_normals_normal():
    rows = synthetic_predictions()
    point = fit_operating_point(rows, min_sensitivity=0.90, band_sensitivity=0.97, max_band_share=0.25)
    judged = point.apply(rows)
    assert point.indeterminate_below <= point.threshold
    for source in "abc":
        here = [r for r in judged if r["source"] == source]
        assert sum(1 for r in here if r["label"] == "covid") >= MIN_COVID_PER_SOURCE
        assert group_metrics(here)["sensitivity"] >= 0.90, source
    pooled = group_metrics(judged)
    # The band takes at most a quarter of the normals not called COVID; the unusual cut-off at most ~1 %.
    normals = [r for r in judged if r["label"] == NORMAL and r["outcome"] != "covid"]
    band = [r for r in normals if r["p"] >= point.indeterminate_below]
    assert len(band) <= 0.25 * len(normals) + 1
    assert pooled["indeterminate_normals"] < 0.5
    assert pooled["normal_called_normal"] == pytest.approx(
        np.mean([r["outcome"] == NORMAL for r in judged if r["label"] == NORMAL])
    )
    # A higher threshold would break the floor at some source: it is the highest that holds.
    stricter = point.threshold + 1e-6
    assert (
        any(
            np.mean([r["p"] >= stricter for r in judged if r["source"] == s and r["label"] == "covid"]) < 0.90
            for s in "abc"
        )
        or np.mean([r["p"] >= stricter for r in judged if r["label"] == "covid"]) < 0.90
    )


def test_cross_fitted_rows_are_judged_by_a_rule_fitted_without_their_fold():
    rows = synthetic_predictions()
    judged = cross_fitted(rows)
    assert len(judged) == len(rows)
    for fold in (1, 2, 3):
        expected = fit_operating_point([r for r in rows if r["fold"] != fold]).apply(
            [r for r in rows if r["fold"] == fold]
        )
        got = [r for r in judged if r["fold"] == fold]
        assert [r["outcome"] for r in got] == [r["outcome"] for r in expected]
    assert {r["outcome"] for r in judged} == {"covid", NORMAL, INDETERMINATE}


def test_folds_name_each_source_once():
    assert crossval.parse_folds("a,b; c ;;d") == [["a", "b"], ["c"], ["d"]]
    with pytest.raises(ValueError, match="source b is in folds 1 and 2"):
        crossval.parse_folds("a,b;b")
    assert crossval.main(["--out", "x", "--folds", "radiography;a", "--report-only"]) == 2


@pytest.fixture(scope="module")
def sources_dataset(tmp_path_factory) -> Path:
    """Three sources with both classes: 'radiography' trains in every fold, 'alpha' and 'beta' are held out."""
    root = tmp_path_factory.mktemp("sources")
    rng = np.random.default_rng(1)
    rows = []
    for source, n in (("radiography", 30), ("alpha", 12), ("beta", 12)):
        for label in ("covid", "normal", "other"):
            for _ in range(n if label != "other" else 4):
                name = f"{source}_{len(rows):05d}.png"
                synthetic_xray(label, rng).save(root / name)
                rows.append({"file": name, "label": label, "patient_id": "", "view": "PA", "notes": ""})
    return write_manifest(root, rows)


@pytest.mark.slow
def test_crossval_predicts_every_held_out_film_and_the_final_model_takes_its_operating_point(
    sources_dataset, tmp_path, capsys
):
    out, models = tmp_path / "cv", tmp_path / "runs"
    argv = ["--data", str(sources_dataset), "--out", str(out), "--models", str(models)]
    argv += ["--folds", "alpha;beta", "--seeds", "3", "--bootstrap", "50", "--", *TINY]
    assert crossval.main(argv) == 0
    rows = read_predictions(sorted((out / "predictions").glob("*.csv")))
    with sources_dataset.open() as handle:
        held_out = {r["file"] for r in csv.DictReader(handle) if not r["file"].startswith("radiography")}
    assert {r["file"] for r in rows} == held_out and len(rows) == len(held_out)
    assert {(r["fold"], r["source"]) for r in rows} == {(1, "alpha"), (2, "beta")}
    results = json.loads((out / "results.json").read_text())
    assert results["train_args"] == list(TINY)  # the recipe, recorded with its predictions
    pooled = results["cross_fitted"]["all"]
    assert pooled["n"] == len(held_out) and set(pooled["interval"]) >= {"sensitivity", "roc_auc", "ece"}
    assert "| alpha |" in (out / "README.md").read_text()
    point = json.loads((out / "operating_point.json").read_text())
    assert "$ python -m training.train" in capsys.readouterr().out

    # A second call trains nothing: every fold has its predictions.
    assert crossval.main(argv) == 0
    assert "$ python" not in capsys.readouterr().out

    final = tmp_path / "final"
    assert (
        train.main(
            [
                "--data",
                str(sources_dataset),
                "--out",
                str(final),
                "--operating-point",
                str(out / "operating_point.json"),
                *TINY,
            ]
        )
        == 0
    )
    card = json.loads((final / "model_card.json").read_text())
    assert card["threshold"]["value"] == point["threshold"]
    assert card["threshold"]["indeterminate_below"] == point["indeterminate_below"]
    assert card["calibration"]["temperature"] == point["temperature"]
    assert card["ood"]["indeterminate_above_score"] == point["unusual_score"]
    assert card["crossval"]["estimate"]["all"]["n"] == len(held_out)
    assert card["training"]["git"]["commit"] and isinstance(card["training"]["git"]["dirty"], bool)
    assert card["training"]["command"].startswith("python -m training.train --data ")


def test_an_out_directory_holds_one_recipe(tmp_path, capsys):
    out = tmp_path / "cv"
    crossval.record_recipe(out, ["--epochs", "12"])
    crossval.record_recipe(out, ["--epochs", "12"])  # the same recipe continues
    assert crossval.recorded_recipe(out) == ["--epochs", "12"]
    argv = [
        "--data",
        "manifest.csv",
        "--out",
        str(out),
        "--folds",
        "a",
        "--",
        "--epochs",
        "12",
        "--augment",
        "acquisition",
    ]
    assert crossval.main(argv) == 2  # refused before any training
    assert "holds the predictions of the recipe --epochs 12" in capsys.readouterr().err
    assert crossval.recorded_recipe(out) == ["--epochs", "12"]


def recipe_results(directory: Path, train_args: list[str], specificity: dict[str, float]) -> None:
    def figures(value: float) -> dict:
        keys = ("sensitivity", "specificity", "normal_called_normal", "indeterminate_normals", "roc_auc", "ece")
        return {"all": {k: value for k in keys} | {"interval": {k: [value - 0.1, value + 0.1] for k in keys}}}

    directory.mkdir(parents=True)
    rows = {name: figures(value) for name, value in specificity.items()}
    (directory / "results.json").write_text(json.dumps({"train_args": train_args, "recipes_cross_fitted": rows}))


def test_the_recipe_table_compares_each_seed_with_the_baselines_same_seed(tmp_path):
    recipe_results(tmp_path / "base", ["--epochs", "12"], {"seed 7": 0.5, "seed 42": 0.6, MEAN_OF_SEEDS: 0.55})
    recipe_results(tmp_path / "new", ["--augment", "x"], {"seed 7": 0.7, "seed 42": 0.5, MEAN_OF_SEEDS: 0.65})
    written = tmp_path / "README.md"
    argv = [f"baseline={tmp_path / 'base'}", f"candidate={tmp_path / 'new'}", "--write", str(written)]
    assert recipe_table.main(argv) == 0
    lines = written.read_text().splitlines()
    rows = [line for line in lines if line.startswith("| baseline") or line.startswith("| candidate")]
    assert len(rows) == 6
    assert rows[0].startswith("| baseline | `--epochs 12` | seed 7 | 0.500 (0.40–0.60) |") and rows[0].endswith("|  |")
    assert rows[3].startswith("| candidate | `--augment x` | seed 7 | 0.700 (0.60–0.80) |")
    assert rows[3].endswith("| +0.200 / +0.200 / +0.200 |")
    assert rows[4].endswith("| -0.100 / -0.100 / -0.100 |")  # seed 42 against seed 42
    with pytest.raises(SystemExit) as refused:
        recipe_table.main(["baseline=" + str(tmp_path / "missing")])
    assert refused.value.code == 2

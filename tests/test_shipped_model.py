"""The shipped models/ folder: the card matches the artifacts it describes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxr.bundle import CARD_FILE, HASHED_FILES, ModelBundle, artifact_version
from cxr.preprocess import PARAMETERS

MODELS = Path(__file__).resolve().parent.parent / "models"


@pytest.fixture(scope="module")
def card() -> dict:
    return json.loads((MODELS / CARD_FILE).read_text())


def test_card_matches_artifacts(card):
    assert card["version"] == artifact_version(MODELS)
    assert card["classes"] == ["covid", "normal"]
    assert card["preprocessing"] == PARAMETERS
    bundle = ModelBundle(MODELS)
    assert tuple(bundle.cnn.inputs[0].shape[1:]) == (card["input_size"], card["input_size"], 1)
    assert bundle.cnn.outputs[0].shape[-1] == len(card["classes"])
    assert bundle.cnn.get_layer(card["feature_layer"]).output.shape[-1] == 64
    assert len(bundle.ensemble.classes_) == len(card["classes"])
    assert bundle.ood.mean.shape == (64,)


def test_card_reports_every_classifier_per_split_and_source(card):
    for split in ("val", "test"):
        metrics = card["metrics"][split]
        for name in ("cnn", "decision_tree", "svm", "random_forest", "adaboost", "ensemble"):
            for key in ("accuracy", "roc_auc", "brier", "ece", "per_class", "confusion_matrix"):
                assert key in metrics[name], f"{split}/{name} lacks {key}"
        assert metrics["ensemble_per_source"], "per-source metrics are missing"
        assert card["data"][split]["per_source"]
    assert 0.0 < card["threshold"]["value"] < 1.0 and card["threshold"]["rule"]
    assert card["limitations"] and card["libraries"]["tensorflow"]


def test_models_folder_stays_small():
    total = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file())
    assert total < 30 * 1024 * 1024, f"models/ is {total / 2**20:.1f} MiB"
    assert all((MODELS / name).is_file() for name in HASHED_FILES)

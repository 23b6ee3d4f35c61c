"""The shipped models/ folder: the card matches the artifacts it describes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cxr.bundle import CARD_FILE, HASHED_FILES, ModelBundle, artifact_version
from cxr.preprocess import PARAMETERS
from tests.helpers import missing
from training.precision import native_bfloat16

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


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


def test_shipped_model_carries_its_gate_limits_and_a_numeric_svm_gamma(card):
    bundle = ModelBundle(MODELS)
    assert bundle.gate.films == card["gate"]["films"] == card["data"]["train"]["total"]
    svm = bundle.ensemble[-1].named_estimators_["svm"].calibrated_classifiers_[0].estimator
    assert isinstance(svm.gamma, float) and svm.gamma > 0  # serving reads it (cxr/fast_ensemble.py)


def test_models_folder_stays_small():
    total = sum(p.stat().st_size for p in MODELS.rglob("*") if p.is_file())
    assert total < 30 * 1024 * 1024, f"models/ is {total / 2**20:.1f} MiB"
    assert all((MODELS / name).is_file() for name in HASHED_FILES)


def test_shipped_cnn_serves_in_float32():
    bundle = ModelBundle(MODELS)
    assert {layer.dtype_policy.name for layer in bundle.cnn.layers} == {"float32"}


@pytest.mark.slow
@pytest.mark.skipif(
    not native_bfloat16(),
    reason="this CPU has no native bfloat16 (AVX512_BF16 or AMX): it "
    "would be emulated, slower than float32, so serving stays float32 (bench/README.md)",
)
def test_serving_takes_bfloat16_only_where_it_keeps_the_test_decisions(card):
    """The condition for serving in bfloat16 on CPUs that compute it natively."""
    import keras

    from cxr.bundle import embed
    from training.cnn import build_cnn
    from training.data import SPLIT_FILE, load_dataset, read_split
    from training.images import load_inputs

    manifest = ROOT / card["training"]["data"]
    if not manifest.is_file():
        missing(f"the training data {manifest} is not here")
    in_test = {file for file, split in read_split(MODELS / SPLIT_FILE).items() if split == "test"}
    samples, _ = load_dataset(manifest, card["classes"] + card["data"]["trained_as_normal"])
    images, _ = load_inputs([s for s in samples if s.file in in_test], card["input_size"], None, cache_dir=None)
    bundle = ModelBundle(MODELS)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        reduced = build_cnn(
            card["input_size"],
            len(card["classes"]),
            card["architecture"]["base_filters"],
            card["architecture"]["blocks"],
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    reduced.set_weights(bundle.cnn.get_weights())
    decisions = []
    for features, _ in (bundle.embed(images), embed(reduced, card["feature_layer"], images)):
        distance = bundle.ood.distance(features) / bundle.ood.threshold
        decisions.append(np.asarray(bundle.rule.outcomes(bundle.ensemble_probabilities(features), distance)))
    assert len(decisions[0]) == len(in_test)
    changed = float(np.mean(decisions[0] != decisions[1]))
    # Serving may compute in bfloat16 only where that keeps 99 % of the test decisions; else it stays float32
    # (the model shipped with the cross-validation operating point changes about 3 %: its threshold sits where
    # many test films are).
    served = {layer.dtype_policy.name for layer in bundle.cnn.layers}
    assert changed <= 0.01 or served == {"float32"}, f"bfloat16 changes {changed:.1%} of the test decisions"


def test_readme_describes_the_shipped_model_as_its_card_does(card):
    from training import model_table

    block = model_table.current_block((ROOT / "README.md").read_text())
    assert block is not None, "README.md lacks the generated model block"
    assert block == model_table.render(card), "run `python -m training.model_table --write` after retraining"

"""The compiled ensemble gives scikit-learn's probabilities, and steps aside for anything it does not know."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import AdaBoostClassifier, RandomForestClassifier, VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from cxr.fast_ensemble import TreeBank, compile_ensemble, probe_features
from training.ensemble import record_svm_gamma


def training_data(n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, 300)
    features = np.maximum(rng.normal(size=(300, 16)) + labels[:, np.newaxis] * 0.6, 0).astype(np.float32)
    return features, labels


def pipeline(n_classes: int = 2, voting: str = "soft", weights=None) -> Pipeline:
    members = [
        ("decision_tree", DecisionTreeClassifier(max_depth=6, random_state=0)),
        ("svm", CalibratedClassifierCV(SVC(random_state=0), method="sigmoid", ensemble=False)),
        ("random_forest", RandomForestClassifier(n_estimators=30, min_samples_leaf=2, random_state=0, n_jobs=-1)),
        ("adaboost", AdaBoostClassifier(n_estimators=25, learning_rate=0.5, random_state=0)),
    ]
    model = Pipeline([("scale", StandardScaler()), ("vote", VotingClassifier(members, voting=voting, weights=weights))])
    features, labels = training_data(n_classes)
    return record_svm_gamma(model.fit(features, labels), features)


def svm_of(model: Pipeline) -> SVC:
    return model[-1].named_estimators_["svm"].calibrated_classifiers_[0].estimator


@pytest.mark.parametrize(("n_classes", "weights"), [(2, None), (3, None), (2, [1, 2, 1, 3])])
def test_same_probabilities_as_scikit_learn(n_classes, weights):
    model = pipeline(n_classes, weights=weights)
    features, _ = training_data(n_classes, seed=1)
    fast = compile_ensemble(model, features[:50])
    assert fast is not None
    unseen = np.vstack([features, np.zeros((1, 16), np.float32), features * 3])
    np.testing.assert_allclose(fast(unseen), model.predict_proba(unseen), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast(unseen[7]), model.predict_proba(unseen[7:8]), rtol=0, atol=1e-12)


def test_the_svms_gamma_is_the_number_scale_stood_for_and_changes_nothing():
    features, labels = training_data(2)
    members = [("svm", CalibratedClassifierCV(SVC(random_state=0), method="sigmoid", ensemble=False))]
    model = Pipeline([("scale", StandardScaler()), ("vote", VotingClassifier(members, voting="soft"))])
    before = model.fit(features, labels).predict_proba(features)
    gamma = svm_of(record_svm_gamma(model, features)).gamma
    scaled = StandardScaler().fit_transform(features).astype(np.float64)
    assert gamma == pytest.approx(1 / (16 * scaled.var()), rel=1e-12)
    np.testing.assert_array_equal(model.predict_proba(features), before)
    refit = Pipeline([("scale", StandardScaler()), ("vote", VotingClassifier(members, voting="soft"))])
    refit.set_params(vote__svm__estimator__gamma=gamma).fit(features, labels)
    np.testing.assert_allclose(svm_of(refit).decision_function(scaled), svm_of(model).decision_function(scaled))


def test_an_svm_with_gamma_scale_is_left_to_scikit_learn(monkeypatch):
    model = pipeline(2)
    svm_of(model).set_params(gamma="scale")
    features, _ = training_data(2, seed=2)
    fast = compile_ensemble(model, features[:50])
    expected = model.predict_proba(features)
    calls = []
    real = CalibratedClassifierCV.predict_proba
    monkeypatch.setattr(CalibratedClassifierCV, "predict_proba", lambda self, X: calls.append(1) or real(self, X))
    np.testing.assert_allclose(fast(features), expected, rtol=0, atol=1e-12)
    assert calls, "the SVM went through scikit-learn"


def test_tree_bank_finds_scikit_learns_leaves():
    features, labels = training_data(2)
    forest = RandomForestClassifier(n_estimators=10, random_state=0).fit(features, labels)
    bank = TreeBank([t.tree_ for t in forest.estimators_], 2)
    leaves = bank.leaves(features) - bank.roots
    assert (leaves == forest.apply(features)).all()


def test_other_ensembles_are_left_to_scikit_learn():
    features, _ = training_data(2)
    assert compile_ensemble(pipeline(voting="hard"), features[:5]) is None
    plain = LogisticRegression().fit(*training_data(2))
    assert compile_ensemble(plain, features[:5]) is None


def test_unknown_members_are_called_as_they_are():
    features, labels = training_data(2)
    model = Pipeline(
        [
            (
                "vote",
                VotingClassifier(
                    [("lr", LogisticRegression()), ("dt", DecisionTreeClassifier(random_state=0))], voting="soft"
                ),
            )
        ]
    )
    model.fit(features, labels)
    fast = compile_ensemble(model, features[:20])
    np.testing.assert_allclose(fast(features), model.predict_proba(features), rtol=0, atol=1e-12)


def test_a_disagreement_falls_back(monkeypatch):
    model = pipeline()
    features, _ = training_data(2)
    monkeypatch.setattr(TreeBank, "leaves", lambda self, X: np.broadcast_to(self.roots, (len(X), self.roots.size)))
    assert compile_ensemble(model, features[:20]) is None


def test_the_shipped_bundle_serves_the_compiled_ensemble(bundle):
    probes = probe_features(bundle.ood.mean, bundle.ood.precision, count=500, seed=7)
    assert getattr(bundle._ensemble_proba, "__self__", None) is not bundle.ensemble  # not the fallback
    np.testing.assert_allclose(
        bundle._ensemble_proba(probes), bundle.ensemble.predict_proba(probes), rtol=0, atol=1e-12
    )


def test_binary_svm_and_scaler_are_computed_without_scikit_learn(monkeypatch):
    model = pipeline(2)
    features, _ = training_data(2, seed=2)
    fast = compile_ensemble(model, features[:50])
    expected = model.predict_proba(features)

    def refuse(*args, **kwargs):
        raise AssertionError("called scikit-learn")

    monkeypatch.setattr(CalibratedClassifierCV, "predict_proba", refuse)
    monkeypatch.setattr(StandardScaler, "transform", refuse)
    np.testing.assert_allclose(fast(features), expected, rtol=0, atol=1e-12)


def test_other_transformers_go_through_scikit_learn():
    from sklearn.preprocessing import MinMaxScaler

    features, labels = training_data(2)
    members = [
        ("dt", DecisionTreeClassifier(random_state=0)),
        ("rf", RandomForestClassifier(n_estimators=5, random_state=0)),
    ]
    model = Pipeline([("scale", MinMaxScaler()), ("vote", VotingClassifier(members, voting="soft"))])
    model.fit(features, labels)
    fast = compile_ensemble(model, features[:20])
    np.testing.assert_allclose(fast(features * 1.5), model.predict_proba(features * 1.5), rtol=0, atol=1e-12)


def test_probes_follow_a_singular_covariance_of_units_that_never_fired():
    # A trained CNN can have ReLU units that are 0 on every training film: their covariance is singular and
    # so is the OOD precision (a pseudo-inverse). The bundle's self-check must still draw its probes.
    rng = np.random.default_rng(3)
    features = np.clip(rng.normal(1.0, 0.5, size=(400, 8)), 0.0, None)
    features[:, [1, 5]] = 0.0  # dead units
    features[:, 2] = features[:, 3]  # and two units that always agree
    precision = np.linalg.pinv(np.cov(features, rowvar=False), hermitian=True)
    assert np.linalg.matrix_rank(precision) == 5
    probes = probe_features(features.mean(axis=0), precision, count=400, seed=1)
    assert probes.shape == (1 + 400 + 100, 8) and np.isfinite(probes).all()
    assert np.abs(probes[:, [1, 5]]).max() < 1e-9  # no spread where the training features had none
    assert np.corrcoef(probes[1:401, 2], probes[1:401, 3])[0, 1] > 0.99

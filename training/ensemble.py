"""The soft-voting ensemble fitted on the CNN's 64-d features."""

from __future__ import annotations

import numpy as np


def fit_ensemble(features: np.ndarray, labels: np.ndarray, seed: int):
    """StandardScaler, then soft voting of a decision tree, an SVM (Platt-scaled), a random forest and AdaBoost."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.ensemble import AdaBoostClassifier, RandomForestClassifier, VotingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    from sklearn.tree import DecisionTreeClassifier

    members = [
        ("decision_tree", DecisionTreeClassifier(max_depth=8, min_samples_leaf=5, random_state=seed)),
        # Platt-scaled probabilities, as SVC(probability=True) gave (that flag is deprecated in scikit-learn 1.9).
        ("svm", CalibratedClassifierCV(SVC(kernel="rbf", C=1.0, random_state=seed), method="sigmoid", ensemble=False)),
        ("random_forest", RandomForestClassifier(n_estimators=200, min_samples_leaf=2, random_state=seed, n_jobs=-1)),
        ("adaboost", AdaBoostClassifier(n_estimators=100, learning_rate=0.5, random_state=seed)),
    ]
    pipeline = Pipeline([("scale", StandardScaler()), ("vote", VotingClassifier(members, voting="soft"))])
    return record_svm_gamma(pipeline.fit(features, labels), features)


def record_svm_gamma(pipeline, features: np.ndarray):
    """Write the number the SVM's gamma="scale" stood for into its public `gamma`, so that serving
    (`cxr.fast_ensemble`) reads the kernel width without scikit-learn's private `_gamma`.

    "scale" is 1 / (n_features · variance) of what the SVM was fitted on: the scaled training features
    (as float64, as `SVC.fit` takes them), on which the final SVM of CalibratedClassifierCV(ensemble=False)
    is fitted. Setting it after the fit keeps the computation as it was: the cross-validation models
    that fitted Platt's sigmoid used "scale" of their own folds. Pipelines without that SVM are returned as given.
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    svm = pipeline[-1].named_estimators_.get("svm")
    if not isinstance(svm, CalibratedClassifierCV) or len(svm.calibrated_classifiers_) != 1:
        return pipeline
    final = svm.calibrated_classifiers_[0].estimator
    if type(final) is not SVC or final.gamma != "scale":
        return pipeline
    scaled = np.asarray(pipeline[:-1].transform(features), dtype=np.float64)
    variance = scaled.var()
    final.set_params(gamma=1.0 / (scaled.shape[1] * variance) if variance != 0 else 1.0)
    return pipeline

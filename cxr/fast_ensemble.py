"""The serving ensemble's probabilities for a few images at a time, without scikit-learn's per-tree overhead.

The soft-voting ensemble holds ~300 decision trees (a random forest of 200, AdaBoost's 100 stumps and a
single tree). scikit-learn predicts one image by calling each tree in turn, each call validating its
input: a few milliseconds per image, more than the CNN's forward pass. Here every tree is flattened
into one node table and all trees are walked at once with numpy, which gives the same leaves and so the
same probabilities (to the last bits of floating-point summation order) in a fraction of the time.
The standard scaler and the Platt-scaled RBF SVM are written out in numpy too: their scikit-learn
calls spend most of their time per image on input validation.

`compile_ensemble` accepts exactly what training exports (a Pipeline of transformers ending in a
soft VotingClassifier whose members are trees, forests of trees, SAMME AdaBoost over trees, a binary
sigmoid-calibrated RBF SVC, or anything else with `predict_proba`, which is then called as is). It
checks itself against scikit-learn on probe inputs and returns None when anything differs or is not
understood; callers then use scikit-learn.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

log = logging.getLogger(__name__)
TOLERANCE = 1e-9  # on probabilities; tree decisions are exact, only summation order may differ


class TreeBank:
    """Fitted scikit-learn trees flattened into one node table; `leaves` walks every tree at once."""

    def __init__(self, trees: list, n_classes: int) -> None:
        features, thresholds, lefts, rights, values, roots = [], [], [], [], [], []
        offset = 0
        for tree in trees:
            n = tree.node_count
            index = np.arange(n) + offset
            leaf = tree.children_left == -1
            features.append(np.where(leaf, 0, tree.feature).astype(np.intp))
            thresholds.append(np.where(leaf, np.inf, tree.threshold).astype(np.float64))
            lefts.append(np.where(leaf, index, tree.children_left + offset).astype(np.intp))
            rights.append(np.where(leaf, index, tree.children_right + offset).astype(np.intp))
            values.append(np.asarray(tree.value[:, 0, :n_classes], dtype=np.float64))
            roots.append(offset)
            offset += n
        self.feature = np.concatenate(features)
        self.threshold = np.concatenate(thresholds)
        self.left = np.concatenate(lefts)
        self.right = np.concatenate(rights)
        self.value = np.concatenate(values)
        self.roots = np.asarray(roots, dtype=np.intp)
        self.depth = max(int(tree.max_depth) for tree in trees)

    def leaves(self, X: np.ndarray) -> np.ndarray:
        """(n samples × n trees) leaf node indices; X as scikit-learn's trees see it (float32)."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        rows = np.arange(X.shape[0])[:, np.newaxis]
        node = np.broadcast_to(self.roots, (X.shape[0], self.roots.size)).copy()
        for _ in range(self.depth):  # a leaf points at itself, so extra steps are harmless
            go_left = X[rows, self.feature[node]] <= self.threshold[node]
            node = np.where(go_left, self.left[node], self.right[node])
        return node


def _is_tree(estimator) -> bool:
    from sklearn.tree import DecisionTreeClassifier

    return isinstance(estimator, DecisionTreeClassifier) and getattr(estimator, "n_outputs_", 1) == 1


def compile_ensemble(pipeline, probes: np.ndarray) -> Callable[[np.ndarray], np.ndarray] | None:
    """A function features → probabilities equal to `pipeline.predict_proba`, or None if it cannot be made."""
    try:
        function = _compile(pipeline)
    except Exception:
        log.warning(
            "The ensemble is served through scikit-learn (its structure is not one this module knows)", exc_info=True
        )
        return None
    if function is None:
        return None
    expected = pipeline.predict_proba(probes)
    for rows in (probes, probes[:1]):
        got = function(rows)
        if got.shape != expected[: len(rows)].shape or not np.allclose(
            got, expected[: len(rows)], rtol=0, atol=TOLERANCE
        ):
            log.warning("The fast ensemble disagrees with scikit-learn on probe inputs; serving through scikit-learn")
            return None
    return function


def _compile(pipeline) -> Callable[[np.ndarray], np.ndarray] | None:
    from sklearn.ensemble import AdaBoostClassifier, RandomForestClassifier, VotingClassifier
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline) or not isinstance(pipeline[-1], VotingClassifier):
        return None
    voting = pipeline[-1]
    if voting.voting != "soft":
        return None
    transform = _transform(pipeline[:-1])
    n_classes = len(voting.classes_)
    trees: list = []
    members: list[tuple[str, object, slice]] = []  # (kind, estimator, its trees in the bank)
    for member in voting.estimators_:
        start = len(trees)
        if _is_tree(member) and member.n_classes_ == n_classes:
            trees.append(member.tree_)
            members.append(("tree", member, slice(start, start + 1)))
        elif (
            isinstance(member, RandomForestClassifier)
            and all(_is_tree(t) for t in member.estimators_)
            and member.n_outputs_ == 1
            and member.n_classes_ == n_classes
        ):
            trees += [t.tree_ for t in member.estimators_]
            members.append(("forest", member, slice(start, len(trees))))
        elif (
            isinstance(member, AdaBoostClassifier)
            and all(_is_tree(t) for t in member.estimators_)
            and getattr(member, "algorithm", "SAMME") in ("SAMME", "deprecated")
            and member.n_classes_ > 1
            and all(np.array_equal(t.classes_, member.classes_) for t in member.estimators_)
        ):
            trees += [t.tree_ for t in member.estimators_]
            members.append(("adaboost", member, slice(start, len(trees))))
        elif (svm := _sigmoid_svm(member)) is not None:
            members.append(("function", svm, slice(0, 0)))
        else:
            members.append(("sklearn", member, slice(0, 0)))
    bank = TreeBank(trees, n_classes) if trees else None
    # VotingClassifier's weights of the fitted members: estimators set to "drop" are not among them.
    vote_weights = (
        None
        if voting.weights is None
        else [w for w, (_, estimator) in zip(voting.weights, voting.estimators, strict=True) if estimator != "drop"]
    )

    def predict_proba(features: np.ndarray) -> np.ndarray:
        X = transform(np.atleast_2d(features))
        leaf_values = bank.value[bank.leaves(X)] if bank is not None else None  # n × trees × classes
        probas = []
        for kind, member, span in members:
            if kind == "sklearn":
                probas.append(member.predict_proba(X))
            elif kind == "function":
                probas.append(member(X))
            elif kind == "tree":
                probas.append(leaf_values[:, span.start, :])
            elif kind == "forest":
                probas.append(leaf_values[:, span, :].sum(axis=1) / (span.stop - span.start))
            else:  # SAMME AdaBoost, as AdaBoostClassifier.decision_function and predict_proba compute it
                k = member.n_classes_
                votes = leaf_values[:, span, :].argmax(axis=2)  # each stump's class index, n × stumps
                weights = member.estimator_weights_[: span.stop - span.start]
                one_hot = votes[:, :, np.newaxis] == np.arange(k)
                pred = np.where(one_hot, weights[:, np.newaxis], -1 / (k - 1) * weights[:, np.newaxis]).sum(axis=1)
                pred /= member.estimator_weights_.sum()
                if k == 2:
                    pred[:, 0] *= -1
                    pred = pred.sum(axis=1)
                probas.append(_samme_proba(pred, k))
        return np.average(np.asarray(probas), axis=0, weights=vote_weights)

    return predict_proba


def _samme_proba(decision: np.ndarray, n_classes: int) -> np.ndarray:
    """SAMME's class probabilities from its decision function: softmax(f / (K - 1)) (Zhu et al. 2009,
    eq. 15), which AdaBoostClassifier.predict_proba computes."""
    from scipy.special import softmax

    decision = np.vstack([-decision, decision]).T / 2 if n_classes == 2 else decision / (n_classes - 1)
    return softmax(decision, axis=1)


def _transform(steps) -> Callable[[np.ndarray], np.ndarray]:
    """The pipeline's transformers: a StandardScaler as scikit-learn computes it (float32 stays float32, its
    statistics cast to the input's type), anything else through its own `transform`."""
    from sklearn.preprocessing import StandardScaler

    if len(steps) == 0:
        return lambda X: X
    if len(steps) > 1 or type(steps[0]) is not StandardScaler:
        return steps.transform
    scaler = steps[0]

    def standardize(X: np.ndarray) -> np.ndarray:
        if X.dtype not in (np.float32, np.float64):
            return scaler.transform(X)
        out = np.array(X)
        if scaler.with_mean:
            out -= scaler.mean_.astype(out.dtype)
        if scaler.with_std:
            out /= scaler.scale_.astype(out.dtype)
        return out

    return standardize


def _sigmoid_svm(member) -> Callable[[np.ndarray], np.ndarray] | None:
    """`predict_proba` of CalibratedClassifierCV(SVC(kernel="rbf"), method="sigmoid", ensemble=False) on two
    classes: the SVC's decision function, then Platt's sigmoid. None for anything else."""
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.svm import SVC

    if (
        not isinstance(member, CalibratedClassifierCV)
        or member.method != "sigmoid"
        or len(member.classes_) != 2
        or len(member.calibrated_classifiers_) != 1
    ):
        return None
    calibrated = member.calibrated_classifiers_[0]
    svc = calibrated.estimator
    # The kernel width must be a number: training writes the one gamma="scale" stood for into the public
    # `gamma` (`training.ensemble.record_svm_gamma`). A model without it is left to scikit-learn.
    if type(svc) is not SVC or svc.kernel != "rbf" or len(calibrated.calibrators) != 1 or isinstance(svc.gamma, str):
        return None
    vectors = np.asarray(svc.support_vectors_, dtype=np.float64)
    squares, coef = (vectors**2).sum(axis=1), svc.dual_coef_[0]
    gamma, intercept = float(svc.gamma), float(svc.intercept_[0])
    a, b = float(calibrated.calibrators[0].a_), float(calibrated.calibrators[0].b_)

    def predict_proba(X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        distances = (X**2).sum(axis=1)[:, np.newaxis] + squares - 2.0 * (X @ vectors.T)
        decision = np.exp(-gamma * np.maximum(distances, 0.0)) @ coef + intercept
        positive = 1.0 / (1.0 + np.exp(a * decision + b))  # _SigmoidCalibration: expit(-(a·d + b))
        return np.column_stack([1.0 - positive, positive])

    return predict_proba


def probe_features(mean: np.ndarray, precision: np.ndarray, count: int = 256, seed: int = 0) -> np.ndarray:
    """Feature vectors spread like the training features (from the OOD statistics), for the self-check."""
    rng = np.random.default_rng(seed)
    # The precision is a pseudo-inverse (scikit-learn's `pinvh`): where CNN units never fired on the training
    # films (ReLU outputs always 0), the covariance is singular and so is the precision. `pinvh` gives the
    # covariance back on the directions the features vary in, and its eigen-decomposition a square root
    # that needs no positive definiteness (a Cholesky factor does).
    eigenvalues, eigenvectors = np.linalg.eigh(np.linalg.pinv(precision, hermitian=True))
    scale = eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))
    spread = np.concatenate([rng.normal(size=(count, len(mean))), 3 * rng.normal(size=(count // 4, len(mean)))])
    probes = mean + spread @ scale.T
    return np.clip(np.vstack([mean[np.newaxis], probes]), 0.0, None).astype(np.float32)  # features are ReLU outputs

"""What keeps the model from winning by recognising the collection: held-out sources, balanced
sampling, acquisition augmentation, amplitude mixing across sources, the per-source report and the lung
crop's geometry."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cxr.lungs import MIN_FRACTION, lung_box, normalise_fractions
from cxr.preprocess import equalise
from training.data import UNSEEN, Sample, patient_split
from training.sampling import balanced_weights, epoch_order
from training.unseen import outcome_metrics, per_source


def sample(i: int, label: str, source: str) -> Sample:
    return Sample(Path(f"{source}_{i}.png"), f"{source}_{i}.png", label, f"{source}:{i}", source, f"row {i}")


def test_held_out_sources_are_in_no_other_split():
    samples = [
        sample(i, label, source)
        for i, (label, source) in enumerate([("covid", "a"), ("normal", "a"), ("covid", "b"), ("normal", "c")] * 20)
    ]
    split = patient_split(samples, (0.7, 0.2, 0.1), seed=3, holdout_sources=["c"])
    assert {samples[i].source for i in split[UNSEEN]} == {"c"} and len(split[UNSEEN]) == 20
    for name in ("train", "val", "test"):
        assert "c" not in {samples[i].source for i in split[name]}
    assert sorted(i for indices in split.values() for i in indices) == list(range(len(samples)))
    assert UNSEEN not in patient_split(samples, (0.7, 0.2, 0.1), seed=3)


def test_balanced_sampling_gives_each_class_half_and_small_sources_more_than_their_size():
    targets = [0] * 900 + [0] * 100 + [1] * 400
    groups = ["big|covid"] * 900 + ["small|covid"] * 100 + ["x|normal"] * 400
    weights = balanced_weights(targets, groups)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[:1000].sum() == pytest.approx(0.5) and weights[1000:].sum() == pytest.approx(0.5)
    # sqrt(900) : sqrt(100) = 3 : 1 within covid, against 9 : 1 by size
    assert weights[900:1000].sum() / weights[:1000].sum() == pytest.approx(0.25)
    order = epoch_order(weights, epochs=2, per_epoch=20000, seed=1)
    assert order.shape == (2, 20000)
    assert np.array_equal(order, epoch_order(weights, 2, 20000, seed=1)), "a resumed run must see the same epochs"
    share = Counter(np.asarray(groups)[order[0]])
    assert share["small|covid"] / 20000 == pytest.approx(0.125, abs=0.01)


def test_tensorflow_equalisation_is_the_preprocessing_one():
    tf = pytest.importorskip("tensorflow")
    from training.augment import equalise as tf_equalise

    rng = np.random.default_rng(0)
    images = [rng.random((32, 32)), rng.random((32, 32)) ** 3, np.full((32, 32), 0.4), np.eye(32)]
    expected = np.stack([equalise(image.astype(np.float32)) for image in images])
    got = tf_equalise(tf.constant(np.stack(images)[..., None], tf.float32)).numpy()[..., 0]
    np.testing.assert_allclose(got, expected, atol=2e-5)


def test_augmentation_keeps_shape_and_range():
    tf = pytest.importorskip("tensorflow")
    from training.augment import augmenter

    images = tf.constant(np.random.default_rng(1).random((8, 32, 32, 1)), tf.float32)
    out, labels = augmenter()(images, tf.zeros(8, tf.int32), tf.constant([0, 1]))
    again, _ = augmenter()(images, tf.zeros(8, tf.int32), tf.constant([0, 1]))
    np.testing.assert_array_equal(out.numpy(), again.numpy())  # the seed alone fixes the changes
    assert out.shape == (8, 32, 32, 1) and labels.shape == (8,)
    assert float(tf.reduce_min(out)) >= 0.0 and float(tf.reduce_max(out)) <= 1.0 + 1e-6
    assert not np.allclose(out.numpy(), images.numpy())


def test_source_partners_are_of_the_same_class_and_another_source():
    from training.mixing import source_partners

    classes = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    sources = np.array(["a", "a", "b", "a", "b", "c", "a", "a"])  # class 2 has one source only
    order = np.random.default_rng(0).integers(0, 8, (3, 40))
    partners = source_partners(classes, sources, order, (7, 1))
    assert partners.shape == order.shape
    np.testing.assert_array_equal(partners, source_partners(classes, sources, order, (7, 1)))  # the seed fixes them
    lonely = classes[order] == 2
    np.testing.assert_array_equal(partners[lonely], order[lonely])  # no other source: the film itself
    assert (classes[partners] == classes[order]).all()
    assert (sources[partners] != sources[order])[~lonely].all()


def test_amplitude_mixing_keeps_a_film_with_its_own_spectrum_and_changes_it_with_another():
    tf = pytest.importorskip("tensorflow")
    from training.augment import equalise as tf_equalise
    from training.mixing import mix_amplitudes

    rng = np.random.default_rng(2)
    films = tf_equalise(tf.constant(rng.random((16, 32, 32, 1)) ** 2, tf.float32))
    others = tf_equalise(tf.constant(rng.random((16, 32, 32, 1)), tf.float32))
    # Mixed with its own amplitude, a film comes back as it was (its phase is kept; up to re-equalisation).
    np.testing.assert_allclose(mix_amplitudes(films, films, tf.constant([0, 1])).numpy(), films.numpy(), atol=0.02)
    mixed = mix_amplitudes(films, others, tf.constant([0, 1])).numpy()
    changed = np.abs(mixed - films.numpy()).reshape(16, -1).max(axis=1) > 0.05
    assert 0 < changed.sum() < 16  # about half of the films are mixed, the rest left alone
    np.testing.assert_array_equal(mixed[~changed], films.numpy()[~changed])
    assert mixed.min() >= 0.0 and mixed.max() <= 1.0 + 1e-6


def test_per_source_figures_count_indeterminate_as_no_covid_call():
    labels = ["covid", "covid", "normal", "normal", "other", "normal"]
    p_covid = np.array([0.9, 0.3, 0.35, 0.1, 0.8, 0.05])
    outcomes = ["covid", "indeterminate", "indeterminate", "normal", "covid", "normal"]
    m = outcome_metrics(labels, p_covid, outcomes)
    assert m["sensitivity"] == 0.5 and m["specificity"] == 1.0
    assert m["normal_called_normal"] == pytest.approx(2 / 3) and m["indeterminate_normals"] == pytest.approx(1 / 3)
    assert m["other_findings_not_called_covid"] == 0.0 and m["indeterminate_rate"] == pytest.approx(2 / 6)
    assert m["roc_auc"] == pytest.approx(roc_auc_reference(labels, p_covid))
    by_source = per_source(labels, p_covid, outcomes, ["a", "a", "b", "b", "b", "b"])
    assert set(by_source) == {"a", "b", "all"} and by_source["b"]["roc_auc"] is None
    assert by_source["b"]["n_normal"] == 3 and by_source["a"]["specificity"] is None


def roc_auc_reference(labels, scores) -> float:
    positive = [s for lab, s in zip(labels, scores) if lab == "covid"]
    negative = [s for lab, s in zip(labels, scores) if lab != "covid"]
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in positive for n in negative]))


def test_lung_fractions_are_ordered_widened_and_inside_the_frame():
    raw = np.array([[0.1, 0.9, 0.05, 0.95], [0.52, 0.5, 0.9, 0.2], [0.95, 1.0, 0.0, 0.02], [-1, 2, 0.4, 0.6]])
    out = normalise_fractions(raw)
    assert ((out >= 0) & (out <= 1)).all()
    assert (out[:, 1] > out[:, 0]).all() and (out[:, 3] > out[:, 2]).all()
    assert ((out[:, 1] - out[:, 0]) >= MIN_FRACTION - 1e-9).all() and (
        (out[:, 3] - out[:, 2]) >= MIN_FRACTION - 1e-9
    ).all()
    assert out[0, 0] < 0.1 and out[0, 1] > 0.9  # widened around the lungs
    top, bottom, left, right = lung_box((10, 110, 20, 220), np.array([0.0, 1.0, 0.25, 0.75]))
    assert (top, bottom, left, right) == (10, 110, 70, 170)
